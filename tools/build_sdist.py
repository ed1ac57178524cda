"""Build a wheel from a source distribution on a machine that has no package index.

An sdist whose ``setup.py`` says ``setup_requires=[...]`` (pesq's: ``setuptools``,
``cython``, ``numpy``, ``pytest-runner``) makes setuptools fetch those packages at build
time; with no index that fails even when everything the build really needs is installed.
This tool copies the sdist into a scratch directory, drops the ``setup_requires`` and
``tests_require`` arguments of its ``setup(...)`` call (and the same keys of ``setup.cfg``'s
``[options]``), and calls the project's PEP 517 backend there (setuptools' legacy backend
for a plain ``setup.py``, as ``pip wheel --no-build-isolation --no-deps`` would), so the
build uses the interpreter's own setuptools, Cython and NumPy and fetches nothing. The
original sdist is not modified.

    python tools/build_sdist.py .whl/pesq-0.0.4.tar.gz -o /tmp/built   # -> /tmp/built/*.whl
    python tools/build_sdist.py SDIST --patched-sdist patched.tar.gz   # only rewrite it

Exit status: 0 with the wheel's path on stdout; 2 for a bad sdist (one line on stderr); the
build's status when ``pip wheel`` fails.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DROP = ("setup_requires", "tests_require")


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def strip_setup_py(text: str) -> tuple[str, list[str]]:
    """``text`` without the :data:`DROP` keyword arguments of its ``setup(...)`` calls (each
    with its trailing comma); returns the new text and the names removed."""
    data = text.encode()
    tree = ast.parse(data)
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:  # ast columns are UTF-8 byte offsets
        return starts[lineno - 1] + col

    spans, removed = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "setup":
            for kw in node.keywords:
                if kw.arg in DROP:
                    start = offset(kw.lineno, kw.col_offset)
                    end = offset(kw.end_lineno or kw.lineno, kw.end_col_offset or 0)
                    m = re.match(rb"\s*,", data[end:])
                    spans.append((start, end + (m.end() if m else 0)))
                    removed.append(kw.arg)
    for start, end in sorted(spans, reverse=True):
        data = data[:start] + data[end:]
    out = data.decode()
    ast.parse(out)  # still valid Python
    return out, removed


def strip_setup_cfg(text: str) -> tuple[str, list[str]]:
    """``text`` without :data:`DROP` keys (and their continuation lines) in ``[options]``."""
    out, removed, section, skipping = [], [], "", False
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            section, skipping = header.group(1).strip(), False
        elif skipping and (line[:1] in (" ", "\t") and line.strip()):
            continue  # a continuation line of the dropped key
        else:
            skipping = False
            key = re.match(r"([A-Za-z0-9_.-]+)\s*[=:]", line)
            if section == "options" and key and key.group(1).replace("-", "_") in DROP:
                removed.append(key.group(1))
                skipping = True
                continue
        out.append(line)
    return "".join(out), removed


def unpack(sdist: Path, dest: Path) -> Path:
    """Extract ``sdist`` (``.tar.gz``) into ``dest``; returns its top-level directory."""
    if not sdist.is_file() or not sdist.name.endswith(".tar.gz"):
        raise ValueError(f"{sdist}: not a .tar.gz source distribution")
    try:
        with tarfile.open(sdist) as tar:
            if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - old Pythons without extraction filters
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{sdist}: cannot extract ({exc})") from exc
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1 or (not (tops[0] / "setup.py").is_file() and not (
            tops[0] / "pyproject.toml").is_file()):
        raise ValueError(f"{sdist}: expected one top-level project directory")
    return tops[0]


def patch_tree(src: Path) -> list[str]:
    """Strip ``setup.py`` and ``setup.cfg`` under ``src`` in place; returns what was removed."""
    removed = []
    for name, fn in (("setup.py", strip_setup_py), ("setup.cfg", strip_setup_cfg)):
        path = src / name
        if path.is_file():
            text, gone = fn(path.read_text())
            if gone:
                path.write_text(text)
                removed += [f"{name}:{g}" for g in gone]
    return removed


# Runs in the unpacked source tree: the project's PEP 517 backend (setuptools' legacy backend
# for a plain setup.py project, as pip uses) builds the wheel with what is installed.
_DRIVER = """
import importlib, os, sys, tomllib
spec, paths = "setuptools.build_meta:__legacy__", []
if os.path.exists("pyproject.toml"):
    with open("pyproject.toml", "rb") as f:
        system = tomllib.load(f).get("build-system", {})
    spec, paths = system.get("build-backend", spec), system.get("backend-path", [])
sys.path[:0] = [os.path.abspath(p) for p in paths]
module, _, attr = spec.partition(":")
backend = importlib.import_module(module)
for part in filter(None, attr.split(".")):
    backend = getattr(backend, part)
print("WHEEL=" + backend.build_wheel(sys.argv[1]))
"""


def build(sdist: Path, out_dir: Path, python: str) -> Path:
    """The wheel of ``sdist`` built without an index (nothing is fetched: the backend runs in
    ``python``'s environment, as ``pip wheel --no-build-isolation`` runs it), in
    ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build_sdist_") as tmp:
        src = unpack(sdist, Path(tmp) / "src")
        removed = patch_tree(src)
        print(f"build_sdist: {sdist.name}: dropped {', '.join(removed) or 'nothing'}",
              file=sys.stderr)
        wheel_dir = Path(tmp) / "wheels"
        wheel_dir.mkdir()
        cmd = [python, "-c", _DRIVER, str(wheel_dir)]
        env = {**os.environ, "PIP_NO_INDEX": "1"}  # whatever still tries to fetch, fails fast
        proc = subprocess.run(cmd, cwd=src, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        names = re.findall(r"^WHEEL=(.+)$", proc.stdout, flags=re.M)
        if proc.returncode != 0 or not names:
            sys.stderr.write(proc.stdout[-3000:])
            raise subprocess.CalledProcessError(proc.returncode or 1, cmd)
        target = out_dir / names[-1].strip()
        shutil.copy2(wheel_dir / names[-1].strip(), target)
        return target


def repack(sdist: Path, target: Path) -> list[str]:
    """Write a copy of ``sdist`` with the patch applied to ``target``."""
    with tempfile.TemporaryDirectory(prefix="build_sdist_") as tmp:
        src = unpack(sdist, Path(tmp))
        removed = patch_tree(src)
        part = target.with_name(target.name + ".part")
        with tarfile.open(part, "w:gz") as tar:
            tar.add(src, arcname=src.name)
        part.replace(target)
        return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sdist", type=Path)
    ap.add_argument("-o", "--out-dir", type=Path, default=Path("."))
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose setuptools/Cython/NumPy build the wheel")
    ap.add_argument("--patched-sdist", type=Path, default=None,
                    help="only write the patched sdist here (no build)")
    args = ap.parse_args(argv)
    try:
        if args.patched_sdist is not None:
            removed = repack(args.sdist, args.patched_sdist)
            print(f"{args.patched_sdist} (dropped {', '.join(removed) or 'nothing'})")
        else:
            print(build(args.sdist, args.out_dir, args.python))
    except ValueError as exc:
        print(f"build_sdist: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"build_sdist: the build of {args.sdist.name} failed (exit {exc.returncode})",
              file=sys.stderr)
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
