#!/usr/bin/env python3
"""Check the import layers of the workspace (docs/architecture.md, "Layers").

Reads every ``import`` statement (at any depth, so lazy imports inside functions count) of
every source file under ``<member>/src`` and prints one line per violation; exits 1 when
there is any, 0 with a summary line otherwise:

- ``polydiff-gpu`` imports no other polydiff member;
- ``polydiff-core`` imports only itself and ``polydiff-gpu``;
- a domain package (``packages/*`` besides core and gpu) imports only itself, core and gpu;
- an app (``apps/*``) imports no other app;
- library code (``packages/*``) never imports ``polydiff.core.cli`` (the app helpers; library
  code uses ``polydiff.core.utils``), except ``polydiff.core.cli`` itself;
- nobody imports a private module (a dotted component starting with ``_``, other than
  ``__init__``) that belongs to another member;
- a member imports only siblings that it declares as dependencies (its ``dependencies`` or
  an extra of them), so a built wheel carries the requirement.

Modules are mapped to members by the folders under each member's ``src/polydiff``.
Standard library only. Usage: ``python tools/check_layers.py [--root DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deps import ROOT, Member, iter_requirements, load_workspace, req_name  # noqa: E402

CORE, GPU = "polydiff-core", "polydiff-gpu"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def kind(member: Member) -> str:
    """``gpu``, ``core``, ``domain`` or ``app``."""
    if member.name == GPU:
        return "gpu"
    if member.name == CORE:
        return "core"
    return "app" if member.rel.startswith("apps/") else "domain"


def module_roots(member: Member) -> list[str]:
    """Dotted module prefixes a member owns (``polydiff.core``, ``polydiff.apps.sgmse``)."""
    base = member.path / "src" / "polydiff"
    roots: list[str] = []
    if not base.is_dir():
        return roots
    for child in sorted(base.iterdir()):
        if child.name.startswith((".", "__")):
            continue
        if child.is_dir() and not (child / "__init__.py").exists():  # a nested namespace
            roots += [f"polydiff.{child.name}.{g.name}" for g in sorted(child.iterdir())
                      if g.is_dir() and (g / "__init__.py").exists()]
        elif child.is_dir() or child.suffix == ".py":
            roots.append(f"polydiff.{child.stem}")
    return roots


def owner_map(members: list[Member]) -> dict[str, Member]:
    return {root: m for m in members for root in module_roots(m)}


def owner_of(module: str, owners: dict[str, Member]) -> tuple[Member | None, str]:
    """The member owning ``module`` and the matched root (longest prefix wins)."""
    best = ""
    for root in owners:
        if (module == root or module.startswith(root + ".")) and len(root) > len(best):
            best = root
    return (owners[best], best) if best else (None, "")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted module)`` for each absolute import of a file; ``from a import _b``
    yields ``a._b`` as well as ``a`` (a private name may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield node.lineno, f"{node.module}.{alias.name}"


def declared_siblings(member: Member) -> set[str]:
    out = set()
    for section, req, _published in iter_requirements(member.data):
        if section == "dependencies" or section.startswith("optional-dependencies"):
            name = req_name(req)
            if name.startswith("polydiff-"):
                out.add(name)
    return out


def _private_part(module: str, root: str) -> str | None:
    rest = module[len(root):].lstrip(".")
    for part in rest.split(".") if rest else []:
        if part.startswith("_") and part != "__init__":
            return part
    return None


def _rule(own: Member, target: Member, module: str) -> str | None:
    """The layer rule ``own`` breaks by importing ``module`` of ``target``, if any."""
    own_kind, tkind = kind(own), kind(target)
    if own_kind == "gpu":
        return f"polydiff-gpu imports {module} ({target.name}): gpu imports only torch"
    if own_kind == "core" and tkind != "gpu":
        return (f"polydiff-core imports {module} ({target.name}): core never imports a "
                "domain package or an app")
    if own_kind == "domain" and tkind not in ("core", "gpu"):
        return (f"{own.name} imports {module} ({target.name}): a domain package imports "
                "only core and gpu")
    if own_kind == "app" and tkind == "app":
        return f"{own.name} imports {module} ({target.name}): apps never import each other"
    return None


def _is_cli(module: str) -> bool:
    return module == "polydiff.core.cli" or module.startswith("polydiff.core.cli.")


def check_member(member: Member, owners: dict[str, Member], root: Path) -> list[Violation]:
    src = member.path / "src"
    if not src.is_dir():
        return []
    library = kind(member) != "app"
    deps = declared_siblings(member)
    out: list[Violation] = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        name = path.relative_to(src).with_suffix("").as_posix().replace("/", ".")
        for line, module in dict.fromkeys(imported_modules(path)):
            if not module.startswith("polydiff."):
                continue
            target, troot = owner_of(module, owners)
            if library and _is_cli(module) and name != "polydiff.core.cli":
                out.append(Violation(rel, line, f"library module {name} imports {module}: "
                                     "use polydiff.core.utils (polydiff.core.cli is for apps)"))
            if target is None or target.name == member.name:
                continue
            messages = [_rule(member, target, module)]
            private = _private_part(module, troot)
            if private is not None:
                messages.append(f"imports private module '{private}' of {target.name} "
                                f"({module})")
            if target.name not in deps:
                messages.append(f"{member.name} imports {module} but does not depend on "
                                f"{target.name}")
            out += [Violation(rel, line, m) for m in messages if m]
    return out


def check(root: Path) -> list[Violation]:
    members = list(load_workspace(root)[1].values())
    owners = owner_map(members)
    out: list[Violation] = []
    for m in members:
        out += check_member(m, owners, root)
    return sorted(set(out), key=lambda v: (v.path, v.line, v.message))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="workspace root")
    args = parser.parse_args(argv)
    problems = check(args.root.resolve())
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = len(load_workspace(args.root.resolve())[1])
    print(f"check_layers: {n} members, import layers OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
