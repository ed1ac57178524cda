"""Enhancement: the wave <-> spectrogram path, chunked processing without seams, bad input,
and the real-time-factor helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from polydiff.speech.sgmse.enhance import (
    chunk_plan,
    chunk_weights,
    enhance,
    enhance_predictive,
    enhance_with_stats,
    measure_rtf,
)
from polydiff.speech.sgmse.model import SGMSE, PredictiveConfig, SGMSEConfig, SGMSEPredictive
from polydiff.speech.sgmse.network import SpecAdapter

SR = 16000


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A seeded test signal: two modulated tones plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x += 0.2 * np.sin(2 * np.pi * 1250 * t + 1.0) + 0.05 * rng.standard_normal(t.shape)
    return x.astype(np.float32)


def _predictive(backbone) -> SGMSEPredictive:
    model = SGMSEPredictive(PredictiveConfig(preset="tiny"))
    model.net = SpecAdapter(backbone, conditional=False)
    model.net.padding_multiple = 2  # type: ignore[attr-defined]
    return model


def _identity(h: Tensor, time: Tensor) -> Tensor:
    return h


def _pointwise(h: Tensor, time: Tensor) -> Tensor:
    """A deterministic nonlinear time-frequency mask, local to each bin."""
    mag = torch.sqrt(h[:, :1] ** 2 + h[:, 1:] ** 2)
    return h * torch.tanh(3.0 * mag)


def test_identity_model_reproduces_the_input() -> None:
    """STFT, compression, frame padding, cropping and peak (de)normalisation invert."""
    x = 0.3 * _speechlike(0.7)[:11111]  # not a multiple of the hop
    out = enhance_predictive(_predictive(_identity), x, SR)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=2e-5)
    short = x[:200]  # shorter than the STFT window
    np.testing.assert_allclose(enhance(_predictive(_identity), short, SR), short, atol=2e-5)


def test_other_sample_rates_are_resampled_both_ways() -> None:
    x = _speechlike(0.5)[::2].copy()  # "8 kHz"
    out = enhance(_predictive(_identity), torch.from_numpy(x), 8000)
    assert out.shape == x.shape and np.isfinite(out).all()
    inner = slice(200, -200)
    assert np.abs(out[inner] - x[inner]).max() < 0.05 * np.abs(x).max()


def test_chunk_plan_and_weights() -> None:
    plan = chunk_plan(10_000, 3000, 1000, hop=128)
    # rounded to the hop: chunk 2944, overlap 896, starts at multiples of 2048
    assert all(s % 128 == 0 for s, _ in plan)
    assert plan[0][0] == 0 and plan[-1][1] == 10_000
    assert all(plan[k][1] - plan[k + 1][0] == 896 for k in range(len(plan) - 1))
    weights = chunk_weights(plan, 1000, hop=128)
    total = np.zeros(10_000)
    for (s, e), w in zip(plan, weights, strict=True):
        total[s:e] += w
        # smooth: the largest step of a raised-cosine fade over 448 samples
        assert np.abs(np.diff(w)).max() < np.pi / 448
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert chunk_plan(500, 3000, 1000) == [(0, 500)]
    with pytest.raises(ValueError, match="overlap"):
        chunk_plan(10_000, 1000, 600)


def test_chunked_equals_unchunked_for_a_local_model() -> None:
    """For a deterministic model local in time-frequency, chunks with context margins give
    the unchunked result everywhere, overlaps included: no seams."""
    x = _speechlike(2.3, seed=1)
    model = _predictive(_pointwise)
    whole = enhance(model, x, SR)
    chunked, stats = enhance_with_stats(model, x, SR, chunk_seconds=0.6, overlap_seconds=0.25)
    assert stats.chunks == 6
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert not np.allclose(whole, x, atol=1e-2)  # the model does change the signal


def test_stochastic_chunks_cross_fade_without_jumps() -> None:
    """Each chunk of the SGMSE sampler draws its own noise; the weighted sum still has no
    discontinuity larger than the signal's own sample-to-sample steps."""
    torch.manual_seed(0)
    model = SGMSE(SGMSEConfig(preset="tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    x = _speechlike(1.2, seed=2)
    out, stats = enhance_with_stats(model, x, SR, steps=3, chunk_seconds=0.5,
                                    overlap_seconds=0.2, seed=4)
    assert out.shape == x.shape and np.isfinite(out).all()
    assert stats.chunks == 4 and stats.nfe == 4 * 3 * 2  # 4 chunks x 3 steps x (P + C)
    steps = np.abs(np.diff(out))
    assert steps.max() < 1.5 * np.quantile(steps, 0.999) + 1e-6


def test_sgmse_enhance_output() -> None:
    torch.manual_seed(0)
    model = SGMSE(SGMSEConfig(preset="tiny"))
    x = _speechlike(0.4)
    a = enhance(model, x, SR, steps=4, seed=1)
    b = enhance(model, x, SR, steps=4, seed=1)
    c = enhance(model, x, SR, steps=4, seed=2)
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    d = enhance(model, x, SR, sampler="dpmpp_2m", steps=4)
    assert d.shape == x.shape and np.isfinite(d).all()
    assert model.training  # the model's mode is restored


@pytest.mark.parametrize(("wave", "message"), [
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.array([0.1, np.nan, 0.2] * 500, dtype=np.float32), "NaN or infinite"),
    (np.array([0.1, np.inf] * 500, dtype=np.float32), "NaN or infinite"),
    (np.zeros((2, 1000), dtype=np.float32), "mono"),
])
def test_bad_input_raises_one_clear_error(wave, message) -> None:
    model = SGMSE(SGMSEConfig(preset="tiny"))
    with pytest.raises(ValueError, match=message) as info:
        enhance(model, wave, SR, steps=2)
    assert "\n" not in str(info.value)


def test_bad_arguments() -> None:
    model = SGMSE(SGMSEConfig(preset="tiny"))
    x = _speechlike(0.2)
    with pytest.raises(ValueError, match="unknown sampler"):
        enhance(model, x, SR, sampler="magic")
    with pytest.raises(ValueError, match="sample rate"):
        enhance(model, x, 0)
    with pytest.raises(ValueError, match="overlap"):
        enhance(model, _speechlike(1.0), SR, steps=1, chunk_seconds=0.3, overlap_seconds=0.2)
    with pytest.raises(TypeError, match="SGMSEPredictive"):
        enhance_predictive(model, x, SR)


def test_silence_in_silence_out() -> None:
    out = enhance(SGMSE(SGMSEConfig(preset="tiny")), np.zeros(4000, np.float32), SR, steps=2)
    assert out.shape == (4000,) and not out.any()


def test_measure_rtf() -> None:
    model = SGMSE(SGMSEConfig(preset="tiny"))
    stats = measure_rtf(model, 0.5, warmup=False, steps=2, corrector_steps=1)
    assert stats.rtf > 0 and stats.audio_seconds == 0.5 and stats.nfe == 4


def test_files_are_chunked_by_default() -> None:
    """Memory stays bounded: a long file is processed in CHUNK_SECONDS chunks unless the
    caller asks for whole files."""
    from polydiff.speech.sgmse.enhance import CHUNK_SECONDS

    model = _predictive(_pointwise)
    x = _speechlike(2.5 * CHUNK_SECONDS)
    out, stats = enhance_with_stats(model, x, SR)
    assert stats.chunks == 3 and out.shape == x.shape
    whole, one = enhance_with_stats(model, x, SR, chunk_seconds=None)
    assert one.chunks == 1
    np.testing.assert_allclose(out, whole, atol=1e-4)  # a local model: no seams


def test_storm_starts_from_the_predictive_estimate() -> None:
    """storm = the predictive estimate diffused to t_start, then PC from there: with a
    denoiser that returns its input's centre exactly (x0 = y is a fixed point), starting at
    a small t_start from the identity 'predictive' output gives back the input closely,
    whereas PC from T draws from the wide prior first."""
    from polydiff.speech.sgmse.enhance import sample_spec

    torch.manual_seed(0)
    model = SGMSE(SGMSEConfig(preset="tiny"))
    pred = _predictive(_identity)
    x = _speechlike(0.5)
    a, st = enhance_with_stats(model, x, SR, sampler="storm", steps=3, predictive=pred,
                               t_start=0.2, seed=1)
    b = enhance(model, x, SR, sampler="storm", steps=3, predictive=pred, t_start=0.2, seed=1)
    assert np.array_equal(a, b) and np.isfinite(a).all() and a.shape == x.shape
    assert st.nfe == 1 + 3 * 2  # one predictive pass, then 3 x (P + C)
    self_init = enhance_with_stats(model, x, SR, sampler="storm", steps=3, seed=1)[1]
    assert self_init.nfe == 1 + 3 * 2  # the model's own one-pass estimate at T
    ode = enhance_with_stats(model, x, SR, sampler="storm", storm_base="euler", steps=3,
                             predictive=pred, t_start=0.2, seed=1)[1]
    assert ode.nfe == 1 + 3  # one pass per Euler step (the last one to t = 0 included)
    with pytest.raises(ValueError, match="storm base"):
        enhance(model, x, SR, sampler="storm", storm_base="storm", steps=2)
    y = model.spectrogram(torch.as_tensor(x)[None])[..., :16]
    with pytest.raises(ValueError, match="t_start"):
        sample_spec(model, y, steps=2, t_start=1.5)
    # the reverse process starts at t_start: the first grid point of the sampler
    seen = []
    hook = model.net.register_forward_hook(lambda m, args, out: seen.append(float(args[1][0])))
    try:
        sample_spec(model, y, sampler="pc", steps=2, t_start=0.4, corrector_steps=0)
    finally:
        hook.remove()
    assert abs(seen[0] - 0.4) < 1e-6


def test_predictive_centred_model() -> None:
    """center='predictive' (StoRM-style): the process and the condition are the predictive
    model's estimate; training and enhancement need that model and say so."""
    torch.manual_seed(0)
    model = SGMSE(SGMSEConfig(preset="tiny", center="predictive"))
    x = torch.as_tensor(_speechlike(0.5))[None]
    with pytest.raises(ValueError, match="predictive"):
        model.wave_loss(x, x + 0.01)
    with pytest.raises(ValueError, match="predictive model"):
        enhance(model, x[0].numpy(), SR, steps=2)
    pred = _predictive(_identity)
    model.attach_predictive(pred)
    y = model.spectrogram(x)[..., :16]
    assert torch.equal(model.condition(y), pred(y))  # identity 'predictive' model
    assert torch.isfinite(model.wave_loss(x, x + 0.01))
    assert "_predictive" not in str(list(model.state_dict()))  # not part of the weights
    fresh = SGMSE(SGMSEConfig(preset="tiny", center="predictive"))
    fresh.load_state_dict(model.state_dict())
    out, st = enhance_with_stats(fresh, x[0].numpy(), SR, sampler="storm", steps=2,
                                 t_start=0.3, predictive=pred)
    assert np.isfinite(out).all() and st.nfe == 1 + 2 * 2
    with pytest.raises(ValueError, match="center"):
        SGMSEConfig(center="clean")
