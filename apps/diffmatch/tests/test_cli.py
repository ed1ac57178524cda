"""The diffmatch command end to end: help, match (files, notes, bad input), evaluate, train
(with --resume and the run-folder rules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polydiff.apps.diffmatch.main import main
from polydiff.dense.flow import read_flo


def _images(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    base = (rng.random((70, 90)) * 255).astype(np.uint8)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(base[:64, :80]).save(a)
    Image.fromarray(base[3:67, 5:85]).save(b)
    return a, b


def test_help_is_instant_and_imports_no_torch() -> None:
    code = ("import sys; from polydiff.apps.diffmatch.main import build_parser; "
            "build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert main(["--help"]) == 0


def test_match_writes_flow_and_pictures(tmp_path: Path, tiny_model: Path, capsys) -> None:
    a, b = _images(tmp_path)
    out = tmp_path / "out" / "flow.flo"
    assert main(["match", str(a), str(b), "-o", str(out), "--model", str(tiny_model),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    flow = read_flo(out)
    assert flow.shape == (2, 64, 80) and np.isfinite(flow).all()
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["flow-uncertainty.png", "flow-warped.png", "flow.flo", "flow.png"]
    assert Image.open(out.parent / "flow.png").size == (80, 64)
    assert res["size"] == "80x64" and res["notes"] == []


def test_match_handles_sizes_and_colour(tmp_path: Path, tiny_model: Path, capsys) -> None:
    a, _ = _images(tmp_path)
    rgb = tmp_path / "c.png"
    Image.fromarray((np.random.default_rng(1).random((50, 60, 3)) * 255).astype(np.uint8)
                    ).save(rgb)
    out = tmp_path / "f.flo"
    assert main(["match", str(a), str(rgb), "-o", str(out), "--model", str(tiny_model),
                 "--hypotheses", "1", "--steps", "2", "--no-sr"]) == 0
    err = capsys.readouterr().err
    assert "resized to the first one's size (80x64)" in err and "luminance" in err
    assert read_flo(out).shape == (2, 64, 80)


@pytest.mark.parametrize("case", ["not_image", "missing", "bad_suffix", "bad_k", "no_model"])
def test_match_bad_input_is_one_line(tmp_path: Path, tiny_model: Path, capsys,
                                     case: str) -> None:
    a, b = _images(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    out = tmp_path / "o" / "flow.flo"
    args = {"not_image": [str(a), str(text), "-o", str(out)],
            "missing": [str(a), str(tmp_path / "none.png"), "-o", str(out)],
            "bad_suffix": [str(a), str(b), "-o", str(tmp_path / "flow.png")],
            "bad_k": [str(a), str(b), "-o", str(out), "--hypotheses", "0"],
            "no_model": [str(a), str(b), "-o", str(out), "--model", str(tmp_path)]}[case]
    if case != "no_model":
        args += ["--model", str(tiny_model)]
    assert main(["match", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmatch: error:") and len(err.splitlines()) == 1, err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_evaluate_json(tiny_model: Path, capsys) -> None:
    assert main(["evaluate", "--model", str(tiny_model), "--pairs", "2", "--corruptions",
                 "clean,noise", "--no-middlebury", "--no-opencv", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]["warps"]
    assert set(res) == {"clean", "noise"}
    assert {"diffmatch", "diffmatch_coarse", "regressor", "argmax", "argmax_daisy"} <= set(
        res["clean"])
    for m in res["clean"].values():
        assert m["aepe"] > 0 and 0 <= m["pck1"] <= m["pck3"] <= m["pck5"] <= 1


def test_train_resume_and_run_folder_rules(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    small = ["--feature-steps", "2", "--coarse-steps", "2", "--sr-steps", "2",
             "--batch-size", "2", "--rescore-pairs", "1", "--set", "size=64",
             "base_channels=8"]
    assert main(["train", "-o", str(out), *small, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["stage_steps"] == {"features": 2, "coarse": 2, "regressor": 2, "sr": 2}
    assert manifest["train_command"].startswith("diffmatch train -o OUT --feature-steps 2")
    assert "diffmatch/aepe" in manifest["heldout_metrics"]
    saved = json.loads((out / "model" / "manifest.json").read_text())
    assert saved["heldout_metrics"] == manifest["heldout_metrics"]
    # a non-empty folder is refused without --resume / --overwrite
    assert main(["train", "-o", str(out), *small]) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume continues from the saved settings to more steps
    assert main(["train", "-o", str(out), "--resume", "--coarse-steps", "3",
                 "--rescore-pairs", "1"]) == 0
    capsys.readouterr()
    again = json.loads((out / "model" / "manifest.json").read_text())
    assert again["stage_steps"]["coarse"] == 3 and again["settings"]["size"] == 64
    assert main(["train", "-o", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err
    assert main(["train", "-o", str(tmp_path / "x"), "--coarse-steps", "0"]) == 2
