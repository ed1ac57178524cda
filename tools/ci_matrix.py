#!/usr/bin/env python3
"""Map the files a git range changes to the workspace members whose tests must run.

A changed file inside a member's folder selects that member and, through the reverse
dependency graph read from the members' pyprojects (dependencies, extras and dependency
groups), every member that depends on it, transitively; a change confined to a member's own
``tests/`` selects that member alone. Cross-package tests (``tests/``) run whenever anything
changed; a change under ``tests/`` alone runs only ``tests/``.
A change to a workspace-wide file (root ``pyproject.toml``, ``uv.lock``, ``.python-version``)
or under ``tools/``, ``.ci/``, ``.github/`` or ``shared/`` selects everything.

Ranges: ``RANGE`` is given to ``git diff`` as is (``origin/main..HEAD`` compares the two
commits, ``origin/main...HEAD`` what HEAD added since the merge base, a single ``REV``
compares REV with the working tree); ``--base REV [--head REV]`` means ``BASE...HEAD``.

Examples::

    python tools/ci_matrix.py origin/main..HEAD            # human-readable
    python tools/ci_matrix.py --base origin/main --json    # for a CI matrix
    uv run --locked python tools/ci_matrix.py origin/main...HEAD --run -- -m "not slow"

``--run`` runs pytest (in this interpreter) on the selected tests folders, and exits with
pytest's code. Pytest's "no tests collected" (5) is a failure; only when the change selects
no tests at all does it print so and exit 0. A selected member without a ``tests/`` folder
is a failure. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deps import ROOT, Member, load_workspace, sibling_deps  # noqa: E402

GLOBAL_FILES = ("pyproject.toml", "uv.lock", ".python-version")
GLOBAL_DIRS = ("tools/", ".ci/", ".github/", "shared/")
ROOT_TESTS = "tests"


@dataclass
class Selection:
    """What a change selects: members (with why), cross-package tests, or everything."""

    changed: list[str]
    everything: bool = False
    members: list[Member] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    root_tests: bool = False

    def test_paths(self) -> list[str]:
        paths = [f"{m.rel}/tests" for m in self.members]
        return paths + ([ROOT_TESTS] if self.root_tests else [])

    def as_json(self) -> dict:
        return {
            "changed_files": self.changed,
            "everything": self.everything,
            "names": [m.name for m in self.members],
            "members": [{"name": m.name, "path": m.rel, "tests": f"{m.rel}/tests",
                         "reason": self.reasons[m.name]} for m in self.members],
            "root_tests": self.root_tests,
            "test_paths": self.test_paths(),
        }


def changed_files(root: Path, rng: str | None = None, base: str | None = None,
                  head: str = "HEAD") -> list[str]:
    """Paths (relative to the repo root) that ``git diff`` reports for the range."""
    spec = [f"{base}...{head}"] if base else [rng] if rng else []
    out = subprocess.run(
        ["git", "-C", str(root), "diff", "--name-only", "--no-renames", *spec, "--"],
        check=True, capture_output=True, text=True,
    ).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


def dependants(members: dict[str, Member]) -> dict[str, set[str]]:
    """Reverse graph: member name -> names of the members that require it directly."""
    names = set(members)
    rdeps: dict[str, set[str]] = {n: set() for n in names}
    for m in members.values():
        for dep in sibling_deps(m, names):
            rdeps[dep].add(m.name)
    return rdeps


def owner(path: str, members: dict[str, Member]) -> Member | None:
    """The member whose folder holds ``path`` (the deepest one when folders nest)."""
    best = None
    for m in members.values():
        if path.startswith(m.rel + "/") and (best is None or len(m.rel) > len(best.rel)):
            best = m
    return best


def select(root: Path, changed: list[str], everything: bool = False) -> Selection:
    """Affected members (changed ones plus transitive dependants) for ``changed`` files."""
    _, members = load_workspace(root)
    sel = Selection(changed=list(changed), everything=everything)
    direct: set[str] = set()
    tests_only: set[str] = set()  # members whose change is confined to their tests/
    for path in changed:
        if path in GLOBAL_FILES or path.startswith(GLOBAL_DIRS):
            sel.everything = True
        elif path == ROOT_TESTS or path.startswith(ROOT_TESTS + "/"):
            pass
        elif (m := owner(path, members)) is not None:
            (tests_only if path.startswith(f"{m.rel}/tests/") else direct).add(m.name)
    if sel.everything:
        sel.reasons = {n: "everything" for n in members}
    else:
        sel.reasons = {n: "tests changed" for n in tests_only - direct}
        sel.reasons.update({n: "changed" for n in direct})
        rdeps, todo = dependants(members), sorted(direct)
        while todo:
            dep = todo.pop()
            for user in sorted(rdeps[dep]):
                if user not in sel.reasons:
                    sel.reasons[user] = f"depends on {dep}"
                    todo.append(user)
    sel.members = sorted((members[n] for n in sel.reasons), key=lambda m: m.rel)
    sel.root_tests = bool(changed) or sel.everything
    return sel


def run_pytest(root: Path, sel: Selection, pytest_args: list[str]) -> int:
    """Run pytest on the selection; returns the exit code to propagate."""
    paths = sel.test_paths()
    if not paths:
        print("ci_matrix: this change selects no tests; nothing to run")
        return 0
    missing = [p for p in paths if not (root / p).is_dir()]
    for p in missing:
        print(f"ci_matrix: selected tests folder {p} does not exist", file=sys.stderr)
    present = [p for p in paths if p not in missing]
    rc = 0
    if present:
        cmd = [sys.executable, "-m", "pytest", *present, *pytest_args]
        print("ci_matrix: " + " ".join(cmd[1:]), flush=True)
        rc = subprocess.run(cmd, cwd=root).returncode
        if rc == 5:
            print(f"ci_matrix: pytest collected no tests from {' '.join(present)}; "
                  "treating that as a failure", file=sys.stderr)
    return rc or (1 if missing else 0)


def report(sel: Selection) -> str:
    lines = [f"changed files: {len(sel.changed)}" + ("  (workspace-wide change: everything)"
                                                     if sel.everything else "")]
    lines.append(f"affected members: {len(sel.members)}")
    width = max((len(m.name) for m in sel.members), default=0)
    lines += [f"  {m.name:<{width}}  {m.rel:<20}  {sel.reasons[m.name]}" for m in sel.members]
    lines.append(f"cross-package tests ({ROOT_TESTS}/): {'yes' if sel.root_tests else 'no'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 usage="%(prog)s [RANGE | --base REV [--head REV] | --all] "
                                       "[--json] [--run [-- PYTEST_ARGS...]]")
    ap.add_argument("range", nargs="?", help="git range, e.g. origin/main..HEAD")
    ap.add_argument("--base", help="compare HEAD (or --head) with its merge base with REV")
    ap.add_argument("--head", default="HEAD", help="head revision for --base (default: HEAD)")
    ap.add_argument("--all", action="store_true", help="select everything, ignore git")
    ap.add_argument("--json", action="store_true", help="print the selection as JSON")
    ap.add_argument("--run", action="store_true", help="run pytest on the selected tests")
    ap.add_argument("--root", type=Path, default=ROOT, help="workspace root (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.range and args.base:
        ap.error("give either RANGE or --base, not both")
    if not (args.range or args.base or args.all):
        ap.error("give a RANGE, --base REV or --all")
    root = args.root.resolve()
    try:
        changed = [] if args.all else changed_files(root, args.range, args.base, args.head)
    except subprocess.CalledProcessError as e:
        print(f"ci_matrix: git diff failed: {e.stderr.strip()}", file=sys.stderr)
        return 2
    sel = select(root, changed, everything=args.all)
    print(json.dumps(sel.as_json()) if args.json else report(sel), flush=True)
    return run_pytest(root, sel, pytest_args) if args.run else 0


if __name__ == "__main__":
    sys.exit(main())
