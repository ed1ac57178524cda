"""Tests of tools/check_deps.py, tools/ci_matrix.py, tools/release_check.py, the device tooling
(tools/build_sdist.py, tools/device_wheels.sh, tools/gpu_check.sh) and tools/bench/train_step.py.

``tools/`` is not a package: the scripts are loaded from their paths. Fake workspaces
(pyproject files only, plus a git history for the CI matrix) live in ``tmp_path``; the
release check builds and installs the real polydiff-core and polydiff-tsdiff wheels (every
member in the slow suite).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
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


def test_release_check_top_packages_follow_the_layout() -> None:
    """Importable packages come from the wheel's files: domain packages (polydiff.<x>), apps
    under a namespace folder (polydiff.apps.<x>), the umbrella CLI, nested subpackages."""
    names = ["polydiff/core/__init__.py", "polydiff/core/nn/__init__.py",
             "polydiff/apps/tsdiff/__init__.py", "polydiff/apps/tsdiff/main.py",
             "polydiff/cli/__init__.py", "polydiff/apps/sgmse/sub/__init__.py",
             "polydiff/apps/sgmse/__init__.py", "polydiff/stray.py", "other/__init__.py",
             "polydiff_x-0.1.0.dist-info/METADATA"]
    assert release_check.top_packages(names) == [
        "polydiff.apps.sgmse", "polydiff.apps.tsdiff", "polydiff.cli", "polydiff.core"]
    assert release_check.top_packages(["polydiff/__init__.py"]) == []


def test_release_check_app_wheel_metadata(good: Path, tmp_path: Path) -> None:
    _, members = check_deps.load_workspace(good)
    wheel = tmp_path / "polydiff_sgmse-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("polydiff/apps/sgmse/__init__.py", "")
        zf.writestr("polydiff_sgmse-0.2.0.dist-info/METADATA",
                    "Metadata-Version: 2.4\nName: polydiff-sgmse\nVersion: 0.2.0\n")
    problems, modules = release_check.check_wheel(wheel, members["polydiff-sgmse"], members)
    assert problems == [] and modules == ["polydiff.apps.sgmse"]


@pytest.mark.parametrize("member", [
    "polydiff-core",
    "polydiff-tsdiff",  # an app: polydiff/apps/tsdiff/, no polydiff/<name>/ package
])
def test_release_check_real_wheels(member: str, capsys) -> None:
    """Build the real wheel (and its siblings'), install it in a clean venv, import it there."""
    rc = release_check.main(["--package", member, "--no-deps"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"release_check: OK {member}" in out
    module = {"polydiff-core": "polydiff.core", "polydiff-tsdiff": "polydiff.apps.tsdiff"}
    assert f"imported {module[member]} from" in out and "/venv/" in out


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~30 s per member on a busy 2-core machine
def test_release_check_every_member(capsys) -> None:
    """Every workspace member releases: packages, apps, and whatever is added later."""
    _, members = check_deps.load_workspace(REPO)
    rc = release_check.main(["--all", "--no-deps"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{len(members)} of {len(members)} members OK" in out
    for name in members:
        assert f"release_check: OK {name} " in out, name


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


def test_no_index_host_in_the_repository() -> None:
    """Device tooling goes through the client's configured index: no package-index URL is
    written anywhere (uv.lock's registry lines name no /simple/ page)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "grep", "-inE", r"https?://[^ ]*/simple/"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and not proc.stdout, proc.stdout
    text = (TOOLS / "device_wheels.sh").read_text()
    assert "curl" not in text and "--index-url" not in text and "http" not in text


# ----------------------------------------------------------------------------- build_sdist
build_sdist = _load("build_sdist")

PESQ_LIKE_SETUP = '''\
from setuptools import setup, Extension


class LazyNumpyExtension(Extension):
    @property
    def include_dirs(self):
        import numpy
        return self._include + [numpy.get_include()]

    @include_dirs.setter
    def include_dirs(self, dirs):
        self._include = dirs


setup(
    name="{name}",
    version="0.0.1",
    packages=["{name}"],
    ext_package="{name}",
    ext_modules={ext},
    setup_requires=['setuptools>=18.0', 'cython', 'numpy',
                    'pytest-runner'],
    tests_require=['pytest'],
    classifiers=["Programming Language :: Python"]
)
'''


def _sdist(tmp_path: Path, name: str, ext: bool) -> Path:
    """A pesq-shaped sdist: setup_requires with pytest-runner, optionally a Cython extension
    whose include directories import NumPy lazily."""
    import tarfile

    root = tmp_path / "src" / f"{name}-0.0.1"
    ext_src = (f'[LazyNumpyExtension("cyext", ["{name}/cyext.pyx"], include_dirs=["{name}"])]'
               if ext else "[]")
    _write(root / "setup.py", PESQ_LIKE_SETUP.format(name=name, ext=ext_src))
    _write(root / "setup.cfg", "[egg_info]\ntag_build = \n\n[options]\nsetup_requires =\n"
           "    pytest-runner\nzip_safe = False\n")
    _write(root / name / "__init__.py", "VALUE = 42\n")
    if ext:
        _write(root / name / "cyext.pyx", "cimport numpy as cnp\n\ndef twice(int x):\n"
               "    return 2 * x\n")
    sdist = tmp_path / f"{name}-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return sdist


def test_build_sdist_strips_setup_requires_only() -> None:
    text = PESQ_LIKE_SETUP.format(name="pkg", ext="[]")
    out, removed = build_sdist.strip_setup_py(text)
    assert removed == ["setup_requires", "tests_require"]
    assert "setup_requires" not in out and "tests_require" not in out
    assert "pytest-runner" not in out and 'classifiers=["Programming Language' in out
    assert 'ext_package="pkg",' in out and "def include_dirs" in out
    compile(out, "setup.py", "exec")
    assert build_sdist.strip_setup_py(out) == (out, [])  # idempotent
    cfg, gone = build_sdist.strip_setup_cfg("[options]\nsetup_requires =\n    pytest-runner\n"
                                            "    numpy\nzip_safe = False\n[other]\n"
                                            "setup_requires = kept\n")
    assert gone == ["setup_requires"]
    assert cfg == "[options]\nzip_safe = False\n[other]\nsetup_requires = kept\n"


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a machine with no package index: pip's configuration ignored, no index,
    no find-links."""
    empty = tmp_path / "no-links"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(empty)}


def test_build_sdist_setup_requires_without_an_index(tmp_path: Path) -> None:
    """What failed on the GPU image: a setuptools that still installs setup_requires tries to
    fetch pytest-runner when setup.py runs, and there is no index. The patched tree runs."""
    sdist = _sdist(tmp_path, "fakepesq", ext=False)
    pythons = [p for p in (shutil.which("python3"), sys.executable) if p]
    probe = "import setuptools, importlib.util as u; assert u.find_spec('ptr') is None"
    python = next((p for p in pythons if subprocess.run([p, "-c", probe],
                                                        capture_output=True).returncode == 0),
                  None)
    if python is None:
        pytest.skip("no interpreter with setuptools and without pytest-runner")
    env = _offline_env(tmp_path)
    plain = build_sdist.unpack(sdist, tmp_path / "plain")
    before = subprocess.run([python, "setup.py", "--name"], cwd=plain, env=env,
                            capture_output=True, text=True, timeout=120)
    if before.returncode == 0:
        pytest.skip(f"{python}'s setuptools no longer installs setup_requires itself")
    assert "pytest-runner" in before.stdout + before.stderr
    patched = build_sdist.unpack(sdist, tmp_path / "patched")
    assert build_sdist.patch_tree(patched) == ["setup.py:setup_requires",
                                               "setup.py:tests_require",
                                               "setup.cfg:setup_requires"]
    after = subprocess.run([python, "setup.py", "--name"], cwd=patched, env=env,
                           capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and after.stdout.strip().endswith("fakepesq"), after.stderr


def test_build_sdist_builds_a_cython_extension_offline(tmp_path: Path) -> None:
    """The path tools/gpu_check.sh takes for pesq: the tool builds the wheel of a pesq-shaped
    sdist (Cython extension, lazy NumPy include) with the interpreter's own setuptools,
    Cython and NumPy and nothing fetched; the wheel imports and runs."""
    import zipfile

    probe = "import setuptools, Cython, numpy"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        pytest.skip("needs setuptools, Cython and NumPy in this interpreter")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("needs a C compiler")
    sdist = _sdist(tmp_path, "fakepesq", ext=True)
    proc = subprocess.run([sys.executable, str(TOOLS / "build_sdist.py"), str(sdist), "-o",
                           str(tmp_path / "wheels")], env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dropped setup.py:setup_requires" in proc.stderr
    wheel = Path(proc.stdout.strip())
    assert wheel.parent == tmp_path / "wheels" and wheel.name.startswith("fakepesq-0.0.1-")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    run = subprocess.run([sys.executable, "-c", "import fakepesq, fakepesq.cyext as c; "
                          "print(fakepesq.VALUE, c.twice(21))"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                         text=True, timeout=60)
    assert run.stdout.split() == ["42", "42"], run.stderr
    assert sdist.stat().st_size > 0  # the original is left alone


def test_build_sdist_bad_input(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not a tarball")
    assert build_sdist.main([str(bad)]) == 2
    assert "cannot extract" in capsys.readouterr().err
    assert build_sdist.main([str(tmp_path / "missing.zip")]) == 2


def test_build_sdist_patched_copy(tmp_path: Path) -> None:
    import tarfile

    sdist = _sdist(tmp_path, "fakepesq", ext=False)
    out = tmp_path / "patched.tar.gz"
    assert build_sdist.main([str(sdist), "--patched-sdist", str(out)]) == 0
    with tarfile.open(out) as tar:
        setup = tar.extractfile("fakepesq-0.0.1/setup.py").read().decode()
    assert "setup_requires" not in setup and 'name="fakepesq"' in setup


# ----------------------------------------------------------------------------- GPU check
@pytest.mark.skipif(__import__("torch").cuda.is_available(),
                    reason="checks the CPU behaviour of the script (a GPU runs the stages)")
def test_gpu_check_stages_are_bounded_and_recorded(tmp_path: Path) -> None:
    """tools/gpu_check.sh on a machine without CUDA: every stage runs under its limit (the
    CUDA tests are cut at 1 s here), fails rather than passes, and is recorded in the summary
    written into GPU_CHECK_OUT; the skipped benchmarks say why; the exit status is 1."""
    import json

    out, wheels = tmp_path / "out", tmp_path / "no-wheels"
    wheels.mkdir()
    env = {**os.environ, "GPU_CHECK_OUT": str(out), "GPU_CHECK_BENCH": "train_step",
           "GPU_CHECK_TESTS_S": "1", "GPU_CHECK_TRAIN_STEP_S": "2",
           "GPU_CHECK_TRAIN_STEP_GRACE_S": "150",  # imports alone can take 20 s on a busy CPU
           "GPU_CHECK_TRAIN_STEP_ARGS": "--quick --fp32 off", "GPU_CHECK_WHEEL_DIR": str(wheels),
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(TOOLS / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu_check_summary.json").read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    assert "wheels" not in stages  # nothing to install
    assert stages["cuda_tests"]["rc"] in (124, 137) and stages["cuda_tests"]["limit_s"] == 1
    assert "hit its 1 s limit" in (out / "cuda_tests.log").read_text()
    assert stages["graphs"]["rc"] != 0  # "benchmark needs CUDA"
    assert stages["sgmse"] == {"stage": "sgmse", "skipped": "not in GPU_CHECK_BENCH"}
    # the bench stops at its own 2 s deadline, inside the stage's limit, with its JSON written
    assert stages["train_step"]["rc"] == 0 and stages["train_step"]["limit_s"] == 152
    res = json.loads((out / "train_step.json").read_text())
    assert res["complete"] is False and res["deadline_s"] == 2
    assert "stopped at the time limit" in (out / "train_step.log").read_text()
    assert summary["failed"] == 1


# ----------------------------------------------------------------------------- train_step
def _load_bench(name: str):
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TOOLS / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def test_train_step_whole_loop_is_sample_ddim() -> None:
    """The loop polydiff_opt captures in one graph is the engine's sample_ddim, step for
    step (bitwise on CPU, where the loop runs eagerly)."""
    import torch

    from polydiff.core.samplers import sample_ddim
    from polydiff.gpu import GraphedLoop

    bench = _load_bench("train_step")
    torch.manual_seed(0)
    net = bench.UNet(bench.poly_config("digits")).eval()
    for p in net.parameters():  # polydiff zero-initialises output convolutions
        torch.nn.init.normal_(p, std=0.05)
    process = bench.VPDiscrete.linear(1000)
    den = bench.ModelDenoiser(net, process, "epsilon", time_input=process.model_timestep)
    ts = bench.time_grid(process, 6, "uniform")
    x = torch.randn(3, 1, 8, 8)
    step, n = bench.ddim_loop_step(den, ts, 3, torch.device("cpu"))
    with torch.no_grad():
        want = sample_ddim(den, x.clone(), ts, disable=True)
        got = GraphedLoop(step, n, x)(x)
    assert n == 6 and torch.equal(got, want) and want.abs().max() > 1


def test_train_step_stops_at_its_deadline(tmp_path: Path) -> None:
    """A run that cannot finish in its --deadline stops there, exits 0 and writes what it
    measured, marked incomplete."""
    import json

    out = tmp_path / "ts.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench" / "train_step.py"), "--quick",
                           "--deadline", "2", "--fp32", "off", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["complete"] is False and res["deadline_s"] == 2
    assert any("stopped at the time limit" in n for n in res["notes"])
    assert "stopped at the time limit" in proc.stderr


@pytest.mark.slow
def test_train_step_quick_run_passes_its_checks(tmp_path: Path) -> None:
    """The whole --quick run on CPU: every variant timed, every numerical check passes."""
    import json

    out = tmp_path / "ts.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench" / "train_step.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    cfg = res["configs"]["digits"]
    assert res["complete"] and set(cfg["variants"]) == {
        "diffusers_fp32", "diffusers_bf16", "polydiff_fp32", "polydiff_opt", "polydiff_compiled"}
    assert all(v["sample_finite"] for v in cfg["variants"].values())
    checks = cfg["opt_check"]
    assert checks["sampling"]["polydiff_opt"]["ok"] and checks["sampling"]["polydiff_compiled"][
        "ok"]
    assert checks["training"]["graph_vs_eager_step"]["ok"]
    assert checks["training"]["compiled_vs_eager_grad"]["ok"]
