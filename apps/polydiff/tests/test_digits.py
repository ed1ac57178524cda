"""The ``digits`` tour demo: its data split, metric and data source, and one quick run end to
end (training with the engine, 10-step DPM-Solver++ samples that must beat a noise
baseline, figures, run directory)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.cli.digits import (
    FULL,
    QUICK,
    STARTER_DIR,
    DigitsDemo,
    _LabelDropout,
    digits_demo,
    frechet_distance,
    load_digits_split,
    load_starter,
    rescore,
)
from polydiff.cli.main import main
from polydiff.core.cli import EXTRA_APPS_ENV, App, DemoReport, discover_apps


def _png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_split_is_stratified_deterministic_and_scaled() -> None:
    x_tr, y_tr, x_ho, y_ho = load_digits_split()
    assert x_tr.shape[1:] == x_ho.shape[1:] == (1, 8, 8)
    assert len(x_tr) + len(x_ho) == 1797 and len(x_ho) == 450
    assert x_tr.dtype == np.float32 and x_tr.min() == -1.0 and x_tr.max() == 1.0
    assert set(np.unique(y_ho)) == set(range(10))
    assert np.bincount(y_ho).min() >= 43  # stratified: about 45 per class
    again = load_digits_split()
    np.testing.assert_array_equal(again[3], y_ho)
    np.testing.assert_array_equal(again[2], x_ho)


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3)) @ np.diag([1.0, 2.0, 0.5])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # equal covariances: the distance is the squared mean shift
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-9)
    # N(0, s1^2) vs N(0, s2^2) in 1-D: (s1 - s2)^2
    b = rng.standard_normal((200_000, 1))
    assert frechet_distance(3.0 * b, b) == pytest.approx(4.0, rel=2e-2)
    assert frechet_distance(b, 3.0 * b) == pytest.approx(frechet_distance(3.0 * b, b), rel=1e-6)


def test_label_dropout_source_is_reproducible() -> None:
    x = torch.randn(100, 1, 8, 8)
    y = torch.arange(100) % 10
    source = _LabelDropout(x, y, p=0.3, seed=0)
    pos = torch.arange(0, 4000)
    b1 = source.get(pos, torch.Generator().manual_seed(0))
    b2 = source.get(pos, torch.Generator().manual_seed(0))
    torch.testing.assert_close(b1["x0"], b2["x0"])
    assert torch.equal(b1["class_labels"], b2["class_labels"])
    dropped = b1["class_labels"] == -1
    assert 0.27 < dropped.float().mean().item() < 0.33
    # the kept labels still belong to their images (x0 row i has label i % 10)
    idx = source.inner.indices(pos)
    assert torch.equal(b1["class_labels"][~dropped], (idx % 10)[~dropped])
    assert source.state_dict()["num_samples"] == 100


def test_registered_shape_of_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(digits_demo, App) and isinstance(digits_demo, DigitsDemo)
    assert digits_demo.name == "digits" and digits_demo.summary
    monkeypatch.setenv(EXTRA_APPS_ENV, "digits=polydiff.cli.digits:digits_demo")
    assert discover_apps()["digits"].load() is digits_demo


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoReport, str]:
    """One quick run of the demo (shared by the tests below) and what it printed to stdout."""
    out = tmp_path_factory.mktemp("digits")
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        report = digits_demo.demo(out, quick=True, settings=QUICK)  # trains on the spot
    return out, report, stdout.getvalue()


def test_quick_demo_end_to_end(quick_run: tuple[Path, DemoReport, str]) -> None:
    out, report, stdout = quick_run
    assert stdout == ""  # `polydiff tour --json` owns stdout
    m = report.metrics
    numbers = {k: v for k, v in m.items() if not isinstance(v, str)}
    assert all(math.isfinite(v) for v in numbers.values()), numbers
    assert m["train/steps"] == QUICK.steps and m["samples"] == 10 * QUICK.per_class
    assert m["sample/steps"] == 10 and m["sampler"] == "dpmpp_2m"
    # figures: the sample grid (10 rows of 8x8 digits at 4x) and the loss curve
    assert [p.name for p in report.figures] == ["samples.png", "loss.png"]
    width, height = _png_size(out / "samples.png")
    assert height > 10 * 32 and width > (QUICK.grid_columns + 1) * 32
    lw, lh = _png_size(out / "loss.png")  # a labelled matplotlib figure
    assert lw > 300 and lh > 200
    assert "DPM-Solver++(2M)" in report.text
    # the engine's run directory inside the demo folder
    run = out / "train"
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == QUICK.steps and len(stats) >= 10
    assert json.loads((run / "config.json").read_text())["ema_decay"] == QUICK.ema_decay
    assert list((run / "checkpoints").glob("*.safetensors"))
    # training made progress: the logged loss fell
    first, last = stats[0]["loss"], m["train/final_loss"]
    assert last < 0.8 * first, (first, last)


def test_quick_samples_beat_the_baselines(quick_run: tuple[Path, DemoReport, str]) -> None:
    m = quick_run[1].metrics
    floor, noise = m["fd_pca20/real_train_floor"], m["fd_pca20/noise_baseline"]
    assert floor < noise
    # samples are much closer to held-out digits than per-pixel noise with the data's moments
    assert m["fd_pca20/samples"] < 0.5 * noise, m
    assert m["fd_pca20/samples_uncond"] < noise, m
    # and the classifier reads the intended digit far above chance (0.1)
    assert m["accuracy/heldout_real"] > 0.95
    assert m["accuracy/samples_cfg2"] > 0.6, m
    assert m["accuracy/samples"] > 0.3, m


# ----------------------------------------------------------------------------- starter weights
def test_starter_weights_are_shipped_with_a_manifest() -> None:
    loaded = load_starter()
    assert loaded is not None, f"no starter weights in {STARTER_DIR}"
    denoiser, manifest = loaded
    assert manifest["train_command"] == "polydiff train-digits -o OUT"
    assert manifest["settings"]["steps"] == FULL.steps == manifest["steps"]
    for key in ("commit", "device", "train_seconds", "heldout_metrics", "loss_curve"):
        assert manifest[key], key
    size = sum(f.stat().st_size for f in STARTER_DIR.iterdir())
    assert size < 8_000_000
    assert manifest["parameters"] == sum(p.numel() for p in denoiser.parameters())


def test_starter_weights_rescore_to_their_manifest() -> None:
    """The shipped weights, re-scored on the held-out digits from the manifest's fixed noise,
    give the manifest's numbers (and numbers a working model gives)."""
    denoiser, manifest = load_starter()
    want = manifest["heldout_metrics"]
    got = rescore(denoiser, per_class=manifest["rescore_per_class"],
                  guidance=manifest["settings"]["guidance"])
    assert set(got) == set(want)
    for k in got:
        tol = 0.03 if k.startswith("accuracy") else 0.05 * abs(want[k]) + 0.02
        assert abs(got[k] - want[k]) <= tol, (k, got[k], want[k])
    assert got["accuracy/samples_cfg2"] > 0.9 and got["accuracy/samples"] > 0.8, got


def test_demo_uses_the_starter_weights(tmp_path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        report = digits_demo.demo(tmp_path, quick=True)
    assert stdout.getvalue() == ""
    m = report.metrics
    assert "starter weights" in m["model"] and not (tmp_path / "train").exists()
    assert m["train/steps"] == FULL.steps and m["samples"] == 10 * QUICK.per_class
    assert m["fd_pca20/samples"] < 0.5 * m["fd_pca20/noise_baseline"]
    assert [p.name for p in report.figures] == ["samples.png", "loss.png"]
    numeric = [k for k, v in m.items() if not isinstance(v, str)]
    assert all(report.units.get(k) for k in numeric), [k for k in numeric
                                                       if not report.units.get(k)]


def test_train_digits_command_writes_loadable_starter_and_resumes(tmp_path: Path,
                                                                   capsys) -> None:
    out = tmp_path / "out"
    assert main(["train-digits", "-o", str(out), "--steps", "30", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["steps"] == 30 and manifest["train_command"].endswith("--steps 30")
    denoiser, saved = load_starter(out / "starter")
    assert saved["heldout_metrics"] == manifest["heldout_metrics"]
    # resume continues the same run to more steps
    assert main(["train-digits", "-o", str(out), "--steps", "40", "--resume"]) == 0
    assert load_starter(out / "starter")[1]["steps"] == 40
    capsys.readouterr()
    assert main(["train-digits", "-o", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err
    assert main(["train-digits", "-o", str(out), "--steps", "0"]) == 2
