#!/usr/bin/env python3
"""Check how the workspace members depend on each other.

Prints one line per problem and exits 1 when there is any (0 and one summary line otherwise):

- every ``packages/*`` and ``apps/*`` folder holding a pyproject.toml is a workspace member;
- every member has a static ``[project] version`` and a ``CHANGELOG.md``;
- a dependency on a sibling member in ``dependencies`` or an extra (what a built wheel
  publishes) has a version range (``"polydiff-core>=0.1,<0.2"``, not a bare
  ``"polydiff-core"`` or ``"polydiff-core[diffusers]"``), no direct URL, and the range admits
  the sibling's current version; in dependency groups a range is optional but must also admit it;
- every sibling dependency is ``{ workspace = true }`` in ``[tool.uv.sources]`` of the member
  or of the workspace root (a member's own entry wins, as in uv);
- a ``polydiff-*`` requirement names an existing member;
- the root meta project depends on every member, under the same rules.

The workspace helpers here (``load_workspace``, ``iter_requirements``, ...) use only the
standard library, so ``tools/ci_matrix.py`` can import them from a bare Python; the checks
themselves need ``packaging`` (present in the workspace's dev environment).

Usage: ``uv run --locked python tools/check_deps.py [--root DIR]``
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBER_PARENTS = ("packages", "apps")
PREFIX = "polydiff-"
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    """Canonical name of a PEP 508 requirement string (stdlib only)."""
    m = _NAME.match(req)
    if not m:
        raise ValueError(f"not a requirement: {req!r}")
    return canonical(m.group(1))


def load_toml(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


@dataclass(frozen=True)
class Member:
    """One workspace member: its folder, parsed pyproject and distribution name."""

    name: str
    path: Path
    rel: str
    data: dict

    @property
    def version(self) -> str | None:
        return self.data.get("project", {}).get("version")

    @property
    def sources(self) -> dict:
        return self.data.get("tool", {}).get("uv", {}).get("sources", {})


def iter_requirements(data: dict) -> Iterator[tuple[str, str, bool]]:
    """Yield ``(section, requirement, published)`` for every requirement of a pyproject."""
    project = data.get("project", {})
    for req in project.get("dependencies", []):
        yield "dependencies", req, True
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for req in reqs:
            yield f"optional-dependencies.{extra}", req, True
    for group, reqs in data.get("dependency-groups", {}).items():
        for req in reqs:
            if isinstance(req, str):  # skip {include-group = ...}
                yield f"dependency-groups.{group}", req, False
    for req in data.get("tool", {}).get("uv", {}).get("dev-dependencies", []):
        yield "tool.uv.dev-dependencies", req, False


def member_dirs(root: Path, root_data: dict) -> list[Path]:
    """Folders matched by ``[tool.uv.workspace] members`` minus ``exclude``."""
    ws = root_data.get("tool", {}).get("uv", {}).get("workspace", {})
    excluded = {p.resolve() for pat in ws.get("exclude", []) for p in root.glob(pat)}
    found = {
        p.resolve()
        for pat in ws.get("members", [])
        for p in root.glob(pat)
        if (p / "pyproject.toml").is_file()
    }
    return sorted(found - excluded - {root.resolve()})


def load_workspace(root: Path = ROOT) -> tuple[dict, dict[str, Member]]:
    """Parse the root pyproject and every member's; members keyed by canonical name."""
    root = root.resolve()
    root_data = load_toml(root / "pyproject.toml")
    members: dict[str, Member] = {}
    for d in member_dirs(root, root_data):
        data = load_toml(d / "pyproject.toml")
        raw = data.get("project", {}).get("name") or d.name
        m = Member(canonical(raw), d, d.relative_to(root).as_posix(), data)
        members[m.name] = m
    return root_data, members


def sibling_deps(member: Member, names: set[str], published_only: bool = False) -> set[str]:
    """Names of the sibling members that ``member`` requires (any section)."""
    out = set()
    for _, req, published in iter_requirements(member.data):
        name = req_name(req)
        if name in names and name != member.name and (published or not published_only):
            out.add(name)
    return out


def suggest_range(version: str) -> str:
    """``0.1.3`` -> ``>=0.1,<0.2``; ``1.2.0`` -> ``>=1.2,<2``."""
    parts = [int(x) for x in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    upper = f"0.{minor + 1}" if major == 0 else str(major + 1)
    return f">={major}.{minor},<{upper}"


def _source_ok(entry) -> bool:
    entries = entry if isinstance(entry, list) else [entry]
    return bool(entries) and all(isinstance(e, dict) and e.get("workspace") is True
                                 for e in entries)


def check_requirements(
    where: str, data: dict, self_name: str, members: dict[str, Member], root_sources: dict
) -> list[str]:
    """Problems of one pyproject's requirements on siblings."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    sources = data.get("tool", {}).get("uv", {}).get("sources", {})
    own_sources = {canonical(k): v for k, v in sources.items()}
    root_sources = {canonical(k): v for k, v in root_sources.items()}
    problems = []
    for section, text, published in iter_requirements(data):
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            problems.append(f"{where}: {section}: invalid requirement {text!r}: {e}")
            continue
        name = canonical(req.name)
        if name == self_name:
            continue  # self-referencing extras are fine
        sibling = members.get(name)
        if sibling is None:
            if name.startswith(PREFIX):
                problems.append(f"{where}: {section}: {text!r} names no workspace member")
            continue
        if req.url:
            problems.append(f"{where}: {section}: {text!r} is a direct reference; "
                            f"use a version range and {{ workspace = true }}")
        hint = f'write e.g. "{req.name}{suggest_range(sibling.version or "0.1")}"'
        if published and not str(req.specifier):
            problems.append(f"{where}: {section}: {text!r} has no version range ({hint})")
        if str(req.specifier) and sibling.version:
            try:
                admitted = req.specifier.contains(Version(sibling.version), prereleases=True)
            except InvalidVersion:
                admitted = True  # reported on the sibling itself
            if not admitted:
                problems.append(f"{where}: {section}: {text!r} does not admit {name}'s "
                                f"current version {sibling.version} ({hint})")
        entry = own_sources.get(name, root_sources.get(name))
        if entry is None or not _source_ok(entry):
            problems.append(f"{where}: {section}: {name} is not {{ workspace = true }} in "
                            f"[tool.uv.sources] (add `{name} = {{ workspace = true }}`)")
    return problems


def check(root: Path = ROOT) -> list[str]:
    """All problems of the workspace at ``root`` (empty list when it is consistent)."""
    from packaging.version import InvalidVersion, Version

    root = root.resolve()
    root_data, members = load_workspace(root)
    root_sources = root_data.get("tool", {}).get("uv", {}).get("sources", {})
    problems = []
    known = {m.path for m in members.values()}
    for parent in MEMBER_PARENTS:
        for d in sorted((root / parent).glob("*/pyproject.toml")):
            if d.parent.resolve() not in known:
                problems.append(f"{d.parent.relative_to(root).as_posix()}: has a pyproject.toml "
                                "but is not a workspace member ([tool.uv.workspace] members)")
    for m in members.values():
        where = f"{m.rel}/pyproject.toml"
        if "project" not in m.data:
            problems.append(f"{where}: no [project] table")
            continue
        if not m.version:
            problems.append(f"{where}: no static [project] version (needed by `uv version`)")
        else:
            try:
                Version(m.version)
            except InvalidVersion:
                problems.append(f"{where}: invalid version {m.version!r}")
        if not (m.path / "CHANGELOG.md").is_file():
            problems.append(f"{m.rel}: no CHANGELOG.md")
        problems += check_requirements(where, m.data, m.name, members, root_sources)
    project = root_data.get("project")
    if project is not None:
        root_name = canonical(project.get("name", ""))
        problems += check_requirements("pyproject.toml", root_data, root_name, members,
                                       root_sources)
        direct = {req_name(r) for r in project.get("dependencies", [])}
        for m in members.values():
            if m.name not in direct and m.name != root_name:
                problems.append(f'pyproject.toml: dependencies: meta project lacks member '
                                f'"{m.name}{suggest_range(m.version or "0.1")}"')
    if not members:
        problems.append("pyproject.toml: [tool.uv.workspace] members matches no member")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--root", type=Path, default=ROOT, help="workspace root (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        import packaging  # noqa: F401
    except ImportError:
        print("check_deps: needs `packaging`; run it with `uv run --locked`", file=sys.stderr)
        return 2
    problems = check(args.root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_deps: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = len(load_workspace(args.root)[1])
    print(f"check_deps: {n} member(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
