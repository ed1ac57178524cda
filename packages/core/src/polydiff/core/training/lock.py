"""One writer per run folder: a lock file holding the owner's pid and host.

Two trainings writing into the same run folder would interleave ``stats.jsonl`` and replace
each other's checkpoints. :class:`RunLock` makes the second one fail at once with one line
naming the owner::

    <run>: run folder is in use by pid 4121 on host gpu7 (since 2025-01-01 12:00:00 UTC);
    wait for it to finish or stop it

The lock is the file ``<run>/.lock`` (JSON: ``pid``, ``host``, ``since``), created with
``O_EXCL``, and on POSIX additionally held with ``fcntl.flock`` for the owner's lifetime, so the
kernel releases it when the owner dies however it dies. A lock file left behind by a dead owner
is *stale*: on the same host (the pid no longer runs, or the ``flock`` is free) it is taken
over with one warning line; a lock of another host is never taken over automatically (its pid
cannot be checked from here): the message says which file to delete once that run is gone.

A process may take the lock of a folder it already holds (e.g. an app locks its output folder
before it builds the :class:`~polydiff.core.training.loop.Trainer`, which locks it too):
acquisitions nest and the file is removed when the outermost holder releases it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid check alone decides staleness
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_owner"]

LOCK_NAME = ".lock"
# path -> [fd, depth, pid] of the locks this process holds (fd -1 without fcntl; the pid
# tells a forked child, which inherits this dict, that the locks are its parent's)
_HELD: dict[str, list[int]] = {}


class RunLockedError(ValueError):
    """The run folder is locked by another live process (one line; a ``ValueError``, so apps
    report it as bad input with exit code 2)."""


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover
        return True
    return True


def lock_owner(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The owner record (``pid``, ``host``, ``since``) of ``directory``'s lock file, ``{}``
    for an unreadable one, ``None`` when there is no lock file."""
    path = Path(directory) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        rec = json.loads(text)
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "an unknown process (unreadable lock file)"
    since = owner.get("since")
    when = f" (since {since})" if since else ""
    return f"pid {owner.get('pid')} on host {owner.get('host')}{when}"


class RunLock:
    """The lock of the run folder ``directory`` (created if missing).

    Use as a context manager or call :meth:`acquire` / :meth:`release`. ``warn`` receives the
    one-line warning when a stale lock is taken over (default: stderr).
    """

    def __init__(self, directory: str | os.PathLike[str], *,
                 warn: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.warn = warn or _warn
        self.held = False

    def _key(self) -> str:
        return str(self.directory.resolve())

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError`; returns ``self``."""
        if self.held:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self._key()
        if key in _HELD and _HELD[key][2] == os.getpid():  # held by this process: nest
            _HELD[key][1] += 1
            self.held = True
            return self
        for _ in range(20):  # retries only when a concurrent taker changed the file under us
            fd = self._try_take()
            if fd is not None:
                _HELD[key] = [fd, 1, os.getpid()]
                self.held = True
                return self
        raise RunLockedError(f"{self.directory}: could not take the run folder's lock "
                             f"{self.path} (it keeps changing)")

    def _try_take(self) -> int | None:
        """One attempt: the lock's fd (or -1 without fcntl) when taken, ``None`` to retry;
        raises :class:`RunLockedError` when a live process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
            created = True
        except FileExistsError:
            created = False
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:  # released meanwhile
                return None
        flocked = False
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except BlockingIOError:
                    if not _same_file(fd, self.path):  # the owner is releasing it right now
                        os.close(fd)
                        return None
                    raise RunLockedError(self._busy_message(lock_owner(self.directory) or {})) \
                        from None
                except OSError:  # a filesystem without flock: the pid check alone decides
                    pass
                # the file we hold must still be the one at the path (not unlinked by a
                # releasing owner between our open and our flock)
                if not _same_file(fd, self.path):
                    os.close(fd)
                    return None
            owner = {} if created else (lock_owner(self.directory) or {})
            if owner:  # a record whose owner does not hold the lock any more?
                why = self._stale(owner, flocked)
                if why is None:
                    raise RunLockedError(self._busy_message(owner))
                self.warn(f"warning: {self.directory}: taking over the stale lock of "
                          f"{_describe(owner)}: {why}")
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if not flocked:  # nothing to keep open
            os.close(fd)
            return -1
        return fd

    def _stale(self, owner: dict[str, Any], flocked: bool) -> str | None:
        """Why the lock file of ``owner`` is stale, or ``None`` when it may be live. With
        ``flocked`` this process holds the ``flock``, so the recorded owner does not. Another
        host's lock is never judged stale (its pid cannot be checked)."""
        if owner.get("host") != socket.gethostname():
            return None
        pid = owner.get("pid")
        if isinstance(pid, int) and not _pid_alive(pid):
            return "that process is not running"
        if flocked:
            return "that process no longer holds the lock"
        return None  # no flock and a live pid: it may be the owner

    def _busy_message(self, owner: dict[str, Any]) -> str:
        other_host = owner.get("host") not in (None, socket.gethostname())
        hint = (f"if that run is gone, delete {self.path}" if other_host
                else "wait for it to finish or stop it")
        return f"{self.directory}: run folder is in use by {_describe(owner)}; {hint}"

    def release(self) -> None:
        """Give the lock up (the outermost release deletes the lock file)."""
        if not self.held:
            return
        self.held = False
        key = self._key()
        entry = _HELD.get(key)
        if entry is None or entry[2] != os.getpid():
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[key]
        fd = entry[0]
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding the flock: nobody takes a dying file
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its owner object
        with contextlib.suppress(Exception):
            self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
