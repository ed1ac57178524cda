"""tools/type_check.py on a fake one-member workspace: a new type error fails the check,
fixed errors lower the ceiling, a missing py.typed marker fails."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("mypy")


def _load():
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("type_check", REPO / "tools/type_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["type_check"] = mod
    spec.loader.exec_module(mod)
    return mod


type_check = _load()


def _workspace(root: Path, body: str, typed: bool = True) -> Path:
    (root / "tools").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "polydiff"\nversion = "0.1.0"\n'
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        '[tool.mypy]\nnamespace_packages = true\nexplicit_package_bases = true\n'
        'ignore_missing_imports = true\n')
    pkg = root / "packages/demo/src/polydiff/demo"
    pkg.mkdir(parents=True, exist_ok=True)
    (root / "packages/demo/pyproject.toml").write_text(
        '[project]\nname = "polydiff-demo"\nversion = "0.1.0"\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(body)
    if typed:
        (pkg / "py.typed").write_text("")
    elif (pkg / "py.typed").exists():
        (pkg / "py.typed").unlink()
    return root


ONE = "def f(x: int) -> int:\n    return x\n\n\nf('a')\n"
TWO = ONE + "f('b')\n"


def test_ceiling_ratchet(tmp_path, capsys):
    root = _workspace(tmp_path, ONE)
    assert type_check.main(["--root", str(root)]) == 1  # a new file's ceiling is 0
    assert "1 type errors, ceiling 0" in capsys.readouterr().out
    assert type_check.main(["--root", str(root), "--update"]) == 1  # would raise 0 -> 1
    assert type_check.main(["--root", str(root), "--update", "--allow-raise"]) == 0
    baseline = json.loads((root / "tools/type_baseline.json").read_text())
    assert baseline == {"packages/demo/src/polydiff/demo/mod.py": 1}
    assert type_check.main(["--root", str(root)]) == 0
    _workspace(root, TWO)
    assert type_check.main(["--root", str(root)]) == 1
    _workspace(root, "x: int = 1\n")
    assert type_check.main(["--root", str(root)]) == 0
    assert "fewer than the ceilings" in capsys.readouterr().out


def test_missing_py_typed_fails(tmp_path, capsys):
    root = _workspace(tmp_path, "x: int = 1\n", typed=False)
    assert type_check.main(["--root", str(root)]) == 1
    assert "no py.typed marker" in capsys.readouterr().out
