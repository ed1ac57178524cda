#!/usr/bin/env python3
"""Build one member's wheel, install it in a clean venv, and import it from there.

Steps, for ``--package polydiff-core`` (or ``core``):

1. ``uv build --package <name> --no-sources`` (sdist, then the wheel from the sdist), and
   the same for the sibling members it requires, transitively (their wheels stand in for
   the releases an index would serve);
2. check the wheel: name and version match the pyproject; Requires-Dist on siblings carry
   a version range admitting the sibling's version and no direct (``file://``/path)
   reference; no ``polydiff/__init__.py`` (``polydiff`` is a PEP 420 namespace);
3. ``uv venv`` a clean venv (same interpreter) and install the wheel into it: by default
   with its dependencies from the index (uv's cache makes this cheap when the workspace is
   synced) and sibling wheels via ``--find-links``; with ``--no-deps`` only the built
   wheels, third-party packages then come from this interpreter's environment through a
   ``.pth`` path entry (plain paths: the workspace's editable installs stay invisible);
4. in the clean venv (``python -I``), import every top-level package the wheel ships under
   the ``polydiff`` namespace (``polydiff.core``, ``polydiff.apps.tsdiff``, ...: read from
   the wheel's file list, see :func:`top_packages`), require it to come from the venv rather
   than the workspace sources, and check that every Requires-Dist (plus ``--extra`` ones) is
   installed at an admitted version.

Prints one summary line (problems above it) and exits 0 when all is well, 1 otherwise.

Usage: ``uv run --locked python tools/release_check.py --package polydiff-core [--no-deps]``
(``--all`` checks every workspace member in turn).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deps import ROOT, Member, canonical, load_workspace, sibling_deps  # noqa: E402

PROBE = """
import importlib, importlib.metadata as md, json, sys
from pathlib import Path
prefix, out = Path(sys.prefix).resolve(), {"modules": {}, "versions": {}, "errors": []}
modules, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for mod in modules:
    try:
        f = Path(importlib.import_module(mod).__file__).resolve()
    except Exception as e:
        out["errors"].append(f"import {mod} failed: {type(e).__name__}: {e}")
        continue
    out["modules"][mod] = str(f)
    if prefix not in f.parents:
        out["errors"].append(f"{mod} imported from {f}, not from the clean venv {prefix}")
for name in names:
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


class Failed(Exception):
    pass


def uv_bin() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise Failed("uv not found (set UV or put uv on PATH)")
    return uv


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")}
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    return env


def sh(cmd: list[str], cwd: Path) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True)
    if p.returncode:
        raise Failed(f"`{' '.join(cmd)}` failed ({p.returncode}):\n{p.stdout}{p.stderr}".strip())
    return p.stdout


def closure(target: Member, members: dict[str, Member]) -> list[Member]:
    """``target`` and the sibling members its published requirements reach."""
    seen, todo = {target.name}, [target]
    while todo:
        for dep in sibling_deps(todo.pop(), set(members), published_only=True):
            if dep not in seen:
                seen.add(dep)
                todo.append(members[dep])
    return [members[n] for n in sorted(seen)]


def wheel_of(dist: Path, member: Member) -> Path:
    stem = canonical(member.name).replace("-", "_")
    found = sorted(dist.glob(f"{stem}-*.whl"))
    if len(found) != 1:
        raise Failed(f"expected one {stem}-*.whl in {dist}, found {[p.name for p in found]}")
    return found[0]


def check_wheel(wheel: Path, member: Member, members: dict[str, Member]) -> tuple[list, list]:
    """Static checks of a wheel; returns ``(problems, importable modules)``."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_path = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_path).decode())
    if canonical(meta["Name"]) != member.name or meta["Version"] != member.version:
        problems.append(f"wheel is {meta['Name']} {meta['Version']}, pyproject says "
                        f"{member.name} {member.version}")
    for text in meta.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.url or "file:" in text:
            problems.append(f"Requires-Dist {text!r} is a direct reference")
            continue
        sibling = members.get(canonical(req.name))
        if sibling and sibling.name != member.name:
            if not str(req.specifier):
                problems.append(f"Requires-Dist {text!r} has no version range")
            elif not req.specifier.contains(Version(sibling.version), prereleases=True):
                problems.append(f"Requires-Dist {text!r} does not admit {sibling.version}")
    if "polydiff/__init__.py" in names:
        problems.append("wheel ships polydiff/__init__.py; polydiff must stay a namespace")
    modules = top_packages(names)
    if not modules:
        problems.append("wheel ships no package under the polydiff namespace")
    return problems, modules


def top_packages(names: list[str], namespace: str = "polydiff") -> list[str]:
    """The outermost regular packages under the PEP 420 namespace ``namespace`` in a wheel's
    file list: folders with an ``__init__.py`` none of whose parents below the namespace has
    one (``polydiff.core`` from ``polydiff/core/__init__.py``, ``polydiff.apps.tsdiff`` from
    ``polydiff/apps/tsdiff/__init__.py`` when ``polydiff/apps/`` is a namespace too). Derived
    from the wheel, so every member's layout (packages, apps, future ones) is covered."""
    inits = {tuple(n.split("/")[:-1]) for n in names
             if n.startswith(namespace + "/") and n.endswith("/__init__.py")}
    roots = {parts for parts in inits
             if len(parts) >= 2 and not any(parts[:i] in inits for i in range(2, len(parts)))}
    return sorted(".".join(parts) for parts in roots)


def required(wheel: Path, extras: list[str]) -> dict[str, object]:
    """Requirements of ``wheel`` (with ``extras``) that apply on this interpreter."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta_path = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_path).decode())
    out = {}
    for text in meta.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            out[canonical(req.name)] = req.specifier
    return out


def release_check(root: Path, package: str, no_deps: bool = False, extras: list[str] = (),
                  workdir: Path | None = None) -> tuple[bool, str, list[str]]:
    """Run all steps; returns ``(ok, summary line, problem lines)``."""
    _, members = load_workspace(root)
    name = canonical(package)
    member = members.get(name) or members.get(canonical(f"polydiff-{package}"))
    if member is None:
        return False, f"release_check: FAIL: no workspace member {package!r}", []
    label, problems = f"{member.name} {member.version}", []
    tmp = Path(workdir or tempfile.mkdtemp(prefix="release_check-"))
    dist, venv = tmp / "dist", tmp / "venv"
    try:
        uv = uv_bin()
        wheels = {}
        for m in closure(member, members):
            sh([uv, "build", "--package", m.name, "--no-sources", "--out-dir", str(dist),
                "--quiet"], cwd=root)
            wheels[m.name] = wheel_of(dist, m)
        wheel = wheels[member.name]
        for m in wheels:
            wprobs, mods = check_wheel(wheels[m], members[m], members)
            problems += [f"{wheels[m].name}: {p}" for p in wprobs]
            if m == member.name:
                modules = mods
        sh([uv, "venv", str(venv), "--python", sys.executable, "--no-project", "--quiet"],
           cwd=tmp)
        py = venv / "bin" / "python"
        if not py.exists():
            py = venv / "Scripts" / "python.exe"
        spec = f"{member.name}[{','.join(extras)}] @ {wheel.as_uri()}" if extras else str(wheel)
        install = [uv, "pip", "install", "--python", str(py), "--quiet"]
        if no_deps:
            sh(install + ["--no-deps", *map(str, wheels.values())], cwd=tmp)
            site = sh([str(py), "-I", "-c", "import sysconfig;print(sysconfig.get_paths()"
                       "['purelib'])"], cwd=tmp).strip()
            ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
            (Path(site) / "_release_check_deps.pth").write_text("\n".join(ours) + "\n")
        else:
            sh(install + ["--find-links", str(dist), spec], cwd=tmp)
        reqs = required(wheel, list(extras))
        probe = json.loads(sh([str(py), "-I", "-c", PROBE, json.dumps(modules),
                               json.dumps(sorted(reqs))], cwd=tmp))
        problems += probe["errors"]
        for req_name, specifier in sorted(reqs.items()):
            have = probe["versions"].get(req_name)
            if have is None:
                problems.append(f"requirement {req_name}{specifier} is not installed")
            elif not specifier.contains(have, prereleases=True):
                problems.append(f"requirement {req_name}{specifier} has {have} installed")
    except Failed as e:
        problems.append(str(e))
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        return False, f"release_check: FAIL {label} ({len(problems)} problem(s))", problems
    where = ", ".join(f"{k} from {v}" for k, v in probe["modules"].items())
    mode = "no-deps + host packages" if no_deps else "with dependencies"
    return True, (f"release_check: OK {label}: {wheel.name} installed in a clean venv "
                  f"({mode}); imported {where}"), []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--package", help="member, e.g. polydiff-core or core")
    which.add_argument("--all", action="store_true", help="every workspace member in turn")
    ap.add_argument("--no-deps", action="store_true",
                    help="install only the built wheels; reuse this environment's packages")
    ap.add_argument("--extra", action="append", default=[], help="also install/check an extra")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="work in DIR (must not exist) and keep it: wheels in DIR/dist "
                    "(DIR/<member>/dist with --all)")
    ap.add_argument("--root", type=Path, default=ROOT, help="workspace root (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        import packaging  # noqa: F401
    except ImportError:
        print("release_check: needs `packaging`; run it with `uv run --locked`", file=sys.stderr)
        return 2
    root = args.root.resolve()
    names = sorted(load_workspace(root)[1]) if args.all else [args.package]
    if args.keep:
        args.keep.mkdir(parents=True)
    failed = 0
    for name in names:
        keep = (args.keep / name if args.all else args.keep) if args.keep else None
        if keep is not None and args.all:
            keep.mkdir()
        ok, summary, problems = release_check(root, name, args.no_deps, args.extra, keep)
        for p in problems:
            print(p)
        print(summary, flush=True)
        failed += not ok
    if args.all:
        print(f"release_check: {len(names) - failed} of {len(names)} members OK")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
