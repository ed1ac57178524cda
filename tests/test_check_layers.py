"""tools/check_layers.py on fake workspaces: each rule fires on a violation and only then."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "tools/check_layers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


check_layers = _load()


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _member(root: Path, rel: str, name: str, deps=(), modules=None) -> None:
    d = root / rel
    dl = ", ".join(f'"{x}>=0.1,<0.2"' for x in deps)
    _w(d / "pyproject.toml", f'[project]\nname = "{name}"\nversion = "0.1.0"\n'
       f"dependencies = [{dl}]\n")
    for mod, text in (modules or {}).items():
        _w(d / "src" / "polydiff" / mod, text)


def _workspace(tmp: Path, extra: dict[str, str] | None = None, dom_deps=None) -> Path:
    _w(tmp / "pyproject.toml", '[project]\nname = "polydiff"\nversion = "0.1.0"\n'
       '[tool.uv.workspace]\nmembers = ["packages/*", "apps/*"]\n')
    _member(tmp, "packages/gpu", "polydiff-gpu", modules={"gpu/__init__.py": "import torch\n"})
    _member(tmp, "packages/core", "polydiff-core", ["polydiff-gpu"], {
        "core/__init__.py": "", "core/_private.py": "", "core/cli.py": "",
        "core/utils.py": "", "core/train.py": "from polydiff.gpu import x\n"})
    _member(tmp, "packages/speech", "polydiff-speech",
            dom_deps if dom_deps is not None else ["polydiff-core"],
            {"speech/__init__.py": "from polydiff.core.utils import atomic_write\n"})
    _member(tmp, "packages/series", "polydiff-series", ["polydiff-core"],
            {"series/__init__.py": ""})
    _member(tmp, "apps/sgmse", "polydiff-sgmse", ["polydiff-speech", "polydiff-core"],
            {"apps/sgmse/__init__.py": "from polydiff.core.cli import run_cli\n"})
    _member(tmp, "apps/other", "polydiff-other", ["polydiff-core"],
            {"apps/other/__init__.py": ""})
    for rel, text in (extra or {}).items():
        _w(tmp / rel, text)
    return tmp


def test_clean_workspace_passes(tmp_path):
    assert check_layers.check(_workspace(tmp_path)) == []
    assert check_layers.main(["--root", str(tmp_path)]) == 0


@pytest.mark.parametrize("rel, text, needle", [
    ("packages/gpu/src/polydiff/gpu/x.py", "from polydiff.core import y\n", "gpu imports only"),
    ("packages/core/src/polydiff/core/x.py", "import polydiff.speech\n", "core never imports"),
    ("packages/core/src/polydiff/core/x.py", "def f():\n    from polydiff.apps.sgmse import m\n",
     "core never imports"),
    ("packages/speech/src/polydiff/speech/x.py", "from polydiff.series import a\n",
     "imports only core and gpu"),
    ("packages/speech/src/polydiff/speech/x.py", "from polydiff.core.cli import atomic_write\n",
     "use polydiff.core.utils"),
    ("packages/core/src/polydiff/core/x.py", "from polydiff.core.cli import emit\n",
     "use polydiff.core.utils"),
    ("packages/speech/src/polydiff/speech/x.py", "from polydiff.core._private import f\n",
     "private module '_private'"),
    ("packages/speech/src/polydiff/speech/x.py", "from polydiff.core import _private\n",
     "private module '_private'"),
    ("apps/sgmse/src/polydiff/apps/sgmse/x.py", "import polydiff.apps.other\n",
     "apps never import each other"),
])
def test_each_rule_fires(tmp_path, rel, text, needle):
    root = _workspace(tmp_path, {rel: text})
    problems = check_layers.check(root)
    assert problems and any(needle in p.message for p in problems), problems
    assert all(p.path == rel for p in problems)
    assert check_layers.main(["--root", str(root)]) == 1


def test_undeclared_sibling_dependency(tmp_path):
    root = _workspace(tmp_path, dom_deps=[])
    problems = check_layers.check(root)
    assert [p.message for p in problems] == [
        "polydiff-speech imports polydiff.core.utils but does not depend on polydiff-core"]


def test_the_repository_itself_passes():
    assert check_layers.check(REPO) == []
