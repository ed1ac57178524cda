"""Tests of tools/check_deps.py, tools/ci_matrix.py and tools/release_check.py.

``tools/`` is not a package: the scripts are loaded from their paths. Fake workspaces
(pyproject files only, plus a git history for the CI matrix) live in ``tmp_path``; the
release check builds and installs the real polydiff-core wheel.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


check_deps = _load("check_deps")
ci_matrix = _load("ci_matrix")
release_check = _load("release_check")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def member(root: Path, rel: str, name: str, deps=(), version="0.1.0", sources="",
           changelog=True, tests=True) -> None:
    d = root / rel
    version_line = f'version = "{version}"\n' if version else ""
    _write(d / "pyproject.toml", f'[project]\nname = "{name}"\n{version_line}'
           f"dependencies = {_toml_list(deps)}\n{sources}")
    short = name.removeprefix("polydiff-")
    _write(d / "src" / "polydiff" / short / "__init__.py", f'"""{name}."""\n')
    if changelog:
        _write(d / "CHANGELOG.md", f"# {name}\n")
    if tests:
        _write(d / "tests" / f"test_{short}.py", "def test_ok():\n    assert True\n")


SIBLINGS = ("polydiff-core", "polydiff-speech", "polydiff-gpu", "polydiff-sgmse")


def workspace(root: Path, deps, members=("packages/*", "apps/*"), exclude=(),
              sources=SIBLINGS) -> Path:
    src = "".join(f"{s} = {{ workspace = true }}\n" for s in sources)
    _write(root / "pyproject.toml",
           f'[project]\nname = "polydiff"\nversion = "0.1.0"\ndependencies = {_toml_list(deps)}\n'
           f"[tool.uv]\npackage = false\n[tool.uv.workspace]\nmembers = {_toml_list(members)}\n"
           f"exclude = {_toml_list(exclude)}\n[tool.uv.sources]\n{src}")
    _write(root / "tests" / "test_cross.py", "def test_cross():\n    assert True\n")
    return root


SGMSE_SOURCES = "[tool.uv.sources]\npolydiff-speech = { workspace = true }\n"


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """core <- speech <- apps/sgmse, plus an independent gpu; everything consistent."""
    root = workspace(tmp_path / "ws", ["polydiff-core[diffusers]>=0.1,<0.2",
                                       "polydiff-speech>=0.1,<0.2", "polydiff-gpu>=0.1,<0.2",
                                       "polydiff-sgmse>=0.2,<0.3"])
    member(root, "packages/core", "polydiff-core", ["torch>=2"])
    member(root, "packages/gpu", "polydiff-gpu")
    member(root, "packages/speech", "polydiff-speech", ["polydiff-core[diffusers]>=0.1,<0.2"])
    member(root, "apps/sgmse", "polydiff-sgmse", ["polydiff-speech>=0.1,<0.2"], version="0.2.0",
           sources=SGMSE_SOURCES)
    return root


# ----------------------------------------------------------------------------- check_deps


def test_check_deps_good_workspace(good: Path, capsys) -> None:
    assert check_deps.check(good) == []
    assert check_deps.main(["--root", str(good)]) == 0
    assert "4 member(s) OK" in capsys.readouterr().out


def test_check_deps_bad_member(good: Path, capsys) -> None:
    bad_sources = "[tool.uv.sources]\npolydiff-speech = { path = '../speech' }\n"
    member(good, "packages/bad", "polydiff-bad",
           ["polydiff-core", "polydiff-core[diffusers]", "polydiff-speech>=0.1,<0.2",
            "polydiff-gpu>=0.2", "polydiff-missing>=1"],
           version=None, sources=bad_sources, changelog=False)
    member(good, "packages/stray", "polydiff-stray")
    text = (good / "pyproject.toml").read_text().replace("exclude = []",
                                                         'exclude = ["packages/stray"]')
    (good / "pyproject.toml").write_text(text)

    problems = check_deps.check(good)
    joined = "\n".join(problems)
    assert "'polydiff-core' has no version range" in joined
    assert "'polydiff-core[diffusers]' has no version range" in joined
    assert "polydiff-speech is not { workspace = true }" in joined
    assert "does not admit polydiff-gpu's current version 0.1.0" in joined
    assert "'polydiff-missing>=1' names no workspace member" in joined
    assert "packages/bad: no CHANGELOG.md" in joined
    assert "no static [project] version" in joined
    assert 'meta project lacks member "polydiff-bad' in joined
    assert "packages/stray: has a pyproject.toml but is not a workspace member" in joined
    assert all("bad" in p or "stray" in p for p in problems), problems
    assert check_deps.main(["--root", str(good)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == problems


def test_check_deps_missing_source_and_bare_root(tmp_path: Path) -> None:
    root = workspace(tmp_path, ["polydiff-core"], sources=())
    member(root, "packages/core", "polydiff-core")
    problems = check_deps.check(root)
    assert any("pyproject.toml: dependencies: 'polydiff-core' has no version range" in p
               for p in problems)
    assert any("polydiff-core is not { workspace = true }" in p for p in problems)


# ------------------------------------------------------------------------------ ci_matrix


def _names(sel) -> set[str]:
    return {m.name for m in sel.members}


ALL = {"polydiff-core", "polydiff-gpu", "polydiff-speech", "polydiff-sgmse"}


@pytest.mark.parametrize(
    ("changed", "expected", "root_tests"),
    [
        (["packages/core/src/polydiff/core/x.py"],
         {"polydiff-core", "polydiff-speech", "polydiff-sgmse"}, True),
        (["packages/speech/README.md"], {"polydiff-speech", "polydiff-sgmse"}, True),
        (["apps/sgmse/tests/test_sgmse.py"], {"polydiff-sgmse"}, True),
        (["packages/core/tests/test_core.py"], {"polydiff-core"}, True),
        (["packages/core/tests/test_core.py", "packages/core/src/polydiff/core/x.py"],
         {"polydiff-core", "polydiff-speech", "polydiff-sgmse"}, True),
        (["packages/gpu/pyproject.toml"], {"polydiff-gpu"}, True),
        (["pyproject.toml"], ALL, True),
        (["uv.lock"], ALL, True),
        (["tools/check_deps.py"], ALL, True),
        ([".ci/run"], ALL, True),
        (["tests/test_cross.py"], set(), True),
        (["README.md"], set(), True),
        ([], set(), False),
    ],
)
def test_ci_matrix_select(good: Path, changed, expected, root_tests) -> None:
    sel = ci_matrix.select(good, changed)
    assert _names(sel) == expected
    assert sel.root_tests is root_tests
    assert sel.everything is (expected == ALL)


def _git(root: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


def test_ci_matrix_git_range_and_run(good: Path, capsys) -> None:
    _git(good, "init", "-q", "-b", "main")
    _git(good, "add", "-A")
    _git(good, "commit", "-q", "-m", "init")
    _git(good, "checkout", "-q", "-b", "feature")
    (good / "packages/speech/src/polydiff/speech/__init__.py").write_text('"""changed."""\n')
    _git(good, "commit", "-q", "-am", "change speech")

    assert ci_matrix.changed_files(good, "main..HEAD") == [
        "packages/speech/src/polydiff/speech/__init__.py"]
    assert ci_matrix.changed_files(good, base="main") == ci_matrix.changed_files(good, "main..HEAD")

    assert ci_matrix.main(["main..HEAD", "--json", "--root", str(good)]) == 0
    out = capsys.readouterr().out
    assert '"names": ["polydiff-sgmse", "polydiff-speech"]' in out

    args = ["--base", "main", "--run", "--root", str(good), "--", "-q", "-p", "no:cacheprovider"]
    assert ci_matrix.main(args) == 0
    out = capsys.readouterr().out
    assert "apps/sgmse/tests packages/speech/tests tests" in out

    assert ci_matrix.main(["main..main", "--run", "--root", str(good)]) == 0
    assert "selects no tests" in capsys.readouterr().out


def test_ci_matrix_run_treats_no_tests_as_failure(good: Path, capsys) -> None:
    for f in (good / "packages/gpu/tests").iterdir():
        f.unlink()
    _, members = check_deps.load_workspace(good)
    gpu = members["polydiff-gpu"]
    sel = ci_matrix.Selection(changed=["x"], members=[gpu], reasons={gpu.name: "changed"})
    assert ci_matrix.run_pytest(good, sel, ["-q", "-p", "no:cacheprovider"]) == 5
    assert "collected no tests" in capsys.readouterr().err
    (good / "packages/gpu/tests").rmdir()
    assert ci_matrix.run_pytest(good, sel, []) == 1
    assert "does not exist" in capsys.readouterr().err


def test_ci_matrix_real_workspace() -> None:
    sel = ci_matrix.select(REPO, ["packages/core/src/polydiff/core/__init__.py"])
    assert "polydiff-core" in _names(sel)
    assert ci_matrix.select(REPO, ["uv.lock"]).everything


# -------------------------------------------------------------------------- release_check


def test_release_check_wheel_metadata(good: Path, tmp_path: Path) -> None:
    _, members = check_deps.load_workspace(good)
    wheel = tmp_path / "polydiff_speech-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("polydiff/__init__.py", "")
        zf.writestr("polydiff/speech/__init__.py", "")
        zf.writestr("polydiff_speech-0.1.0.dist-info/METADATA",
                    "Metadata-Version: 2.4\nName: polydiff-speech\nVersion: 0.1.0\n"
                    "Requires-Dist: polydiff-core @ file:///work/packages/core\n"
                    "Requires-Dist: polydiff-gpu\nRequires-Dist: numpy>=1\n")
    problems, modules = release_check.check_wheel(wheel, members["polydiff-speech"], members)
    assert modules == ["polydiff.speech"]
    joined = "\n".join(problems)
    assert "direct reference" in joined
    assert "'polydiff-gpu' has no version range" in joined
    assert "namespace" in joined
    assert len(problems) == 3


def test_release_check_core(capsys) -> None:
    """Build the real polydiff-core wheel, install it in a clean venv, import it there."""
    rc = release_check.main(["--package", "polydiff-core", "--no-deps"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "release_check: OK polydiff-core" in out
    assert "imported polydiff.core from" in out and "/venv/" in out


def test_release_check_speech(capsys) -> None:
    """The polydiff-speech wheel (with its core and gpu siblings) installs in a clean venv and
    imports from there."""
    rc = release_check.main(["--package", "polydiff-speech", "--no-deps"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "release_check: OK polydiff-speech" in out and "/venv/" in out


def test_speech_pins_torchaudio_to_its_torch_build() -> None:
    """torchaudio's wheels are built against one torch release: a range such as
    ``torchaudio==2.11.*`` let a clean ``pip install polydiff-speech`` pick torchaudio 2.11.1
    beside torch 2.11.0, which fails to import (undefined symbol). Both are pinned exactly,
    to the same release, and the lock agrees."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "packages/speech/pyproject.toml").read_text())
    pins = {}
    for text in deps["project"]["dependencies"]:
        req = Requirement(text)
        if req.name in ("torch", "torchaudio"):
            (spec,) = req.specifier
            assert spec.operator == "==" and "*" not in spec.version, text
            pins[req.name] = spec.version
    assert pins.keys() == {"torch", "torchaudio"} and pins["torch"] == pins["torchaudio"]
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    assert locked["torchaudio"] == pins["torchaudio"] and locked["torch"] == pins["torch"]


# ----------------------------------------------------------------------------- shell tools
@pytest.mark.parametrize("script", sorted(p.name for p in TOOLS.glob("*.sh")))
def test_shell_tools_parse(script: str) -> None:
    """Every tools/*.sh is valid bash (they run on machines where a syntax error would cost
    a whole device session)."""
    proc = subprocess.run(["bash", "-n", str(TOOLS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_device_wheels_reads_pins_from_the_lock() -> None:
    """device_wheels.sh asks uv.lock for each package's version; an unknown set is refused
    with exit 2 before anything is downloaded."""
    proc = subprocess.run(["bash", str(TOOLS / "device_wheels.sh"), "nonsense"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown set" in proc.stderr
    text = (TOOLS / "device_wheels.sh").read_text()
    lock = (REPO / "uv.lock").read_text()
    for name in ("pesq", "pystoi", "soundfile", "espeakng-loader", "pyroomacoustics", "cffi",
                 "diffusers"):
        assert name in text and f'name = "{name}"' in lock
