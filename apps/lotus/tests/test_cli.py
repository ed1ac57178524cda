"""The lotus command end to end: help, predict (files, bad input), evaluate, train (with
--resume and the run-folder rules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polydiff.apps.lotus.main import main


def _image(tmp_path: Path, grey: bool = False) -> Path:
    rng = np.random.default_rng(0)
    shape = (50, 70) if grey else (50, 70, 3)
    path = tmp_path / ("grey.png" if grey else "rgb.png")
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
    return path


def test_help_is_instant_and_imports_no_torch() -> None:
    code = ("import sys; from polydiff.apps.lotus.main import build_parser; "
            "build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert main(["--help"]) == 0


@pytest.mark.parametrize("task", ["depth", "normal"])
def test_predict_writes_picture_and_raw(tmp_path: Path, tiny_models: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str], task: str) -> None:
    img = _image(tmp_path, grey=task == "depth")
    out = tmp_path / "out" / f"{task}.png"
    assert main(["predict", str(img), "-o", str(out), "--task", task, "--model",
                 str(tiny_models[task]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    raw = np.load(out.with_suffix(".npy"))
    assert Image.open(out).size == (70, 50) and Image.open(out).mode == "RGB"
    if task == "depth":
        assert raw.shape == (50, 70)
    else:
        assert raw.shape == (50, 70, 3)
        assert np.allclose(np.linalg.norm(raw, axis=-1), 1.0, atol=1e-4)
    assert np.isfinite(raw).all() and res["task"] == task and res["size"] == "70x50"
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{task}.npy", f"{task}.png"]


@pytest.mark.parametrize("case", ["not_image", "missing", "bad_suffix", "other_task",
                                  "no_model", "bad_side"])
def test_predict_bad_input_is_one_line(tmp_path: Path, tiny_models: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str], case: str) -> None:
    img = _image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    out = tmp_path / "o" / "depth.png"
    model = ["--model", str(tiny_models["depth"])]
    args = {"not_image": [str(text), "-o", str(out), *model],
            "missing": [str(tmp_path / "none.png"), "-o", str(out), *model],
            "bad_suffix": [str(img), "-o", str(tmp_path / "depth.jpg"), *model],
            "other_task": [str(img), "-o", str(out), "--task", "normal", *model],
            "no_model": [str(img), "-o", str(out), "--model", str(tmp_path)],
            "bad_side": [str(img), "-o", str(out), "--max-side", "4", *model]}[case]
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lotus: error:") and len(err.splitlines()) == 1, err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_wrong_task_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["predict", str(_image(tmp_path)), "-o", "x.png", "--task",
                 "segmentation"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_evaluate_scores_against_the_trivial_baseline(tiny_models: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["evaluate", "--task", "normal", "--model", str(tiny_models["normal"]),
                 "--scenes", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]["test scenes"]
    assert set(res) == {"lotus", "trivial"}
    assert 0 <= res["lotus"]["mean"] <= 180 and res["trivial"]["images"] == 2


TRAIN = ["--steps", "2", "--prior-steps", "2", "--batch-size", "2", "--set", "size=16",
         "--set", "net.base_channels=8", "--set", "net.channel_mults=[1, 2]",
         "--set", "net.attention_levels=[1]"]


def test_train_resume_and_run_folder_rules(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--task", "depth", "-o", str(out), *TRAIN, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["train_command"].startswith("lotus train --task depth --steps 2")
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "manifest.json").is_file()
    assert "test/lotus/absrel" in manifest["rescore"]
    # a folder holding a run is refused without --resume / --overwrite
    assert main(["train", "--task", "depth", "-o", str(out), *TRAIN]) == 2
    assert "not empty" in capsys.readouterr().err
    # --resume continues from the saved settings to more steps
    assert main(["train", "--task", "depth", "-o", str(out), "--resume", "--steps", "3",
                 "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["settings"]["steps"] == 3 and manifest["settings"]["size"] == 16
    stats = (out / "runs" / "predictor" / "stats.jsonl").read_text().splitlines()
    assert json.loads(stats[-1])["step"] == 3
    # resume of an empty folder: nothing to continue
    assert main(["train", "--task", "depth", "-o", str(tmp_path / "new"), "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err
