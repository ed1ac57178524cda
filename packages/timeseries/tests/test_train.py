"""TSDiff training: the window sampler and a short run on sine waves with core's Trainer."""

import json

import numpy as np
import pytest
import torch

from polydiff.timeseries.tsdiff.model import TSDiffConfig, TSDiffModel, make_window
from polydiff.timeseries.tsdiff.train import MODEL_DIR, WindowSampler, train_tsdiff


def sines(seed: int = 0) -> list[np.ndarray]:
    """Ragged noisy daily-periodic (period 12) series with a gap of NaNs."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (200, 300, 150):
        t = np.arange(n)
        amp, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        out.append(3 + amp * np.sin(2 * np.pi * t / 12 + phase) + 0.05 * rng.normal(size=n))
    out[1][50:56] = np.nan
    return out


CFG = TSDiffConfig.tiny()


def test_sampler_windows_are_valid_and_deterministic():
    series = sines() + [np.ones(CFG.window_length - 1), np.full(100, np.nan)]
    ws = WindowSampler(series, CFG, seed=3, min_observed=0.95)
    length = CFG.window_length
    # short and all-NaN series give no window; the NaN gap removes the windows it overlaps
    gap = sum(1 for e in range(length, 301) if np.isfinite(series[1][e - length: e]).sum() < 57)
    assert gap == 53  # window ends 60..112 hold 4 or more of the 6 NaNs (50..55)
    assert len(ws) == (200 - length + 1) + (300 - length + 1 - gap) + (150 - length + 1)
    owners, ends = ws.choose(torch.arange(500))
    assert set(owners.tolist()) == {0, 1, 2}
    for i, e in zip(owners, ends, strict=True):
        win = series[i][e - length: e]
        assert len(win) == length and np.isfinite(win).mean() >= 0.95
    a = ws.get(torch.arange(8))
    b = [ws.get(torch.arange(0, 4)), ws.get(torch.arange(4, 8))]  # split-invariant
    for k in ("x0", "lags"):
        assert torch.equal(a[k], torch.cat([b[0][k], b[1][k]]))
    assert not torch.equal(a["x0"], WindowSampler(series, CFG, seed=4).get(torch.arange(8))["x0"])
    raw = ws.raw(torch.arange(8))
    assert raw.shape == (8, CFG.max_lag + length)
    want = make_window(raw, CFG, fill="interpolate")
    assert torch.equal(a["x0"], want.x) and torch.equal(a["lags"], want.lags)


def test_sampler_fills_gaps_and_rejects_hopeless_data():
    series = sines()
    ws = WindowSampler(series, CFG, seed=0, min_observed=0.5)
    batch = ws.get(torch.arange(256))
    assert bool(torch.isfinite(batch["x0"]).all()) and bool(torch.isfinite(batch["lags"]).all())
    with pytest.raises(ValueError, match="no training window"):
        WindowSampler([np.ones(10)], CFG)
    with pytest.raises(ValueError, match="min_observed"):
        WindowSampler(series, CFG, min_observed=1.5)
    with pytest.raises(ValueError, match="checkpoint"):
        ws.load_state_dict({"num_windows": 1})


def test_training_reduces_the_loss_and_exports_the_model(tmp_path):
    series = sines()
    torch.manual_seed(0)
    model = TSDiffModel(CFG)
    held = WindowSampler(sines(seed=1), CFG, seed=11).get(torch.arange(256))

    def eval_loss(m: TSDiffModel) -> float:
        with torch.no_grad():
            return float(m.loss(held, torch.Generator().manual_seed(5)))

    before = eval_loss(model)
    run = train_tsdiff(model, series, tmp_path / "run", steps=40, batch_size=32, lr=3e-3,
                       ema=None, device="cpu", progress=False, log_every=20)
    after = eval_loss(model)
    assert before > 0.9  # an untrained epsilon network: about E|eps|^2 = 1
    assert after < 0.5 * before, (before, after)
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [20, 40]
    config = json.loads((run / "config.json").read_text())
    assert config["extra"]["tsdiff"]["lags"] == list(CFG.lags)
    loaded = TSDiffModel.from_pretrained(run / MODEL_DIR)
    assert eval_loss(loaded) == after


def test_resume_and_ema_smoke(tmp_path):
    series = sines()
    torch.manual_seed(1)
    model = TSDiffModel(CFG)
    run = tmp_path / "run"
    train_tsdiff(model, series, run, steps=3, batch_size=8, ema=0.9, device="cpu",
                 progress=False, log_every=1, ckpt_every=3)
    train_tsdiff(model, series, run, steps=5, batch_size=8, ema=0.9, device="cpu",
                 progress=False, log_every=1, ckpt_every=3)
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert "resumed from ckpt-00000003" in (run / "log.txt").read_text()
    loaded = TSDiffModel.from_pretrained(run / MODEL_DIR)
    for k, v in loaded.state_dict().items():  # the exported weights are the EMA weights
        assert torch.equal(v, model.state_dict()[k])
