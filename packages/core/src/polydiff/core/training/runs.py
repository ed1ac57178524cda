"""How every training verb starts, resumes or restarts a run folder (one rule for all apps).

:func:`start_run` is the first thing a ``train`` verb does with its output folder::

    with start_run(out, resume=args.resume, overwrite=args.overwrite,
                   settings_name="train.toml", outputs=("model", "train.toml")) as run:
        settings = load_config(Settings, args.config or run.saved_settings, overrides)
        ...                                   # build the model, train into ``out``

* the folder is locked for the whole block (:class:`~polydiff.core.training.lock.RunLock`):
  a second training into it fails at once with one line;
* a folder that holds anything is refused unless ``resume`` (continue from its newest intact
  checkpoint, with the settings saved in it as the base: :attr:`RunStart.saved_settings`) or
  ``overwrite`` (delete the run's own files, the engine's and the app's ``outputs``, then
  start over; other files in the folder are left alone);
* with ``resume`` a folder without a checkpoint starts from step 0 (a run killed before its
  first checkpoint resumes to the same result);
* a folder the block created and left empty (bad input found later) is removed again.

Errors are ``ValueError`` lines (apps print them and exit with code 2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from polydiff.core.training.lock import LOCK_NAME, RunLock

__all__ = ["ENGINE_FILES", "RunStart", "start_run"]

#: What the engine writes into a run folder (:class:`~polydiff.core.training.rundir.RunDir`
#: and the checkpoints).
ENGINE_FILES: tuple[str, ...] = ("checkpoints", "config.json", "stats.jsonl", "log.txt")


@dataclass
class RunStart:
    """What :func:`start_run` decided for a run folder."""

    path: Path                    #: the run folder (exists, locked while the block runs)
    resume: bool                  #: continue from the newest intact checkpoint, if any
    saved_settings: Path | None   #: the app's settings saved in the run (when resuming)
    lock: RunLock                 #: the folder's lock (released when the block ends)


@contextlib.contextmanager
def start_run(path: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False,
              settings_name: str | None = None, outputs: Sequence[str] = ()
              ) -> Iterator[RunStart]:
    """Lock the run folder ``path`` and decide how training starts in it (module docstring).

    Args:
        resume: continue the run in ``path``.
        overwrite: start over in ``path``, deleting the engine's files and ``outputs``.
        settings_name: the file (in ``path``) where the app saves its settings.
        outputs: names (in ``path``) of the other files and folders the app writes.
    """
    path = Path(path)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: resume continues the "
                         "run, overwrite starts it over")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder")
    created = not path.exists()
    lock = RunLock(path).acquire()
    try:
        present = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)
        if present and not (resume or overwrite):
            raise ValueError(f"{path}: run folder exists and is not empty (pass --resume to "
                             "continue it or --overwrite to start it over)")
        if overwrite:
            for name in dict.fromkeys([*ENGINE_FILES, *outputs,
                                       *([settings_name] if settings_name else [])]):
                p = path / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
        saved = path / settings_name if resume and settings_name else None
        yield RunStart(path=path, resume=resume,
                       saved_settings=saved if saved is not None and saved.is_file() else None,
                       lock=lock)
    finally:
        try:
            if created and not any(p.name != LOCK_NAME for p in path.iterdir()):
                lock.release()
                with contextlib.suppress(OSError):
                    path.rmdir()
        finally:
            lock.release()
