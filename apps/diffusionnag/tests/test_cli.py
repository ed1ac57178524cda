"""End-to-end tests of the ``diffusionnag`` verbs: a tiny training run (with resume and the
run-folder lock), generation, search and evaluation, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polydiff.apps.diffusionnag.main import main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_imports_no_torch():
    code = ("import sys, polydiff.apps.diffusionnag.main as m; m.build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nbg"
    code = main(["train", "--space", "nbgraph", "--steps", "4", "--batch-size", "16", "-o",
                 str(out), "--json"])
    assert code == 0
    return out


def test_train_writes_a_run_and_resumes(tiny_run, capsys):
    assert (tiny_run / "model" / "diffusion.json").is_file()
    assert (tiny_run / "model" / "net" / "model.safetensors").is_file()
    settings = json.loads((tiny_run / "train.json").read_text())
    assert settings["space"] == "nbgraph" and settings["steps"] == 4
    code, _, err = run(["train", "--space", "nbgraph", "--steps", "4", "--batch-size", "16",
                        "-o", tiny_run], capsys)
    assert code == 2 and "already holds a training run" in err and "--resume" in err
    code, _, err = run(["train", "--space", "nbgraph", "--steps", "4", "--batch-size", "8",
                        "-o", tiny_run, "--resume"], capsys)
    assert code == 2 and "batch_size" in err
    code, out, _ = run(["train", "--space", "nbgraph", "--steps", "6", "--batch-size", "16",
                        "-o", tiny_run, "--resume", "--json"], capsys)
    assert code == 0 and json.loads(out)["steps"] == 6
    log = (tiny_run / "log.txt").read_text()
    assert "resumed from ckpt-00000004" in log


def test_a_held_run_folder_is_refused(tmp_path, capsys):
    holder = subprocess.Popen(  # another process holds the run folder
        [sys.executable, "-c", "import sys; from polydiff.core.training.lock import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()",
         str(tmp_path / "busy")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, _, err = run(["train", "--space", "nbgraph", "--steps", "2", "-o",
                            tmp_path / "busy"], capsys)
    finally:
        holder.communicate("", timeout=60)
    assert code == 2 and "in use by pid" in err
    assert not (tmp_path / "busy" / "model").exists()


def test_generate_with_a_trained_model(tiny_run, tmp_path, capsys):
    code, out, _ = run(["generate", "--space", "nbgraph", "--model", tiny_run, "-n", "8",
                        "--steps", "4", "-o", tmp_path / "gen", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["generated"] == 8 and 0.0 <= res["validity"] <= 1.0
    assert (tmp_path / "gen" / "archs.txt").is_file()
    assert (tmp_path / "gen" / "generated.json").is_file()


def test_generate_guided_by_the_starter_meta_predictor(tmp_path, capsys):
    code, out, _ = run(["generate", "--space", "nbgraph", "--guide", "accuracy", "--dataset",
                        "cora", "-n", "16", "--steps", "20", "-o", tmp_path / "g", "--json"],
                       capsys)
    assert code == 0
    res = json.loads(out)
    assert res["validity"] > 0.8 and res["best_test_of_first_10"] is not None
    assert Path(res["figure"]).is_file()
    lines = (tmp_path / "g" / "archs.txt").read_text().splitlines()
    assert lines and all(":" in ln for ln in lines)


def test_search_baselines_and_diffusionnag(tmp_path, capsys):
    for method in ("random", "evolution"):
        code, out, _ = run(["search", "--benchmark", "nas-bench-graph:citeseer", "--budget",
                            "25", "--method", method, "-o", tmp_path / method, "--json"], capsys)
        assert code == 0
        res = json.loads(out)
        assert res["queries"] == 25 and 0 < res["best_valid"] <= 1
        rows = (tmp_path / method / "trace.csv").read_text().splitlines()
        assert len(rows) == 26
    code, out, _ = run(["search", "--benchmark", "nas-bench-graph:citeseer", "--budget", "5",
                        "--generate", "16", "--steps", "10", "-o", tmp_path / "dn", "--json"],
                       capsys)
    assert code == 0 and json.loads(out)["queries"] == 5
    assert (tmp_path / "dn" / "curve.png").is_file()


def test_evaluate_a_file(tmp_path, capsys):
    f = tmp_path / "archs.txt"
    f.write_text("# two architectures, one of them twice in another encoding\n"
                 "0,1,2,0:gcn,skip,gat,sage\n0,0,1,2:sage,gcn,skip,gat\n0,0,0,0:gin,gin,gin,fc\n")
    code, out, _ = run(["evaluate", "--space", "nbgraph", "--archs", f, "--benchmark",
                        "nas-bench-graph:cora", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["architectures"] == 3 and res["validity"] == 1.0
    assert res["uniqueness"] == pytest.approx(2 / 3) and res["in_benchmark"] == 3


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--space", "nbgraph", "--archs", "{bad}"], "{bad}:2: nbgraph: unknown "
     "operation 'transformer'"),
    (["evaluate", "--space", "nb201", "--archs", "{malformed}"], "{malformed}:1: nb201:"),
    (["search", "--benchmark", "nas-bench-301:cifar10", "--budget", "5", "-o", "{out}"],
     "unknown benchmark 'nas-bench-301:cifar10'"),
    (["search", "--benchmark", "nas-bench-graph:imagenet", "--budget", "5", "-o", "{out}"],
     "unknown NAS-Bench-Graph dataset 'imagenet'"),
    (["search", "--benchmark", "nas-bench-graph:cora", "--budget", "0", "-o", "{out}"],
     "--budget must be >= 1"),
    (["generate", "--space", "nbgraph", "--guide", "accuracy", "-o", "{out}"],
     "needs --dataset"),
    (["generate", "--space", "nb201", "--guide", "{missing}", "-o", "{out}"],
     "no such model folder"),
    (["train", "--space", "nb201", "--target", "meta", "-o", "{out}"], "use --space nbgraph"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("0,1,2,1:gcn,gin,fc,cheb\n0,1,2,1:gcn,transformer,fc,"
                                      "cheb\n")
    (tmp_path / "malformed.txt").write_text("|nor_conv_3x3~0|+|none~0|\n")
    subs = {"bad": tmp_path / "bad.txt", "malformed": tmp_path / "malformed.txt",
            "out": tmp_path / "out", "missing": tmp_path / "missing"}
    argv = [a.format(**subs) for a in argv]
    code, out, err = run(argv, capsys)
    needle = needle.format(**subs)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
