"""Offline run directories in the style of NVlabs/edm (``training/training_loop.py``).

``<root>/NNNNN-<desc>/`` (the next free five-digit id) or a directory the user names, holding

* ``config.json``: the resolved configuration (plus environment facts: device, world size,
  torch version), written atomically;
* ``stats.jsonl``: one JSON object per logged step (``step``, ``loss``, ``lr``,
  ``grad_norm``, ``skipped``, ``time``, ...), appended and flushed line by line;
* ``log.txt``: human-readable log lines with a UTC timestamp;
* ``checkpoints/``: see :mod:`polydiff.core.training.checkpoint`.

Everything needed to reproduce the run, nothing that needs a network.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, TextIO

from polydiff.core.utils import atomic_write

__all__ = ["next_run_dir", "read_stats", "RunDir"]

_ID = re.compile(r"^(\d+)")


def read_stats(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``stats.jsonl`` (``path``: the file or the run directory) that
    carry a finite ``loss``, in order; torn or malformed lines (a run killed mid-write) are
    skipped, a missing file gives ``[]``."""
    path = Path(path)
    if path.is_dir():
        path = path / "stats.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        loss = rec.get("loss") if isinstance(rec, dict) else None
        if isinstance(loss, int | float) and not isinstance(loss, bool) and math.isfinite(loss):
            out.append(rec)
    return out


def next_run_dir(root: str | Path, desc: str) -> Path:
    """Create and return ``root/NNNNN-desc`` with the smallest id above every existing one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    desc = re.sub(r"[^A-Za-z0-9._-]+", "-", desc).strip("-") or "run"
    while True:
        ids = [int(m.group(1)) for p in root.iterdir() if (m := _ID.match(p.name))]
        path = root / f"{max(ids, default=-1) + 1:05d}-{desc}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # a concurrent launcher took this id: try the next one
            continue


class RunDir:
    """Writer of one run directory (only the main process should create one).

    Args:
        path: the directory (created if missing).
        echo: also print log lines (through ``print_fn``).
        print_fn: how to echo (e.g. ``tqdm.write`` while a progress bar is shown).
    """

    def __init__(self, path: str | Path, *, echo: bool = True, print_fn: Any = print):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.echo, self.print_fn = echo, print_fn
        self._stats: TextIO | None = None
        self._log: TextIO | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def stats_path(self) -> Path:
        return self.path / "stats.jsonl"

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write ``config.json`` atomically."""
        text = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
        return atomic_write(self.path / "config.json", text)

    def append_stats(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``stats.jsonl`` and flush it."""
        if self._stats is None:
            self._stats = open(self.stats_path, "a")  # kept open for the run
        self._stats.write(json.dumps(record, sort_keys=True) + "\n")
        self._stats.flush()

    def truncate_stats(self, after_step: int) -> None:
        """Drop ``stats.jsonl`` lines with ``step > after_step`` (steps a resumed run redoes).
        Torn trailing lines of a killed run are dropped too."""
        self.close()
        if not self.stats_path.is_file():
            return
        kept = []
        for line in self.stats_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(rec.get("step", 0)) <= after_step:
                kept.append(line + "\n")
        atomic_write(self.stats_path, "".join(kept))

    def read_stats(self) -> list[dict[str, Any]]:
        """All records of ``stats.jsonl`` (torn lines skipped)."""
        if not self.stats_path.is_file():
            return []
        out = []
        for line in self.stats_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def log(self, message: str) -> None:
        """Append ``message`` to ``log.txt`` (and echo it)."""
        if self._log is None:
            self._log = open(self.path / "log.txt", "a")  # kept open for the run
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self._log.write(f"[{stamp}] {message}\n")
        self._log.flush()
        if self.echo:
            self.print_fn(message)

    def close(self) -> None:
        for f in (self._stats, self._log):
            if f is not None:
                f.close()
        self._stats = self._log = None
