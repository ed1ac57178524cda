"""The umbrella ``polydiff`` command: fast help, ``list``, ``tour`` and its HTML report, bad
input, and the built-in ``core-samplers`` demo."""

import base64
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from polydiff.cli import main as cli_main
from polydiff.cli.demos import core_samplers, png_bytes
from polydiff.cli.main import main
from polydiff.core import cli
from polydiff.core.cli import APP_GROUP, EXTRA_APPS_ENV, DemoReport

FAKE_MODULE = "polydiff_fake_apps"
FAKE_APPS = '''
import wave
from pathlib import Path

import numpy as np

from polydiff.cli.demos import write_png
from polydiff.core.cli import DemoReport


class OkApp:
    name = "fake-ok"
    summary = "a fake app that works"

    def demo(self, out_dir, *, quick):
        img = np.zeros((8, 12, 3), np.uint8)
        img[:, :6] = (255, 0, 0)
        fig = write_png(out_dir / "fig.png", img)
        with wave.open(str(out_dir / "tone.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\\x00\\x01" * 800)
        metrics = {"score": 0.5, "mode": "q" if quick else "f"}
        return DemoReport(title="Fake & <ok>", metrics=metrics, figures=[fig],
                          audio=[Path("tone.wav")], text="line one\\nline two")


class FailApp:
    name = "fake-fail"
    summary = "a fake app that fails"

    def demo(self, out_dir, *, quick):
        raise RuntimeError("boom in demo")


class BadReturn:
    name = "fake-bad"
    summary = "returns junk"

    def demo(self, out_dir, *, quick):
        return {"title": "not a report"}


ok, fail, bad = OkApp(), FailApp(), BadReturn()
'''
FAKES = {"fake-ok": "ok", "fake-fail": "fail", "fake-bad": "bad"}


def _write_fakes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_APPS, encoding="utf-8")
    return folder


@pytest.fixture
def fake_apps(tmp_path, monkeypatch):
    """Register the fake apps (only them) by monkeypatching entry-point discovery."""
    monkeypatch.syspath_prepend(str(_write_fakes(tmp_path / "mods")))
    monkeypatch.delitem(sys.modules, FAKE_MODULE, raising=False)
    monkeypatch.delenv(EXTRA_APPS_ENV, raising=False)
    eps = [EntryPoint(n, f"{FAKE_MODULE}:{a}", APP_GROUP) for n, a in FAKES.items()]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps if group == APP_GROUP else [])
    return eps


def _pycmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          **kw)


# ----------------------------------------------------------------------------- help
def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys; from polydiff.cli.main import main; rc = main(['--help']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'numpy' not in sys.modules, 'numpy was imported'")
    proc = _pycmd("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert "usage: polydiff" in proc.stdout and "tour" in proc.stdout
    walls = []
    for _ in range(3):  # best of three: the machine may be busy
        start = time.perf_counter()
        proc = _pycmd("-m", "polydiff.cli.main", "--help")
        walls.append(time.perf_counter() - start)
        assert proc.returncode == 0 and "usage: polydiff" in proc.stdout
    assert min(walls) < 1.0, f"polydiff --help took {min(walls):.2f} s"


def test_version_and_subcommand_help(capsys):
    assert main(["--version"]) == 0
    assert re.match(r"polydiff \S+ \(polydiff-cli \S+, polydiff-core \S+\)",
                    capsys.readouterr().out)
    assert main(["tour", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


# ----------------------------------------------------------------------------- list
def test_list(fake_apps, capsys):
    assert main(["list", "--json"]) == 0
    apps = {a["name"]: a for a in json.loads(capsys.readouterr().out)["apps"]}
    assert list(apps) == ["fake-bad", "fake-fail", "fake-ok"]
    assert apps["fake-ok"]["summary"] == "a fake app that works"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fake-ok" in out and "a fake app that fails" in out


def test_list_reports_broken_apps(fake_apps, monkeypatch, capsys):
    eps = [*fake_apps, EntryPoint("gone", "no_such_module_xyz:app", APP_GROUP)]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    assert main(["list", "--json"]) == 0
    apps = {a["name"]: a for a in json.loads(capsys.readouterr().out)["apps"]}
    assert apps["gone"]["error"] and "failed to load" in apps["gone"]["summary"]


# ----------------------------------------------------------------------------- tour
def test_tour_writes_self_contained_report(fake_apps, tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["tour", "--quick", "-o", str(out), "--only", "fake-ok"]) == 0
    report = out / "report.html"
    page = report.read_text(encoding="utf-8")
    assert sorted(os.listdir(out)) == ["fake-ok", "report.html"]  # no temporary files left
    assert "score" in page and ">0.5<" in page and "Fake &amp; &lt;ok&gt;" in page
    assert "line one\nline two" in page and "<audio controls" in page
    fig = (out / "fake-ok" / "fig.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(fig).decode()}" in page
    wav = (out / "fake-ok" / "tone.wav").read_bytes()
    assert f"data:audio/wav;base64,{base64.b64encode(wav).decode()}" in page
    assert "torch" in page and "python" in page and "polydiff-core" in page
    assert f"polydiff tour --quick -o {out} --only fake-ok" in page
    assert "wall" in page and "src=\"http" not in page and "<link" not in page
    captured = capsys.readouterr()
    assert str(report) in captured.out and "fake-ok: ok" in captured.err


def test_tour_with_a_relative_output_folder_embeds_figures(fake_apps, tmp_path, monkeypatch,
                                                            capsys):
    """Demos return paths relative to the working directory: a relative ``-o`` must still find
    and embed them (regression: they were resolved against the demo folder a second time)."""
    monkeypatch.chdir(tmp_path)
    assert main(["tour", "--quick", "-o", "rel-tour", "--only", "fake-ok"]) == 0
    page = (tmp_path / "rel-tour" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "missing file" not in page


def test_tour_records_failures_and_exits_1(fake_apps, tmp_path, capsys):
    out = tmp_path / "tour"
    rc = main(["tour", "--quick", "-o", str(out), "--only", "fake-ok", "fake-fail,fake-bad",
               "--json"])
    assert rc == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and result["failed"] == ["fake-fail", "fake-bad"]
    demos = {d["name"]: d for d in result["demos"]}
    assert demos["fake-ok"]["ok"] and demos["fake-ok"]["metrics"] == {"score": 0.5, "mode": "q"}
    assert demos["fake-fail"]["error"] == "RuntimeError: boom in demo"
    assert "not a DemoReport" in demos["fake-bad"]["error"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "boom in demo" in page and "Traceback" in page and "data:image/png" in page


def test_tour_runs_every_app_by_default(fake_apps, tmp_path, capsys):
    assert main(["tour", "--quick", "-o", str(tmp_path / "t"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in result["demos"]] == ["fake-bad", "fake-fail", "fake-ok"]


@pytest.mark.parametrize("argv, message", [
    (["tour", "--only", "nope"], "polydiff: error: unknown app 'nope' for --only "
     "(installed: fake-bad, fake-fail, fake-ok)"),
    (["tour", "-o", "{file}"], "polydiff: error: output path '{file}' exists and is not a "
     "directory"),
])
def test_tour_bad_input_is_one_line(fake_apps, tmp_path, capsys, argv, message):
    file = tmp_path / "taken.txt"
    file.write_text("x")
    argv = [a.replace("{file}", str(file)) for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err == message.replace("{file}", str(file)) + "\n"
    assert file.read_text() == "x"


@pytest.mark.parametrize("argv", [[], ["tour", "--bogus"], ["list", "extra"], ["frobnicate"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: polydiff") and err[-1].startswith("polydiff")
    assert "error:" in err[-1] and not any("Traceback" in line for line in err)


def test_tour_subprocess_with_extra_apps_hook(tmp_path):
    """The POLYDIFF_EXTRA_APPS hook registers apps without installing them."""
    mods = _write_fakes(tmp_path / "mods")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mods), os.environ.get(
        "PYTHONPATH", "")]), EXTRA_APPS_ENV: ",".join(f"{n}={FAKE_MODULE}:{a}"
                                                     for n, a in FAKES.items()),
           "POLYDIFF_DEBUG": ""}
    out = tmp_path / "out"
    proc = _pycmd("-m", "polydiff.cli.main", "tour", "--quick", "-o", str(out), "--only",
                  "fake-ok,fake-fail", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "fake-fail: FAILED: RuntimeError: boom in demo" in proc.stderr
    assert "Traceback" not in proc.stderr and (out / "report.html").is_file()
    bad = _pycmd("-m", "polydiff.cli.main", "tour", "--only", "nope", "-o", str(out),
                 env=env)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("polydiff: error: unknown app 'nope'")


# ----------------------------------------------------------------------------- built-in demo
def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + body)
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + n
    w, h, depth, ctype = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and ctype == 2 and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_png_writer_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (_decode_png(png_bytes(img)) == img).all()
    grey = _decode_png(png_bytes(np.full((2, 3), 9, np.uint8)))
    assert grey.shape == (2, 3, 3) and (grey == 9).all()
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4,)))


def test_core_samplers_demo_in_a_tour(tmp_path, monkeypatch):
    ep = EntryPoint("core-samplers", "polydiff.cli.demos:core_samplers", APP_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [ep])
    monkeypatch.delenv(EXTRA_APPS_ENV, raising=False)
    report, results = cli_main.run_tour(tmp_path, list(cli.discover_apps().values()),
                                        quick=True)
    (res,) = results
    assert res.ok, res.traceback
    rep: DemoReport = res.report
    m = rep.metrics
    for nfe in (5, 10, 20, 40):
        assert {f"rmse/{k}/nfe={nfe}" for k in ("ddim", "dpmpp_2m", "unipc")} <= set(m)
    assert m["rmse/unipc/nfe=40"] < m["rmse/dpmpp_2m/nfe=40"] < m["rmse/ddim/nfe=40"] < 0.2
    assert m["order/dpmpp_2m"] > 1.5 and 0.7 < m["order/ddim"] < 1.3
    assert [p.name for p in rep.figures] == ["samples.png", "convergence.png"]
    assert _decode_png(rep.figures[0].read_bytes()).std() > 0  # something was drawn
    import matplotlib.image  # convergence.png is a labelled matplotlib figure (RGBA, filtered)

    assert matplotlib.image.imread(rep.figures[1]).std() > 0
    page = report.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "rmse/unipc/nfe=40" in page


def test_core_samplers_is_registered():
    """Needs ``core-samplers = "polydiff.cli.demos:core_samplers"`` under
    ``[project.entry-points."polydiff.apps"]`` in apps/polydiff/pyproject.toml."""
    apps = cli.discover_apps()
    assert "core-samplers" in apps
    assert apps["core-samplers"].load() is core_samplers
    assert apps["core-samplers"].distribution == "polydiff-cli"
