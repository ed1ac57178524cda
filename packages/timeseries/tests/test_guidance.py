"""Observation self-guidance (TSDiff "predict") on core's exact Gaussian test beds.

The test bed is one Gaussian over windows of length 16 (an AR(1) covariance ``0.9^|i-j|``
around a seasonal mean), so the exact forecast distribution, the Gaussian conditional of the
horizon given the context, is known. Tolerances come from measurement (2000 samples, seed 0,
float64; the sampling floor of the KL estimate is ~0.004):

======================  =====================  ==========
run                      KL(fit || exact)       bound
======================  =====================  ==========
unguided, DDPM           9.60                   > 5
MSE, DDPM, s = 6         0.18                   < 0.5
MSE, DDIM, s = 4         0.10                   < 0.5
NaN context, DDPM s=6    0.17 (horizon)         < 0.5
NaN context, unguided    9.60                   > 5
======================  =====================  ==========

Self-guidance evaluates the likelihood on ``x0_hat(x_t)`` and ignores ``Cov[x0 | x_t]``, so it
is biased (no scale makes it exact; at s = 16 DDPM's guided steps diverge on this bed); the
tests check that it gets within a small KL of the exact conditional, 20x closer than sampling
without guidance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.core.denoiser import Denoiser
from polydiff.core.processes.vp import VPDiscrete
from polydiff.core.samplers import sample_ddim, sample_ddpm
from polydiff.core.testbeds import GaussianMixture
from polydiff.timeseries.tsdiff.guidance import (
    default_grid,
    forecast,
    guided_denoiser,
    observation_energy,
    sample_quantile_levels,
)

L, C = 16, 12
H = L - C
F64 = torch.float64


def _bed() -> tuple[GaussianMixture, VPDiscrete]:
    i = torch.arange(L, dtype=F64)
    cov = 0.9 ** (i[:, None] - i[None]).abs()
    mean = torch.sin(2 * torch.pi * i / 8)
    return GaussianMixture(mean[None], cov[None]), VPDiscrete.linear(100, 1e-4, 0.1)


def _context(gm: GaussianMixture) -> torch.Tensor:
    """A plausible context whose last value jumps 2 standard deviations above the mean."""
    mu, cov = gm.moments()
    z = torch.randn(C, generator=torch.Generator().manual_seed(0), dtype=F64)
    ctx = (mu[:C] + torch.linalg.cholesky(cov[:C, :C]) @ z)[None]
    ctx[0, -1] = mu[C - 1] + 2.0
    return ctx


def _conditional(gm: GaussianMixture, ctx: torch.Tensor, obs: list[int], free: list[int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of ``x[free]`` given ``x[obs] = ctx[obs]``."""
    mu, cov = gm.moments()
    o, u = torch.tensor(obs), torch.tensor(free)
    k = cov[u][:, o] @ torch.linalg.inv(cov[o][:, o])
    return mu[u] + k @ (ctx[0, o] - mu[o]), cov[u][:, u] - k @ cov[u][:, o].T


def _kl(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """KL(N(fitted) || N(mean, cov)) of the Gaussian fitted to ``samples`` (N, d)."""
    m, s = samples.mean(0), torch.cov(samples.T)
    ci, d = torch.linalg.inv(cov), samples.mean(0) - mean
    return float(0.5 * (torch.trace(ci @ s) + d @ ci @ d - len(m)
                        + torch.logdet(cov) - torch.logdet(s)))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("kind", ["mse", "quantile"])
def test_scale_zero_is_unguided_sampling_bit_for_bit(sampler: str, kind: str) -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    ctx = _context(gm)
    out = forecast(den, ctx, H, num_samples=7, guidance=kind, scale=0.0, sampler=sampler,
                   steps=25, seed=3, dtype=F64, return_window=True)
    gen = torch.Generator().manual_seed(3)
    x = proc.prior_sample((7, L), generator=gen, dtype=F64)
    ts = default_grid(proc, 25)
    ref = sample_ddpm(den, x, ts, generator=gen, disable=True) if sampler == "ddpm" else \
        sample_ddim(den, x, ts, generator=gen, disable=True)
    assert torch.equal(out[0], ref)


@pytest.mark.parametrize(("sampler", "scale"), [("ddpm", 6.0), ("ddim", 4.0)])
def test_mse_guidance_approaches_exact_conditional(sampler: str, scale: float) -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    ctx = _context(gm)
    mean, cov = _conditional(gm, ctx, list(range(C)), list(range(C, L)))
    kw = dict(num_samples=2000, guidance="mse", sampler=sampler, seed=0, dtype=F64)
    kl_guided = _kl(forecast(den, ctx, H, scale=scale, **kw)[0], mean, cov)
    kl_free = _kl(forecast(den, ctx, H, scale=0.0, **kw)[0], mean, cov)
    assert kl_guided < 0.5, kl_guided  # measured 0.18 (DDPM, s=6), 0.10 (DDIM, s=4)
    assert kl_free > 5.0, kl_free  # measured 9.6
    assert kl_guided < kl_free / 20


def test_quantile_guidance_orders_sample_paths() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    ctx = _context(gm).expand(60, C)  # 60 series, 5 samples each at levels 1/6 .. 5/6
    out = forecast(den, ctx, H, num_samples=5, guidance="quantile", scale=8.0, seed=0,
                   dtype=F64, sampler="ddpm")
    level_means = out.mean(dim=(0, 2))  # measured -1.28, -1.03, -0.67, 0.17, 1.40
    assert bool((level_means[1:] > level_means[:-1] + 0.1).all()), level_means
    assert sample_quantile_levels(5).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6,
                                                                  5 / 6])


def test_nan_context_is_imputed_and_forecast_matches_conditional() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    ctx = _context(gm)
    miss = [2, 5, 9]
    ctx_nan = ctx.clone()
    ctx_nan[0, miss] = float("nan")
    obs = [j for j in range(C) if j not in miss]
    free = miss + list(range(C, L))
    mean, cov = _conditional(gm, ctx, obs, free)
    kw = dict(num_samples=2000, guidance="mse", seed=0, dtype=F64, return_window=True,
              sampler="ddpm")
    win = forecast(den, ctx_nan.numpy(), H, scale=6.0, **kw)[0]
    assert bool(torch.isfinite(win).all())
    kl_h = _kl(win[:, C:], mean[3:], cov[3:, 3:])  # measured 0.17
    kl_all = _kl(win[:, free], mean, cov)  # horizon and imputed values jointly: 0.24
    kl_free = _kl(forecast(den, ctx_nan, H, scale=0.0, **kw)[0][:, C:], mean[3:], cov[3:, 3:])
    assert kl_h < 0.5 and kl_all < 0.6, (kl_h, kl_all)
    assert kl_free > 5.0


def test_channel_layout_matches_flat_layout() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)  # the mixture denoiser accepts (B, 1, L) as well as (B, L)
    ctx = _context(gm)
    kw = dict(num_samples=4, steps=10, seed=1, dtype=F64)
    assert torch.equal(forecast(den, ctx, H, channel_dim=True, **kw),
                       forecast(den, ctx, H, channel_dim=False, **kw))


def test_observation_energy_closed_form() -> None:
    y = torch.tensor([[1.0, float("nan"), 3.0], [0.0, 2.0, -1.0]], dtype=F64)
    x0 = torch.tensor([[2.0, 5.0, 1.0], [1.0, 2.0, 1.0]], dtype=F64)
    e_mse = observation_energy("mse", y)(x0)
    assert e_mse.tolist() == pytest.approx([1.0 + 4.0, 1.0 + 0.0 + 4.0])
    q = torch.tensor([0.9, 0.25], dtype=F64)
    e_q = observation_energy("quantile", y, quantile=q)(x0)
    # residuals y - x0: [-1, -, 2] at 0.9 -> 0.1 + 1.8; [-1, 0, -2] at 0.25 -> 0.75 + 1.5
    assert e_q.tolist() == pytest.approx([0.1 + 1.8, 0.75 + 1.5])
    with pytest.raises(ValueError, match="quantile"):
        observation_energy("quantile", y)
    with pytest.raises(ValueError, match="unknown guidance"):
        observation_energy("l1", y)  # type: ignore[arg-type]


def test_guided_denoiser_is_the_closed_form_self_guidance() -> None:
    """On one Gaussian ``x0_hat = mu + A (x_t - alpha mu)`` with ``A = alpha Sigma S^-1``, so
    MSE self-guidance shifts the noise by ``-sigma s 2 A^T m (y - x0_hat)``."""
    gm, proc = _bed()
    den = gm.denoiser(proc)
    mu, cov = gm.moments()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, L, generator=gen, dtype=F64)
    t = torch.full((3,), 0.4, dtype=F64)
    y = torch.randn(3, L, generator=gen, dtype=F64)
    m = (torch.rand(3, L, generator=gen) < 0.6).to(F64)
    scale = 2.5
    x0_g, eps_g = guided_denoiser(den, y, m, guidance="mse", scale=scale).x0_eps(x, t)
    x0, eps = den.x0_eps(x, t)
    a, s = float(proc.alpha(t[:1])), float(proc.sigma(t[:1]))
    jac = a * cov @ torch.linalg.inv(a * a * cov + s * s * torch.eye(L, dtype=F64))
    grad = 2.0 * scale * (m * (y - x0)) @ jac  # rows: (A^T r)^T = r^T A
    assert torch.allclose(eps_g, eps - s * grad, atol=1e-10)
    assert torch.allclose(x0_g, x0 + s * s / a * grad, atol=1e-10)


class _CondCheck(Denoiser):
    """A denoiser that checks its per-series feature was repeated along the sample axis."""

    def __init__(self, base: Denoiser):
        super().__init__(base.process)
        self.base = base

    def x0_eps(self, x, t, **cond):
        feat = cond["feat"]
        assert feat.shape[0] == x.shape[0] and cond["flag"] == "keep"
        assert torch.equal(feat[:, 0], torch.arange(2, dtype=F64).repeat_interleave(3))
        return self.base.x0_eps(x, t)


def test_per_series_conditioning_is_repeated_per_sample() -> None:
    gm, proc = _bed()
    ctx = _context(gm).expand(2, C)
    feat = torch.arange(2, dtype=F64)[:, None].expand(2, 5)
    out = forecast(_CondCheck(gm.denoiser(proc)), ctx, H, num_samples=3, steps=5, dtype=F64,
                   cond={"feat": feat, "flag": "keep"})
    assert out.shape == (2, 3, H)


class _TinyNet(torch.nn.Module):
    """An untrained epsilon network over ``(B, 1, L)`` with a ``feat (B, 2, L)`` condition,
    the layout of :meth:`TSDiffModel.denoiser`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(3, 1, 5, padding=2)

    def forward(self, x, t, *, feat):
        return self.conv(torch.cat([x, feat], dim=1)) * (1 + t[:, None, None] / 100)


def test_network_denoiser_with_channels_and_condition() -> None:
    from polydiff.core.denoiser import ModelDenoiser

    proc = VPDiscrete.linear(100, 1e-4, 0.1)
    den = ModelDenoiser(_TinyNet(), proc, "epsilon", time_input=proc.model_timestep)
    ctx = np.sin(np.arange(2 * C).reshape(2, C) / 3.0)
    ctx[1, 3] = np.nan
    feat = torch.randn(2, 2, L)
    for kind in ("mse", "quantile"):
        out = forecast(den, ctx, H, num_samples=3, steps=10, guidance=kind, cond={"feat": feat},
                       channel_dim=True)
        assert out.shape == (2, 3, H) and out.dtype == torch.float32
        assert bool(torch.isfinite(out).all())
    assert all(p.grad is None for p in den.model.parameters())  # only x is differentiated


def test_mean_scaling_is_equivariant() -> None:
    """With mean scaling, scaling a context by c scales the forecast by c (same seed)."""
    gm, proc = _bed()
    den = gm.denoiser(proc)
    ctx = _context(gm).abs() + 0.5
    kw = dict(num_samples=3, steps=10, seed=2, dtype=F64, scaling="mean")
    a, b = forecast(den, ctx, H, **kw), forecast(den, 7.0 * ctx, H, **kw)
    assert torch.allclose(b, 7.0 * a, rtol=1e-10)


def test_bad_input() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    with pytest.raises(ValueError, match="dimensions"):
        forecast(den, np.zeros((2, 3, C)), H)
    with pytest.raises(ValueError, match="unknown sampler"):
        forecast(den, np.zeros((1, C)), H, sampler="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantile levels"):
        sample_quantile_levels(3, [0.5, 1.0])
