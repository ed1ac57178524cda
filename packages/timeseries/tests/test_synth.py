"""TSDiff "synthesize" and the Linear Predictive Score on core's exact Gaussian test bed.

"Real" data are exact draws of one Gaussian over windows of length 24 (AR(1) covariance
``0.5 * 0.9^|i-j|`` around a seasonal level of 3); the exact denoiser stands in for a trained
model. Measured (seed 0; 2000 training windows, 1000 test windows, context 16):

=============================  =======  ==========================
training windows                LPS      bound
=============================  =======  ==========================
real                            0.1406   --
exact-denoiser DDPM samples     0.1410   within 3% of real
white noise                     0.968    > 3x real
time-shuffled real windows      0.260    > 1.5x real
=============================  =======  ==========================
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.core.processes.vp import VPDiscrete
from polydiff.core.testbeds import GaussianMixture
from polydiff.timeseries.tsdiff.synth import (
    fit_ridge,
    linear_predictive_score,
    normalized_deviation,
    synthesize,
)

L, C = 24, 16
F64 = torch.float64


def _bed() -> tuple[GaussianMixture, VPDiscrete]:
    i = torch.arange(L, dtype=F64)
    cov = 0.5 * 0.9 ** (i[:, None] - i[None]).abs()
    mean = 3.0 + torch.sin(2 * torch.pi * i / 8)
    return GaussianMixture(mean[None], cov[None]), VPDiscrete.linear(100, 1e-4, 0.1)


def test_synthesize_reproduces_the_test_bed_moments() -> None:
    """Exact-denoiser DDPM samples have the data's moments. The bed here has level 0: with
    TSDiff's schedule (abar_T = 0.0067) the N(0, I) prior neglects ``alpha_T mu``, which
    shrinks a level of 3 by ~0.11 (measured), a property of the schedule, not of sampling."""
    gm, proc = _bed()
    gm = GaussianMixture(gm.means - 3.0, gm.covs)
    x = synthesize(gm.denoiser(proc), 2000, L, seed=0, dtype=F64)
    assert x.shape == (2000, L) and x.dtype == F64
    mu, cov = gm.moments()
    # measured max errors 0.022 (mean) and 0.058 (covariance, entries up to 0.5); the
    # sampling standard errors are 0.016 and 0.016 per entry
    assert float((x.mean(0) - mu).abs().max()) < 0.06
    assert float((torch.cov(x.T) - cov).abs().max()) < 0.1


def test_synthesize_is_deterministic_and_shapes() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    a = synthesize(den, 6, L, seed=3, steps=10, dtype=F64)
    b = synthesize(den, 6, L, seed=3, steps=10, dtype=F64)
    assert torch.equal(a, b)
    ch = synthesize(den, 6, L, seed=3, steps=10, dtype=F64, channel_dim=True)
    assert torch.equal(a, ch)  # (B, 1, L) windows give the same draw, returned as (B, L)
    chunks = synthesize(den, 6, L, seed=3, steps=10, dtype=F64, batch_size=4)
    assert chunks.shape == (6, L) and bool(torch.isfinite(chunks).all())
    ddim = synthesize(den, 6, L, sampler="ddim", steps=10, seed=3, dtype=F64)
    assert ddim.shape == (6, L)
    with pytest.raises(ValueError, match="unknown sampler"):
        synthesize(den, 2, L, sampler="magic")  # type: ignore[arg-type]


def test_linear_predictive_score_of_exact_samples_matches_real_data() -> None:
    gm, proc = _bed()
    g = torch.Generator().manual_seed(0)
    real_train, real_test = gm.sample(2000, g).numpy(), gm.sample(1000, g).numpy()
    syn = synthesize(gm.denoiser(proc), 2000, L, seed=1, dtype=F64)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(real_train.shape)
    shuffled = np.stack([r[rng.permutation(L)] for r in real_train])
    lps_real = linear_predictive_score(real_train, real_test, C)
    lps_syn = linear_predictive_score(syn, real_test, C)
    assert abs(lps_syn - lps_real) < 0.03 * lps_real, (lps_syn, lps_real)
    assert linear_predictive_score(noise, real_test, C) > 3 * lps_real
    assert linear_predictive_score(shuffled, real_test, C) > 1.5 * lps_real


def test_mean_scaling_is_scale_invariant() -> None:
    gm, _ = _bed()
    g = torch.Generator().manual_seed(2)
    train, test = gm.sample(500, g).numpy(), gm.sample(200, g).numpy()
    a = linear_predictive_score(train, test, C, scaling="mean")
    b = linear_predictive_score(5.0 * train, 0.1 * test, C, scaling="mean")
    assert a == pytest.approx(b, rel=1e-9)
    assert a < 0.2  # a sane forecaster in the scaled space too


def test_fit_ridge_solves_the_penalised_normal_equations() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 6)) + 2.0, rng.standard_normal((50, 3)) - 1.0
    alpha = 0.7
    w, b = fit_ridge(x, y, alpha)
    xa = np.hstack([x, np.ones((50, 1))])  # intercept as an unpenalised column
    pen = alpha * np.eye(7)
    pen[-1, -1] = 0.0
    sol = np.linalg.solve(xa.T @ xa + pen, xa.T @ y)
    np.testing.assert_allclose(w, sol[:-1], atol=1e-10)
    np.testing.assert_allclose(b, sol[-1], atol=1e-10)


def test_nd_is_the_weighted_quantile_loss_of_a_point_forecast() -> None:
    """gluonts' ``mean_wQuantileLoss`` over quantiles 0.1..0.9 of a point forecast is ND."""
    rng = np.random.default_rng(1)
    y, yh = rng.standard_normal((20, 5)) + 1.0, rng.standard_normal((20, 5))
    wql = []
    for q in np.arange(1, 10) / 10:
        e = y - yh
        wql.append(2 * np.maximum(q * e, (q - 1) * e).sum() / np.abs(y).sum())
    assert normalized_deviation(y, yh) == pytest.approx(np.mean(wql), rel=1e-12)


def test_bad_input() -> None:
    ok = np.ones((10, L))
    with pytest.raises(ValueError, match="NaN"):
        linear_predictive_score(np.full((10, L), np.nan), ok, C)
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        linear_predictive_score(np.ones(L), ok, C)
    with pytest.raises(ValueError, match="do not fit"):
        linear_predictive_score(ok, ok, L)
    with pytest.raises(ValueError, match="all zero"):
        linear_predictive_score(ok, np.zeros((4, L)), C)
