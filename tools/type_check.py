#!/usr/bin/env python3
"""Type-check every workspace member with mypy, holding each file to a ceiling.

Runs mypy (configured in the root ``pyproject.toml``) on every package under the members'
``src/polydiff`` folders, counts the errors per file and compares them with
``tools/type_baseline.json``: a file with more errors than its ceiling (a new file's ceiling
is 0) fails the check, with its new errors printed. Fewer errors than the ceiling pass, and
``--update`` lowers the ceilings to today's counts (it refuses to raise one unless
``--allow-raise`` is given). Every member ships a ``py.typed`` marker; the check also fails
when one is missing.

Usage: ``uv run --locked python tools/type_check.py [--update] [--allow-raise]``
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deps import ROOT, load_workspace  # noqa: E402

BASELINE = ROOT / "tools" / "type_baseline.json"
_ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):\d+: error: ")


def packages(root: Path) -> tuple[list[str], list[Path]]:
    """The import names of every member's packages, and the folders that lack ``py.typed``."""
    names, missing = [], []
    for member in load_workspace(root)[1].values():
        base = member.path / "src" / "polydiff"
        for init in sorted(base.rglob("__init__.py")):
            pkg = init.parent
            parent_is_pkg = (pkg.parent / "__init__.py").exists()
            if parent_is_pkg:
                continue  # a subpackage: checked with its top-level package
            names.append(".".join(pkg.relative_to(member.path / "src").parts))
            if not (pkg / "py.typed").exists():
                missing.append(pkg.relative_to(root))
    return sorted(names), missing


def run_mypy(root: Path, names: list[str]) -> tuple[Counter, list[str]]:
    paths = [str(p) for p in sorted(root.glob("packages/*/src"))
             + sorted(root.glob("apps/*/src"))]
    cmd = [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes"]
    for n in names:
        cmd += ["-p", n]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                          env={**_env(), "MYPYPATH": ":".join(paths)})
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"type_check: mypy failed to run (exit {proc.returncode})")
    lines = [ln for ln in proc.stdout.splitlines() if _ERROR.match(ln)]
    counts = Counter(_ERROR.match(ln)["file"] for ln in lines)
    return counts, lines


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--update", action="store_true",
                        help="write today's counts as the new ceilings")
    parser.add_argument("--allow-raise", action="store_true",
                        help="with --update: allow a ceiling to go up")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    baseline_path = root / "tools" / "type_baseline.json"
    names, missing = packages(root)
    for m in missing:
        print(f"{m}: no py.typed marker")
    counts, lines = run_mypy(root, names)
    ceiling = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
    worse = {f: n for f, n in counts.items() if n > ceiling.get(f, 0)}
    if args.update:
        if worse and not args.allow_raise:
            for f, n in sorted(worse.items()):
                print(f"{f}: {n} errors > ceiling {ceiling.get(f, 0)} (refusing to raise)")
            return 1
        baseline_path.write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")
        print(f"type_check: wrote {len(counts)} ceilings ({sum(counts.values())} errors)")
        return 1 if missing else 0
    for f in sorted(worse):
        print(f"{f}: {counts[f]} type errors, ceiling {ceiling.get(f, 0)}:")
        for ln in lines:
            if ln.startswith(f + ":"):
                print("    " + ln)
    better = sum(max(0, ceiling.get(f, 0) - counts.get(f, 0)) for f in ceiling)
    if worse or missing:
        print(f"type_check: {len(worse)} file(s) over their ceiling, {len(missing)} "
              "missing py.typed", file=sys.stderr)
        return 1
    note = f"; {better} fewer than the ceilings (run --update)" if better else ""
    print(f"type_check: {len(names)} packages, {sum(counts.values())} errors, none over "
          f"their ceiling{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
