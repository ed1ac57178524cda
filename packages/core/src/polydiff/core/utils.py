"""The one small helper module of polydiff (standard library only, so importing it is instant).

* files: :func:`atomic_path` and :func:`atomic_write` (a temporary file beside the target,
  fsync-ed and renamed over it; the result carries the user's umask permissions like any
  other file), :func:`atomic_dir` (the same for a whole folder);
* the cache: :func:`cache_dir` (``$POLYDIFF_CACHE`` or ``~/.cache/polydiff``) and
  :func:`fetch_debian_package` (a Debian package's files, fetched once into the cache);
* progress: :func:`quiet` (one rule for every progress bar) and :func:`progress`;
* text: :func:`one_line` (collapse whitespace for one-line error messages);
* errors: :class:`MissingDependencyError` (an optional extra is not installed; apps report
  it on one line).

Library code of every package imports these from here; :mod:`polydiff.core.cli` re-exports
them for apps. The tensor helpers (``append_dims`` and friends) are in
:mod:`polydiff.core.shapes`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

__all__ = ["MissingDependencyError", "atomic_dir", "atomic_path", "atomic_write", "cache_dir",
           "fetch_debian_package", "file_mode", "one_line", "progress", "quiet"]

T = TypeVar("T")


class MissingDependencyError(RuntimeError):
    """An optional dependency (a package extra) is needed but not installed; the message says
    what to install. :func:`polydiff.core.cli.run_cli` reports it as bad input (exit 2)."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------- files
def file_mode(directory: bool = False) -> int:
    """The permissions a new file (or folder) gets under the current umask: 0o644 / 0o755
    under the usual umask 022. ``tempfile`` creates 0o600 files and 0o700 folders; atomic
    writes restore these before the rename."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so format-sniffing writers work).

    On success the temporary file is fsync-ed, given the umask's permissions and renamed over
    ``path`` in one ``os.replace``; on any error it is deleted and ``path`` is left untouched.
    Missing parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.",
                                    suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically: readers see the old file or
    the complete new one, never a partial file."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path`` (an existing
    folder there is replaced when ``replace``, else :class:`FileExistsError`). On error the
    temporary folder is removed. The folder gets the umask's permissions, not ``0o700``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not replace:
        raise FileExistsError(f"'{target}' exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, file_mode(directory=True))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    _fsync_dir(target.parent)


# ----------------------------------------------------------------------------- progress
def quiet() -> bool:
    """True where progress output should stay silent: stderr is not a terminal, or ``CI`` is
    set (to anything but ``0``/``false``/``no``). The one rule of every progress bar."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or not (sys.stderr and sys.stderr.isatty())


@overload
def progress(iterable: int, total: int | None = None, desc: str | None = None,
             disable: bool | None = None) -> Iterator[int]: ...
@overload
def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None,
             disable: bool | None = None) -> Iterator[T]: ...
def progress(iterable: Iterable[T] | int, total: int | None = None, desc: str | None = None,
             disable: bool | None = None) -> Iterator[T] | Iterator[int]:
    """``iterable`` (an ``int`` n means ``range(n)``) with a tqdm bar on stderr;
    ``disable=None`` means silent when :func:`quiet`."""
    from tqdm.std import tqdm  # imported here: keeps tqdm off the --help path

    items: Iterable[Any] = iterable if not isinstance(iterable, int) else range(iterable)
    if isinstance(iterable, int):
        total = iterable
    return iter(tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True,
                     disable=quiet() if disable is None else disable, file=sys.stderr))


# ----------------------------------------------------------------------------- the cache
def cache_dir(*parts: str) -> Path:
    """polydiff's cache folder joined with ``parts``: ``$POLYDIFF_CACHE``, else
    ``$XDG_CACHE_HOME/polydiff``, else ``~/.cache/polydiff``. Not created here."""
    if os.environ.get("POLYDIFF_CACHE"):
        base = Path(os.environ["POLYDIFF_CACHE"]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
        base = base / "polydiff"
    return base.joinpath(*parts)


_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


def fetch_debian_package(name: str, *, root: str | os.PathLike[str] | None = None,
                         timeout: float = 600.0) -> Path:
    """The unpacked files of Debian package ``name`` (the folder holding its ``usr/``), fetched
    once with ``apt-get download`` and unpacked with ``dpkg -x`` (no root install) into
    ``root`` (default ``cache_dir("debian")``), then reused offline.

    Only benchmarks, demos and corpus builders call this; tests never do. Raises
    :class:`MissingDependencyError` (one line) when ``apt-get``/``dpkg`` are missing or the
    package cannot be fetched (offline, unknown name).
    """
    if not _DEB_NAME.match(name):
        raise ValueError(f"not a Debian package name: {name!r}")
    dest = Path(root) if root is not None else cache_dir("debian")
    dest = dest / name
    if (dest / ".complete").is_file():
        return dest
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise MissingDependencyError(
                f"fetching the Debian package {name!r} needs '{tool}' (a Debian-based system); "
                f"or unpack it yourself into {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=dest.parent) as work:
        try:
            subprocess.run(["apt-get", "download", "-q", name], cwd=work, check=True,
                           capture_output=True, text=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            detail = one_line(getattr(e, "stderr", "") or "")[-300:]
            raise MissingDependencyError(
                f"could not fetch the Debian package {name!r} with apt-get download "
                f"(offline, or unknown package?): {detail or e}") from None
        debs = sorted(Path(work).glob("*.deb"))
        if not debs:
            raise MissingDependencyError(f"apt-get download {name} produced no .deb file")
        with atomic_dir(dest) as tmp:
            for deb in debs:
                subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True,
                               capture_output=True, timeout=timeout)
            (tmp / ".complete").write_text(debs[0].name + "\n", encoding="utf-8")
    return dest
