"""End-to-end tests of every ``unidiffuser`` verb: a tiny model trained once per module, bad
input (one line, exit 2, nothing written), resume and the run-folder lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polydiff.apps.unidiffuser.main import main

TINY = ["--set", "hidden_size=32", "depth=2", "num_heads=2", "patch_size=4", "latent_tokens=2",
        "latent_dim=4", "grammar_captions=200", "batch_size=16"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "-o", str(out), "--steps", "4", "--text-steps", "4", "--json", *TINY])
    assert code == 0
    return out


def _png(path: Path, value: int = 200) -> Path:
    from PIL import Image

    arr = np.zeros((16, 16), np.uint8)
    arr[2:14, 6:10] = value
    Image.fromarray(arr).save(path)
    return path


def test_train_writes_a_run(run_dir):
    assert (run_dir / "model" / "unidiffuser.json").is_file()
    assert (run_dir / "model" / "network" / "model.safetensors").is_file()
    assert (run_dir / "model" / "text" / "model.safetensors").is_file()
    assert (run_dir / "train.toml").is_file() and (run_dir / "loss.png").is_file()
    meta = json.loads((run_dir / "model" / "unidiffuser.json").read_text())
    assert meta["config"]["task"] == "joint" and meta["meta"]["data"] == "digits"
    assert (run_dir / "diffusion" / "stats.jsonl").is_file()


def test_sample_modes(run_dir, tmp_path, capsys):
    code, out, _ = run(["sample", "--model", run_dir, "--mode", "t2i", "--prompt",
                        "a thick seven", "--prompt", "a two", "-n", 2, "--steps", 3,
                        "--guidance", 1.5, "-o", tmp_path / "t2i", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["prompts"] == ["a thick seven"] * 2 + ["a two"] * 2 and res["guidance"] == 1.5
    rec = json.loads((tmp_path / "t2i" / "samples.json").read_text())
    assert len(rec["samples"]) == 4 and (tmp_path / "t2i" / "image_003.png").is_file()
    assert (tmp_path / "t2i" / "samples.png").is_file()
    img = _png(tmp_path / "in.png")
    code, out, _ = run(["sample", "--model", run_dir / "model", "--mode", "i2t", "--image",
                        img, "--steps", 3, "-o", tmp_path / "i2t", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["captions"]) == 1
    for mode in ("joint", "image", "text"):
        code, out, _ = run(["sample", "--model", run_dir, "--mode", mode, "-n", 3, "--steps",
                            2, "-o", tmp_path / mode, "--json"], capsys)
        assert code == 0, mode
        assert len(json.loads((tmp_path / mode / "samples.json").read_text())["samples"]) == 3
    code, out, _ = run(["sample", "--model", run_dir, "--mode", "i2t2i", "--image", img,
                        "--steps", 2, "-o", tmp_path / "chain"], capsys)
    assert code == 0 and "captions" in out
    rec = json.loads((tmp_path / "chain" / "samples.json").read_text())
    assert rec["samples"][0]["regenerated"] == "image_000.png"
    code, _, _ = run(["sample", "--model", run_dir, "--mode", "t2i2t", "--prompt", "a one",
                      "-n", 1, "--steps", 2, "-o", tmp_path / "chain2"], capsys)
    assert code == 0


def test_evaluate(run_dir, capsys):
    code, out, _ = run(["evaluate", "--model", run_dir, "--limit", 12, "--steps", 2,
                        "--split", "val", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["digits"] == 12 and 0.9 < res["classifier_accuracy_on_real_digits"] <= 1.0
    for key in ("t2i/label_acc", "i2t/strict_acc", "joint/label_consistency",
                "marginal/image_tv"):
        assert 0.0 <= res["scores"][key] <= 1.0


def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys):
    out = tmp_path / "o"
    cases = [
        (["sample", "--model", run_dir, "--mode", "t2i", "-o", out], "needs --prompt"),
        (["sample", "--model", run_dir, "--mode", "t2i", "--prompt", "a purple seven",
          "-o", out], "unknown word(s) in --prompt: purple"),
        (["sample", "--model", run_dir, "--mode", "i2t", "--image", tmp_path / "nope.png",
          "-o", out], "does not exist"),
        (["sample", "--model", run_dir, "--mode", "joint", "--prompt", "a one", "-o", out],
         "--prompt is for"),
        (["sample", "--model", tmp_path / "nomodel", "--mode", "joint", "-o", out],
         "does not exist"),
        (["sample", "--model", run_dir, "--mode", "joint", "--guidance", "-1", "-o", out],
         "--guidance must be"),
        (["sample", "--model", run_dir, "--mode", "joint", "--steps", "0", "-o", out],
         "--steps must be"),
        (["train", "--data", tmp_path / "nodata", "-o", out], "--data must be"),
        (["train", "-o", out, "--set", "stepz=3"], "did you mean 'steps'"),
        (["train", "-o", out, "--set", "clean_prob=0.8", "noise_prob=0.5"], "must not exceed"),
    ]
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not a png")
    cases.append((["sample", "--model", run_dir, "--mode", "i2t", "--image", bad_image, "-o",
                   out], "cannot read image"))
    for argv, msg in cases:
        code, _, err = run(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and msg in lines[0], (argv, err)
        assert "Traceback" not in err
    assert not out.exists()
    code, _, err = run(["sample", "--mode", "video"], capsys)
    assert code == 2 and "invalid choice" in err


def test_resume_and_lock(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    code, out, _ = run_cli(["train", "-o", run, "--steps", "6", "--text-steps", "4",
                            "--resume", "--json", *TINY], capsys)
    assert code == 0
    log = (run / "diffusion" / "log.txt").read_text()
    assert "resumed from ckpt-00000004" in log and json.loads(out)["steps"] == 6
    holder = subprocess.Popen(  # another process holds the run folder
        [sys.executable, "-c", "import sys; from polydiff.core.training.lock import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()",
         str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(["train", "-o", run, "--steps", "6", "--resume", *TINY],
                               capsys)
    finally:
        holder.communicate("", timeout=60)
    assert code == 2 and "in use by pid" in err


run_cli = run


def test_help_imports_no_torch():
    for verb in ("train", "sample", "evaluate", "demo"):
        res = subprocess.run([sys.executable, "-c",
                              "import sys; from polydiff.apps.unidiffuser.main import main; "
                              f"rc = main(['{verb}', '--help']); "
                              "print('torch' in sys.modules, file=sys.stderr)"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "usage: unidiffuser" in res.stdout, res.stderr
        assert res.stderr.strip() == "False"
