"""Training SGMSE+ and the predictive baseline on polydiff-core's Trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.speech.sgmse.model import SGMSE, PredictiveConfig, SGMSEConfig, SGMSEPredictive
from polydiff.speech.sgmse.spec import SpecConfig
from polydiff.speech.sgmse.train import make_trainer, train_predictive, train_sgmse

SR = 16000
STEPS = 30


def _pairs(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (clean, noisy) waves: harmonic tones plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    clean = np.stack([0.4 * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
                      + 0.2 * np.sin(2 * np.pi * rng.uniform(800, 2000) * t)
                      for _ in range(n)])
    noisy = clean + 0.15 * rng.standard_normal(clean.shape)
    return torch.tensor(clean, dtype=torch.float32), torch.tensor(noisy, dtype=torch.float32)


@pytest.fixture
def corpus(tmp_path):
    """A tiny denoising corpus in the standard layout ``<root>/train/{clean,noisy}``."""
    clean, noisy = _pairs(3, 5000, seed=1)
    for sub, waves in (("clean", clean), ("noisy", noisy)):
        d = tmp_path / "data" / "train" / sub
        d.mkdir(parents=True)
        for i, w in enumerate(waves):
            sf.write(d / f"utt{i}.wav", w.numpy(), SR)
    return tmp_path / "data"


@pytest.mark.parametrize(("kind", "ratio"), [("sgmse", 0.97), ("predictive", 0.8)])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(kind, ratio, tmp_path) -> None:
    """The loss at fixed (t, noise) drops; the score-matching loss has a large irreducible
    part (about 0.9 here), so its relative drop is smaller."""
    torch.manual_seed(0)
    spec = SpecConfig(n_fft=126, hop_length=32)  # 64 bins: a fast test
    model = SGMSE(SGMSEConfig(preset="tiny", spec=spec)) if kind == "sgmse" else \
        SGMSEPredictive(PredictiveConfig(preset="tiny", spec=spec))
    clean, noisy = _pairs(4, 480)  # 16 frames

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(model.wave_loss(clean, noisy,
                                         generator=torch.Generator().manual_seed(123)))

    before = fixed_loss()
    trainer = make_trainer(model, (clean, noisy), tmp_path / "run", steps=STEPS, batch_size=4,
                           lr=3e-3, ema=None, device="cpu", progress=False, log_every=10,
                           ckpt_every=0)
    summary = trainer.fit(resume=False)
    after = fixed_loss()
    assert summary["step"] == STEPS and summary["skipped"] == 0
    assert after < ratio * before, (before, after)


def test_train_sgmse_end_to_end_and_resume(corpus, tmp_path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "run"
    model = SGMSE(SGMSEConfig(preset="tiny"))
    result = train_sgmse(model, corpus, out, steps=3, batch_size=2, segment_frames=16,
                         device="cpu", progress=False, ckpt_every=2, log_every=1)
    assert result.run_dir == out and result.summary["step"] == 3
    assert (out / "config.json").is_file() and (out / "stats.jsonl").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["model_class"] == "SGMSE" and cfg["extra"]["pairs"] == 3
    loaded = SGMSE.from_pretrained(result.weights)
    assert loaded.config == model.config
    # the exported weights are the run's EMA weights, not the raw ones
    assert any(not torch.equal(a, b) for a, b in
               zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
    # resuming continues from the latest checkpoint
    again = train_sgmse(SGMSE(SGMSEConfig(preset="tiny")), corpus, out, steps=5, batch_size=2,
                        segment_frames=16, device="cpu", progress=False, log_every=1)
    assert again.summary["step"] == 5
    assert "resumed from ckpt-00000003" in (out / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (out / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_train_predictive_and_type_checks(corpus, tmp_path) -> None:
    model = SGMSEPredictive(PredictiveConfig(preset="tiny"))
    result = train_predictive(model, corpus, tmp_path / "p", steps=2, batch_size=2,
                              segment_frames=16, device="cpu", progress=False)
    assert isinstance(SGMSEPredictive.from_pretrained(result.weights), SGMSEPredictive)
    with pytest.raises(TypeError, match="SGMSE model"):
        train_sgmse(model, corpus, tmp_path / "x", steps=1)
    with pytest.raises(TypeError, match="SGMSEPredictive"):
        train_predictive(SGMSE(SGMSEConfig(preset="tiny")), corpus, tmp_path / "y", steps=1)
    with pytest.raises(ValueError, match="split"):
        train_predictive(model, corpus, tmp_path / "z", steps=1, split="valid")


def test_time_budget_stops_checkpoints_and_resumes(corpus, tmp_path) -> None:
    """A wall-clock budget ends the run after the step that crosses it (checkpointed and
    logged); resuming continues towards ``steps``."""
    torch.manual_seed(0)
    out = tmp_path / "run"
    res = train_sgmse(SGMSE(SGMSEConfig(preset="tiny")), corpus, out, steps=50,
                      batch_size=2, segment_frames=16, device="cpu", progress=False,
                      log_every=100, ckpt_every=0, time_budget=1e-6)
    assert res.summary["stopped_early"] and res.summary["step"] == 1
    assert (out / "checkpoints" / "ckpt-00000001.safetensors").is_file()
    assert "time budget reached at step 1" in (out / "log.txt").read_text()
    last = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["note"] == "time budget reached"
    again = train_sgmse(SGMSE(SGMSEConfig(preset="tiny")), corpus, out, steps=3,
                        batch_size=2, segment_frames=16, device="cpu", progress=False,
                        log_every=1)
    assert again.summary["step"] == 3 and not again.summary["stopped_early"]
    with pytest.raises(ValueError, match="time_budget"):
        train_sgmse(SGMSE(SGMSEConfig(preset="tiny")), corpus, tmp_path / "x", steps=1,
                    time_budget=0)


def test_compiled_backbone_keeps_weights_and_copies(monkeypatch) -> None:
    """compile_backbone runs the U-Net through maybe_compile without registering the
    wrapper: state dicts, parameters and deep copies are unchanged."""
    import copy

    import polydiff.gpu

    calls = []

    def fake_compile(module, **kw):
        calls.append(module)
        return lambda h, t: module(h, t) * 1.0

    monkeypatch.setattr(polydiff.gpu, "maybe_compile", fake_compile)
    model = SGMSE(SGMSEConfig(preset="tiny"))
    keys = list(model.state_dict())
    x = model.spectrogram(torch.randn(1, 4000))[..., :16]
    t = torch.full((1,), 0.5)
    before = model(x, t, x)
    model.net.compile_backbone()
    assert calls == [model.net.backbone] and model.net._compiled is not None
    assert list(model.state_dict()) == keys and torch.allclose(model(x, t, x), before)
    clone = copy.deepcopy(model)
    assert clone.net._compiled is None and torch.allclose(clone(x, t, x), before)
    model.net.compile_backbone(False)
    assert model.net._compiled is None
