"""End-to-end tests of every ``cdcd`` verb: a tiny model trained once per module, bad input
(one line, exit 2, nothing written), resume and the run-folder rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polydiff.apps.cdcd.main import main

TINY = ["--set", "hidden_size=16", "depth=1", "num_heads=2", "num_steps=10"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "-o", str(out), "--steps", "4", "--batch-size", "8",
                 "--variant", "step", "--json", *TINY]) == 0
    return out


def test_help_is_instant_and_imports_no_torch() -> None:
    code = ("import sys; from polydiff.apps.cdcd.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "evaluate" in proc.stdout


def test_train_writes_a_run(run_dir):
    meta = json.loads((run_dir / "model" / "cdcd.json").read_text())
    assert meta["config"]["num_steps"] == 10 and meta["meta"]["variant"] == "step"
    assert (run_dir / "model" / "network" / "model.safetensors").is_file()
    assert (run_dir / "train.toml").is_file() and (run_dir / "stats.jsonl").is_file()


def test_sample_and_evaluate(run_dir, tmp_path, capsys):
    code, out, _ = run(["sample", "--model", run_dir, "--digit", 3, "--digit", 7, "-n", 2,
                        "--sample-steps", 3, "-o", tmp_path / "s", "--json"], capsys)
    assert code == 0
    rec = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert [r["digit"] for r in rec["samples"]] == [3, 3, 7, 7]
    assert all(len(r["tokens"]) == 64 for r in rec["samples"])
    assert (tmp_path / "s" / "samples.png").is_file()
    code, out, _ = run(["evaluate", "--model", run_dir / "model", "--limit", 10,
                        "--sample-steps", 3, "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["scores"]["digits"] == 10 and 0.0 <= res["scores"]["accuracy"] <= 1.0


@pytest.mark.parametrize("argv, msg", [
    (["sample", "--digit", "12"], "--digit must lie in 0..9"),
    (["sample", "-n", "0"], "--num must be >= 1"),
    (["sample", "--model", "/nonexistent/model"], "does not exist"),
    (["evaluate", "--sample-steps", "0"], "--sample-steps must be >= 1"),
    (["train", "--task", "music", "--set", "chorales=2", "-o", "OUT"], "chorales must be >= 3"),
    (["train", "--steps", "0", "-o", "OUT"], "steps must be >= 1"),
    (["train", "--set", "chunks=7", "-o", "OUT"], "chunks must divide"),
    (["train", "--set", "lr=-1", "-o", "OUT"], "lr must be > 0"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, msg, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_sample_steps_above_t_is_refused(run_dir, tmp_path, capsys):
    code, _, err = run(["sample", "--model", run_dir, "--sample-steps", 11,
                        "-o", tmp_path / "s"], capsys)
    assert code == 2 and "<= the model's T = 10" in err and not (tmp_path / "s").exists()


def test_run_folder_rule_and_resume(run_dir, tmp_path, capsys):
    code, _, err = run(["train", "-o", run_dir, "--steps", "4", *TINY], capsys)
    assert code == 2 and "--resume" in err  # not empty: refused
    out = tmp_path / "r"
    assert main(["train", "-o", str(out), "--steps", "3", "--batch-size", "8", "--json",
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "-o", str(out), "--steps", "5", "--resume", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == 5
    steps = [json.loads(line)["step"] for line in (out / "stats.jsonl").read_text().splitlines()
             if "step" in line]
    assert steps[-1] == 5
    # the resumed run kept the saved (tiny) settings
    meta = json.loads((out / "model" / "cdcd.json").read_text())
    assert meta["config"]["hidden_size"] == 16


def test_not_a_model_folder(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    code, _, err = run(["evaluate", "--model", tmp_path / "m"], capsys)
    assert code == 2 and "not a CDCD model folder" in err


def test_readme_paths_exist() -> None:
    assert (Path(__file__).resolve().parents[1] / "README.md").is_file()


def test_music_train_sample_evaluate(tmp_path, capsys, monkeypatch):
    """Rhythm-conditioned melodies from 6 chorales: train a few steps, write MIDI for held-out
    rhythm tracks, score beat hit and coverage."""
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))  # parsed chorales go here
    out = tmp_path / "music"
    assert main(["train", "--task", "music", "-o", str(out), "--steps", "3", "--batch-size",
                 "8", "--variant", "step", "--negatives", "intra", "--json", *TINY,
                 "chorales=6"]) == 0
    capsys.readouterr()
    meta = json.loads((out / "model" / "cdcd.json").read_text())
    assert meta["config"]["cond_vocab"] == 3 and meta["meta"]["task"] == "music"
    code, o, _ = run(["sample", "--model", out, "-n", 2, "--sample-steps", 3,
                      "-o", tmp_path / "mid", "--json"], capsys)
    assert code == 0
    res = json.loads(o)
    mids = sorted((tmp_path / "mid").glob("*.mid"))
    assert len(mids) == 2 and all(m.read_bytes()[:4] == b"MThd" for m in mids)
    assert 0.0 <= res["beat_hit"] <= 1.0 and res["beat_coverage"] >= 0.0
    code, o, _ = run(["evaluate", "--model", out, "--limit", 4, "--sample-steps", 3,
                      "--json"], capsys)
    assert code == 0 and json.loads(o)["scores"]["melodies"] == 4
    code, _, err = run(["sample", "--model", out, "--digit", 1, "--sample-steps", 3,
                        "-o", tmp_path / "x"], capsys)
    assert code == 2 and "--digit is for digit models" in err
    assert list((tmp_path / "cache" / "cdcd").glob("chorales-6-*.npz"))
