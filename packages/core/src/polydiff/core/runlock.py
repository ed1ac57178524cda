"""An exclusive lock on a run directory, so two processes never train into the same folder.

``with run_lock(run_dir): ...`` takes an advisory ``flock`` on ``run_dir/.lock`` (created if
needed; the directory too) and raises :class:`RunLockedError` at once, with one line naming the
folder and the holder's process id, if another process holds it. The lock disappears with
the process (the kernel drops ``flock`` locks of dead processes), so a crashed run never
leaves a stale lock behind. Standard library only; on platforms without ``fcntl`` (Windows)
the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RunLockedError", "run_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the ``with`` block (module docstring); yields the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield run_dir
        return
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunLockedError(f"{run_dir} is in use by another process (pid {holder}); "
                                 "wait for it or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield run_dir
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
