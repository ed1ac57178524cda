"""Shared CLI helpers: typed configs, atomic files, progress, errors, output, app discovery."""

import json
import math
import os
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import pytest

from polydiff.core import cli
from polydiff.core.cli import (
    CLIError,
    ConfigError,
    DemoReport,
    atomic_path,
    atomic_write,
    config_to_dict,
    discover_apps,
    emit,
    load_app,
    load_config,
    progress,
    run_cli,
    save_config,
)


class Norm(Enum):
    BATCH = "batch"
    LAYER = "layer"


@dataclass
class Model:
    width: int = 8
    depth: int = 2
    act: Literal["relu", "gelu"] = "relu"
    dropout: float = 0.0
    norm: Norm = Norm.BATCH


@dataclass
class Train:
    steps: int = 10
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    out: Path = Path("runs")
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    amp: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


@dataclass
class Config:
    name: str = "run"
    model: Model = field(default_factory=lambda: Model(width=64))
    train: Train = field(default_factory=Train)


@dataclass
class Required:
    path: Path
    n: int = 1


def _toml(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# ----------------------------------------------------------------------------- configs
def test_defaults_without_file_or_overrides():
    assert load_config(Config, None, []) == Config()


def test_toml_and_overrides_nested(tmp_path):
    path = _toml(tmp_path, """
        name = "exp"
        [model]
        depth = 4
        act = "gelu"
        [train]
        betas = [0.8, 0.95]
        out = "o/x"
        steps = 7
        extra = { a = 1, b = 2.5 }
    """)
    cfg = load_config(Config, path, ["train.steps=5", "train.seed=3", "train.tags=a, b",
                                     "train.amp=yes", "train.lr=2e-4", "model.norm=layer",
                                     "model.dropout=1"])
    assert cfg.name == "exp"
    assert cfg.model == Model(width=64, depth=4, act="gelu", dropout=1.0, norm=Norm.LAYER)
    assert cfg.train.steps == 5 and cfg.train.seed == 3 and cfg.train.lr == 2e-4
    assert cfg.train.betas == (0.8, 0.95) and isinstance(cfg.train.betas, tuple)
    assert cfg.train.out == Path("o/x") and cfg.train.tags == ["a", "b"] and cfg.train.amp
    assert cfg.train.extra == {"a": 1.0, "b": 2.5}
    again = load_config(Config, path, ["train.seed=none", "train.betas=[0.5, 0.6]",
                                       "train.tags=", "train.extra={c = 3}"])
    assert again.train.seed is None and again.train.betas == (0.5, 0.6)
    assert again.train.tags == [] and again.train.extra == {"c": 3.0}


def test_nested_default_instance_is_the_base():
    cfg = load_config(Config, None, ["model.depth=3"])
    assert cfg.model.width == 64 and cfg.model.depth == 3  # default_factory's width kept


@pytest.mark.parametrize("text, needle", [
    ('[model]\nwidth = "wide"', "'model.width' expects int"),
    ("[model]\nwidth = 1.5", "'model.width' expects int"),
    ("[train]\namp = 1", "'train.amp' expects bool"),
    ('[train]\nbetas = [0.1, "x"]', "'train.betas[1]' expects float"),
    ("[train]\nbetas = [0.1, 0.2, 0.3]", "expects 2 values, got 3"),
    ('[model]\nact = "tanh"', "must be one of 'relu', 'gelu'"),
    ("model = 3", "is a section"),
    ("[train]\nsteps = -1", "steps must be >= 0"),
])
def test_wrong_types_in_toml(tmp_path, text, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(Config, _toml(tmp_path, text), [])
    assert needle in _one_line_error(exc)


@pytest.mark.parametrize("override, needle", [
    ("train.steps=abc", "'train.steps' expects int, got 'abc'"),
    ("train.lr=fast", "'train.lr' expects float"),
    ("train.amp=maybe", "'train.amp' expects bool"),
    ("model.act=tanh", "must be one of 'relu', 'gelu'; got 'tanh'"),
    ("model.norm=group", "must be one of BATCH, LAYER"),
    ("train.betas=1,2,3", "expects 2 values, got 3"),
    ("train.betas=[1, 2", "cannot parse"),
    ("model=3", "is a section"),
    ("steps", "must look like key=value"),
    ("=3", "must look like key=value"),
    ("name.first=x", "expects str"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(Config, None, [override])
    assert needle in _one_line_error(exc)


def test_unknown_keys(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(Config, _toml(tmp_path, "foo = 1"), [])
    assert "unknown config key 'foo'" in _one_line_error(exc)
    with pytest.raises(ConfigError) as exc:
        load_config(Config, None, ["model.widht=3"])
    assert "'model.widht'; did you mean 'model.width'?" in _one_line_error(exc)
    with pytest.raises(ConfigError) as exc:
        load_config(Config, _toml(tmp_path, "[train.sub]\nx = 1"), [])
    assert "'train.sub'" in _one_line_error(exc)


def test_corrupt_and_missing_files(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(Config, _toml(tmp_path, "name = \n[model\nwidth = 3"), [])
    assert "not valid TOML" in _one_line_error(exc) and "cfg.toml" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(Config, tmp_path / "absent.toml", [])
    assert "cannot read config" in _one_line_error(exc)
    with pytest.raises(ConfigError) as exc:
        load_config(Config, _toml(tmp_path, "{", name="c.json"), [])
    assert "not valid JSON" in _one_line_error(exc)


def test_required_fields():
    with pytest.raises(ConfigError) as exc:
        load_config(Required, None, ["n=2"])
    assert "missing config key 'path'" in _one_line_error(exc)
    assert load_config(Required, None, ["path=a/b"]) == Required(Path("a/b"))
    with pytest.raises(TypeError):
        load_config(Model(), None, [])  # an instance, not a class


def test_add_config_args(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_config_args(parser)
    path = _toml(tmp_path, "[model]\ndepth = 5")
    args = parser.parse_args(["--config", str(path), "--set", "name=a", "train.steps=2",
                              "--set", "model.act=gelu"])
    cfg = load_config(Config, args.config, args.set)
    assert (cfg.name, cfg.train.steps, cfg.model.depth, cfg.model.act) == ("a", 2, 5, "gelu")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = Config(name='we"ird\nname \u00e9\\', model=Model(dropout=math.inf, norm=Norm.LAYER),
                 train=Train(tags=["x y", ""], extra={"k.1": 0.5}, out=Path("a b/c"), seed=4))
    path = save_config(cfg, tmp_path / f"sub/cfg{suffix}")
    assert load_config(Config, path, []) == cfg
    assert sorted(os.listdir(path.parent)) == [path.name]
    data = config_to_dict(cfg)
    assert cli.config_from_dict(Config, json.loads(json.dumps(data))) == cfg
    assert data["train"]["out"] == "a b/c" and data["train"]["betas"] == [0.9, 0.99]
    assert data["model"]["norm"] == "layer"
    if suffix == ".toml":
        assert tomllib.loads(path.read_text(encoding="utf-8"))["name"] == cfg.name
    none_cfg = Config(train=Train(seed=None))
    assert load_config(Config, save_config(none_cfg, path), []) == none_cfg


# ----------------------------------------------------------------------------- files
def test_atomic_write_and_path(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_umask()
    with atomic_path(tmp_path / "x.wav") as tmp:
        assert tmp.suffix == ".wav" and tmp.parent == tmp_path and tmp.exists()
        tmp.write_bytes(b"RIFF")
    assert (tmp_path / "x.wav").read_bytes() == b"RIFF"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]
    fresh = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(fresh) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not fresh.exists() and os.listdir(tmp_path) == ["model.bin"]


# ----------------------------------------------------------------------------- progress
def test_progress_quiet_in_ci(monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    assert cli.quiet()
    assert list(progress(range(5), desc="work")) == [0, 1, 2, 3, 4]
    assert list(progress(iter("ab"), total=2, disable=True)) == ["a", "b"]
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- errors
def _raiser(exc: BaseException):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc, code, line", [
    (CLIError("bad --steps"), 2, "tool: error: bad --steps"),
    (CLIError("busy", exit_code=3), 3, "tool: error: busy"),
    (ConfigError("unknown config key 'x'"), 2, "tool: error: unknown config key 'x'"),
    (ValueError("shape\n  mismatch"), 2, "tool: error: shape mismatch"),
    (FileNotFoundError(2, "No such file or directory", "in.wav"), 2,
     "tool: error: No such file or directory: 'in.wav'"),
])
def test_run_cli_bad_input_is_one_line(capsys, monkeypatch, exc, code, line):
    monkeypatch.delenv("POLYDIFF_DEBUG", raising=False)
    assert run_cli(_raiser(exc), [], prog="tool") == code
    assert capsys.readouterr().err == line + "\n"


def test_run_cli_codes(capsys):
    assert run_cli(lambda argv: None, []) == 0
    assert run_cli(lambda argv: 4, []) == 4
    assert run_cli(_raiser(SystemExit(2)), []) == 2
    assert run_cli(_raiser(KeyboardInterrupt()), [], prog="tool") == 130
    capsys.readouterr()
    assert run_cli(_raiser(RuntimeError("bug")), [], prog="tool") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: bug" in err


def test_run_cli_subprocess(tmp_path):
    script = tmp_path / "tinyapp.py"
    script.write_text(textwrap.dedent("""
        import argparse, sys
        from polydiff.core.cli import ConfigError, run_cli

        def _main(argv):
            parser = argparse.ArgumentParser(prog="tinyapp")
            parser.add_argument("--steps", type=int, default=1)
            args = parser.parse_args(argv)
            if args.steps < 0:
                raise ConfigError(f"steps must be >= 0, got {args.steps}")
            print("ok")
            return 0

        sys.exit(run_cli(_main, prog="tinyapp"))
    """))
    env = {**os.environ, "POLYDIFF_DEBUG": ""}

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=120, env=env)

    ok, bad, usage = run(), run("--steps=-2"), run("--nope")
    assert ok.returncode == 0 and ok.stdout == "ok\n"
    assert bad.returncode == 2 and bad.stderr == "tinyapp: error: steps must be >= 0, got -2\n"
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    lines = usage.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: tinyapp")
    assert lines[1].startswith("tinyapp: error: unrecognized arguments: --nope")


def test_cli_module_does_not_import_torch():
    code = ("import sys, polydiff.core.cli; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- output
def test_emit_json_and_text(capsys):
    result = {"path": Path("a/b"), "loss": math.nan, "n": 3, "cfg": Model(),
              "nested": {"x": 0.123456789}, "rows": [{"a": 1, "b": 2.5}, {"a": 10}]}
    emit(result, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == "a/b" and data["loss"] is None and data["cfg"]["act"] == "relu"
    assert data["rows"][1] == {"a": 10}
    emit(result, as_json=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "path      a/b" and "nested.x  0.123457" in out and "n         3" in out
    assert out[-5:] == ["rows:", "  a   b", "  --  ---", "  1   2.5", "  10  -"]


# ----------------------------------------------------------------------------- apps
class _FakeApp:
    name = "fake"
    summary = "a fake app"

    def demo(self, out_dir: Path, *, quick: bool) -> DemoReport:
        return DemoReport(title="fake", metrics={"x": 1.0})


fake_app = _FakeApp()
not_an_app = object()


def _eps(*specs):
    return [EntryPoint(n, f"{__name__}:{attr}", cli.APP_GROUP) for n, attr in specs]


def test_discover_and_load(monkeypatch):
    monkeypatch.setattr(cli, "entry_points", lambda group: _eps(
        ("zeta", "fake_app"), ("alpha", "_FakeApp"), ("broken", "not_an_app")))
    monkeypatch.setenv(cli.EXTRA_APPS_ENV, f"extra={__name__}:fake_app, zeta={__name__}:x")
    apps = discover_apps()
    assert list(apps) == ["alpha", "broken", "extra", "zeta"]
    assert apps["zeta"].value.endswith(":fake_app")  # registered entry points win
    assert apps["alpha"].distribution is None
    assert isinstance(apps["alpha"].load(), _FakeApp)  # classes are instantiated
    assert load_app("extra") is fake_app
    assert isinstance(load_app("zeta"), cli.App)
    with pytest.raises(CLIError, match="not a polydiff app: missing name, summary, demo"):
        load_app("broken")
    with pytest.raises(CLIError, match=r"unknown app 'nope' \(installed: alpha, broken"):
        load_app("nope")
    monkeypatch.setenv(cli.EXTRA_APPS_ENV, "garbage")
    with pytest.raises(CLIError, match="name=module:attr"):
        discover_apps()


def test_atomic_writes_follow_the_umask(tmp_path):
    """Files and folders written atomically get the umask's permissions, like their
    neighbours (tempfile alone would leave 0600 files and 0700 folders)."""
    import os
    import stat

    from polydiff.core.utils import atomic_dir, atomic_write

    old = os.umask(0o022)
    try:
        f = atomic_write(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "model") as d:
            (d / "w.bin").write_bytes(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_pretrained_uses_the_umask(tmp_path):
    import os
    import stat

    from polydiff.core.nn import UNet, UNetConfig

    old = os.umask(0o022)
    try:
        net = UNet(UNetConfig(dims=1, in_channels=1, out_channels=1, base_channels=8,
                              channel_mults=(1,), num_res_blocks=1, attention_levels=()))
        path = net.save_pretrained(tmp_path / "net")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_utils_is_stdlib_only():
    import subprocess
    import sys

    code = ("import sys, polydiff.core.utils, polydiff.core.cli; "
            "bad = [m for m in ('torch', 'numpy', 'tqdm') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from polydiff.core.utils import cache_dir

    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "pc"))
    assert cache_dir("speech") == tmp_path / "pc" / "speech"
    monkeypatch.delenv("POLYDIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("a", "b") == tmp_path / "xdg" / "polydiff" / "a" / "b"


def test_fetch_debian_package_reuses_the_cache_and_names_bad_input(tmp_path, monkeypatch):
    """A completed package folder is reused without running apt-get; a bad name or a missing
    apt-get is one clear error (no network here: apt-get is never reached)."""
    import pytest

    from polydiff.core import utils

    done = tmp_path / "some-pkg"
    (done / "usr").mkdir(parents=True)
    (done / ".complete").write_text("x\n")
    monkeypatch.setattr(utils.shutil, "which", lambda tool: None)
    assert utils.fetch_debian_package("some-pkg", root=tmp_path) == done
    with pytest.raises(utils.MissingDependencyError, match="apt-get"):
        utils.fetch_debian_package("other-pkg", root=tmp_path)
    with pytest.raises(ValueError, match="not a Debian package name"):
        utils.fetch_debian_package("../etc", root=tmp_path)
    assert not (tmp_path / "other-pkg").exists()


def test_run_commands_dispatches_after_parsing_and_add_demo_verb(tmp_path, monkeypatch, capsys):
    import argparse
    import types

    calls = []
    mod = types.ModuleType("fake_app_commands")
    mod.cmd_demo = lambda args: calls.append(("demo", args.output, args.quick, args.json))
    mod.cmd_train_prior = lambda args: 3

    def cmd_bad(args):
        raise CLIError("no such thing")

    mod.cmd_bad = cmd_bad
    monkeypatch.setitem(sys.modules, "fake_app_commands", mod)

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="fake")
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("train-prior")
        sub.add_parser("bad")
        p = cli.add_demo_verb(sub, description="the demo", default_output="fake-demo")
        assert p.get_default("output") == "fake-demo"
        return parser

    assert cli.run_commands(build, "fake_app_commands", ["demo", "--quick"], prog="fake") == 0
    assert calls == [("demo", "fake-demo", True, False)]
    assert cli.run_commands(build, "fake_app_commands", ["train-prior"], prog="fake") == 3
    assert cli.run_commands(build, "fake_app_commands", ["bad"], prog="fake") == 2
    assert capsys.readouterr().err.strip() == "fake: error: no such thing"
    assert cli.run_commands(build, "fake_app_commands", ["nope"], prog="fake") == 2


def test_require_at_least_and_output_dir(tmp_path):
    from polydiff.core.cli import require_at_least, require_output_dir

    require_at_least("--steps", None)
    require_at_least("--steps", 1)
    require_at_least("--scale", 0.0, minimum=0)
    for bad in (0, -3, math.nan):
        with pytest.raises(CLIError, match="--steps must be >= 1"):
            require_at_least("--steps", bad)
    require_output_dir(tmp_path / "new")
    require_output_dir(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(CLIError, match="exists and is not a directory"):
        require_output_dir(f)


def test_emit_demo_prints_title_metrics_figures_then_text(tmp_path, capsys):
    from polydiff.core.cli import DemoReport, emit_demo

    rep = DemoReport(title="T", metrics={"acc": 0.5}, figures=[tmp_path / "a.png"],
                     text="the text", units={"acc": "fraction"})
    emit_demo(rep, True)
    got = json.loads(capsys.readouterr().out)
    assert got == {"title": "T", "metrics": {"acc": 0.5}, "figures": [str(tmp_path / "a.png")]}
    emit_demo(rep, False)
    out = capsys.readouterr().out
    assert out.rstrip().endswith("the text") and "acc" in out


def test_run_demo_checks_the_folder_and_prints_the_report(tmp_path, capsys):
    from polydiff.core.cli import DemoReport, run_demo

    class Demo:
        def demo(self, out, quick=False):
            out.mkdir(parents=True, exist_ok=True)
            return DemoReport(title=f"quick={quick}", metrics={"n": 1.0}, units={"n": "count"})

    rep = run_demo(Demo(), tmp_path / "d", quick=True, as_json=True)
    assert rep.title == "quick=True"
    assert json.loads(capsys.readouterr().out)["title"] == "quick=True"
    (tmp_path / "f").write_text("x")
    with pytest.raises(CLIError, match="not a directory"):
        run_demo(Demo(), tmp_path / "f", quick=False, as_json=True)


def test_read_starter_manifest(tmp_path):
    from polydiff.core.cli import read_starter_manifest

    with pytest.raises(FileNotFoundError, match="reinstall polydiff-x or pass --model"):
        read_starter_manifest(tmp_path, "polydiff-x")
    (tmp_path / "manifest.json").write_text('{"steps": 3}')
    assert read_starter_manifest(tmp_path, "polydiff-x") == {"steps": 3}
