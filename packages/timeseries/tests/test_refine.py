"""TSDiff "refine" on core's exact Gaussian test bed (an AR(1) window of length 16).

For one Gaussian ``N(mu, Sigma)`` and its exact denoiser the denoising energy has a closed form,
``E_eps ||eps_hat(alpha y + sigma eps) - eps||^2 = sigma^2 alpha^2 ||S^-1 (y - mu)||^2 +
alpha^4 tr((Sigma S^-1)^2)`` with ``S = alpha^2 Sigma + sigma^2 I``, and the log-SNR
quadrature of ``t="elbo"`` integrates it to ``(y - mu)^T Sigma^-1 (y - mu) / 2`` (= ``-log p``
up to a constant) as the log-SNR range grows. Measured (seed 0, float64):

==========================================  =========  ========
quantity                                    measured   bound
==========================================  =========  ========
exact cond. log-lik, base (perturbed)       -30.4      --
 ... after 20 ML steps, t = 0.21, lr 0.1    -0.38      > -3
ML with t="elbo", 150 steps: dist to mean   ~0.1       < 0.3
Langevin (gamma = 1, "elbo"): KL            0.07       < 0.25
Langevin (gamma = 0.1, the authors'): KL    4.2        > 2
==========================================  =========  ========
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.core.processes.vp import VPDiscrete
from polydiff.core.testbeds import GaussianMixture
from polydiff.timeseries.tsdiff.refine import (
    _prior_prox,
    denoising_energy,
    diffusion_times,
    refine,
)

L, C = 16, 12
H = L - C
F64 = torch.float64


def _bed() -> tuple[GaussianMixture, VPDiscrete]:
    i = torch.arange(L, dtype=F64)
    cov = 0.9 ** (i[:, None] - i[None]).abs()
    mean = torch.sin(2 * torch.pi * i / 8)
    return GaussianMixture(mean[None], cov[None]), VPDiscrete.linear(100, 1e-4, 0.1)


def _problem(b: int = 64):
    """Contexts, their exact conditional mean/precision and perturbed base forecasts."""
    gm, proc = _bed()
    mu, cov = gm.moments()
    k = cov[C:, :C] @ torch.linalg.inv(cov[:C, :C])
    ctx = gm.sample(b, torch.Generator().manual_seed(1))[:, :C]
    mean = mu[C:] + (ctx - mu[:C]) @ k.T
    prec = torch.linalg.inv(cov[C:, C:] - k @ cov[C:, :C].T)
    noise = torch.randn(b, H, generator=torch.Generator().manual_seed(2), dtype=F64)
    return gm, proc, ctx, mean, prec, mean + 1.5 * noise


def _cond_loglik(y, mean, prec):
    d = y - mean
    return -0.5 * ((d @ prec) * d).sum(-1)


def test_denoising_energy_closed_form() -> None:
    gm, proc = _bed()
    den = gm.denoiser(proc)
    mu, cov = gm.moments()
    y = (mu + torch.randn(2, L, generator=torch.Generator().manual_seed(0), dtype=F64))
    t = 0.3
    a, s = float(proc.alpha(torch.tensor(t, dtype=F64))), float(
        proc.sigma(torch.tensor(t, dtype=F64)))
    si = torch.linalg.inv(a * a * cov + s * s * torch.eye(L, dtype=F64))
    r = (y - mu) @ si
    exact = s * s * a * a * (r * r).sum(1) + a**4 * torch.trace(cov @ si @ cov @ si)
    mc = denoising_energy(den, y, t=t, num_noise=20000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mc, exact, rtol=0.02), (mc, exact)  # MC error ~0.5%


def test_elbo_quadrature_recovers_the_log_density() -> None:
    """The expected "elbo" energy differences equal ``-log p`` differences (exact, no MC)."""
    gm, proc = _bed()
    den = gm.denoiser(proc)
    mu, cov = gm.moments()
    gen = torch.Generator().manual_seed(4)
    y = mu + (torch.randn(6, L, generator=gen, dtype=F64) @ torch.linalg.cholesky(cov).T)
    ts, w = diffusion_times(den, "elbo", n_elbo=64)
    expected = torch.zeros(6, dtype=F64)
    for tk, wk in zip(ts, w, strict=True):
        a, s = float(proc.alpha(tk)), float(proc.sigma(tk))
        r = (y - mu) @ torch.linalg.inv(a * a * cov + s * s * torch.eye(L, dtype=F64))
        expected += wk * s * s * a * a * (r * r).sum(1)
    nll = -gm.log_prob(y)
    # differences between windows: the truncated log-SNR range [-5, 9.2] loses ~10% of the
    # integral along the largest eigen-directions of Sigma (measured max error 0.06 nats)
    assert torch.allclose(expected - expected[0], nll - nll[0], atol=0.3)


def test_ml_refinement_lowers_the_energy_monotonically() -> None:
    gm, proc, ctx, mean, prec, base = _problem(16)
    den = gm.denoiser(proc)
    energies = []

    def track(info):  # a fixed-noise estimate of the denoising energy at each iterate
        e = denoising_energy(den, info["y"], num_noise=64,
                             generator=torch.Generator().manual_seed(9))
        energies.append(float(e.sum()))

    refine(den, ctx, base, steps=20, lr=0.05, prox_weight=0.0, dtype=F64, callback=track)
    e = np.array(energies)
    assert e[-1] < 0.5 * e[0], e
    assert (np.diff(e) < 0).mean() >= 0.8, e


def test_refinement_increases_the_exact_conditional_likelihood() -> None:
    gm, proc, ctx, mean, prec, base = _problem()
    den = gm.denoiser(proc)
    out = refine(den, ctx, base, steps=20, lr=0.1, prox_weight=0.0, dtype=F64)
    before, after = _cond_loglik(base, mean, prec), _cond_loglik(out, mean, prec)
    assert out.shape == base.shape
    assert float(before.mean()) < -20 and float(after.mean()) > -3, (before.mean(), after.mean())
    assert float((after > before).to(F64).mean()) >= 0.9
    # the same with Adam on the total energy and with a light regulariser
    out_adam = refine(den, ctx, base, steps=20, lr=0.1, prox_weight=0.0, optimizer="adam",
                      dtype=F64)
    assert float(_cond_loglik(out_adam, mean, prec).mean()) > float(before.mean()) + 15
    out_reg = refine(den, ctx, base, steps=20, lr=0.1, prox_weight=0.05, dtype=F64)
    assert float(before.mean()) < float(_cond_loglik(out_reg, mean, prec).mean()) < \
        float(after.mean()) + 1.0


def test_elbo_ml_refinement_converges_to_the_conditional_mean() -> None:
    gm, proc, ctx, mean, prec, base = _problem(16)
    den = gm.denoiser(proc)
    out = refine(den, ctx, base, steps=150, lr=0.05, prox_weight=0.0, t="elbo", num_noise=2,
                 dtype=F64)
    dist0 = float((base - mean).norm(dim=1).mean())
    dist = float((out - mean).norm(dim=1).mean())
    assert dist0 > 2.5 and dist < 0.3, (dist0, dist)


def test_langevin_samples_the_conditional_distribution() -> None:
    gm, proc, ctx, mean, prec, base = _problem(1)
    den = gm.denoiser(proc)
    cov = torch.linalg.inv(prec)

    def kl(samples):
        m, s = samples.mean(0), torch.cov(samples.T)
        d = m - mean[0]
        return float(0.5 * (torch.trace(prec @ s) + d @ prec @ d - H + torch.logdet(cov)
                            - torch.logdet(s)))

    kw = dict(method="langevin", num_samples=300, steps=60, lr=0.03, prox_weight=0.0, t="elbo",
              dtype=F64)
    out = refine(den, ctx, base, noise_scale=1.0, **kw)
    assert out.shape == (1, 300, H)
    assert kl(out[0]) < 0.25  # measured 0.07
    assert kl(refine(den, ctx, base, noise_scale=0.1, **kw)[0]) > 2.0  # tempered: 4.2


@pytest.mark.parametrize("prior", ["mse", "quantile"])
def test_infinite_prox_weight_keeps_the_base_forecast(prior: str) -> None:
    gm, proc, ctx, mean, prec, base = _problem(8)
    den = gm.denoiser(proc)
    out = refine(den, ctx, base, prox_weight=math.inf, prior=prior, dtype=F64)
    assert torch.equal(out, base)
    big = refine(den, ctx, base, prox_weight=1e8, prior=prior, dtype=F64)
    assert float((big - base).abs().max()) < 1e-5
    lang = refine(den, ctx, base, method="langevin", prox_weight=1e8, prior=prior, dtype=F64)
    # Langevin with a tie of weight lambda leaves N(base, gamma^2 / (2 lambda)) invariant
    # (the exact Ornstein-Uhlenbeck step, prior "mse"); the pinball tie's proximal step
    # shrinks the noise further
    assert float((lang - base).abs().max()) < 6 * 0.1 / math.sqrt(2e8)


def test_langevin_tie_is_exact_for_any_step_size() -> None:
    """Without the energy (a constant denoiser error) the squared-error tie alone must leave
    its Gaussian N(g, gamma^2 / (2 lambda)) invariant, however large ``lr * lambda``."""
    from polydiff.core.denoiser import Denoiser

    class Zero(Denoiser):  # eps_hat = 0: the denoising energy does not depend on y
        def x0_eps(self, x, t, **cond):
            return x / self.process.alpha(t)[:, None], 0.0 * x

    proc = VPDiscrete.linear(100, 1e-4, 0.1)
    ctx = torch.zeros(1, C, dtype=F64)
    base = torch.zeros(1, 4000, H, dtype=F64)
    for lam, lr in ((1.0, 0.1), (50.0, 0.5)):
        out = refine(Zero(proc), ctx, base, method="langevin", prox_weight=lam, lr=lr,
                     noise_scale=1.0, steps=30, dtype=F64)
        assert float(out.std()) == pytest.approx(1 / math.sqrt(2 * lam), rel=0.03)


def _calibrated_base(b: int = 16, s: int = 100):
    """Exact conditional samples (a calibrated sample forecast) and the conditional mean."""
    gm, proc, ctx, mean, prec, _ = _problem(b)
    chol = torch.linalg.cholesky(torch.linalg.inv(prec))
    z = torch.randn(b, s, H, generator=torch.Generator().manual_seed(5), dtype=F64)
    return gm.denoiser(proc), ctx, mean, mean[:, None] + z @ chol.T


def test_keep_spread_refines_the_location_and_keeps_the_spread() -> None:
    den, ctx, mean, exact = _calibrated_base()
    shifted = exact + 1.0  # a biased base forecast with the right spread
    kw = dict(steps=20, lr=0.1, dtype=F64)
    lang = refine(den, ctx, shifted, method="langevin", noise_scale=1.0, keep_spread=True, **kw)
    ml_keep = refine(den, ctx, shifted, method="ml", keep_spread=True, **kw)
    ml = refine(den, ctx, shifted, method="ml", **kw)  # the paper's refinement

    def spread(x):
        return float(x.std(dim=1).mean() / shifted.std(dim=1).mean())

    def bias(x):
        return float((x.mean(dim=1) - mean).abs().mean())

    # the location moves towards the exact conditional mean as much as under ML refinement
    assert bias(lang) < 0.9 * bias(shifted) and bias(ml_keep) < 0.9 * bias(shifted)
    assert bias(lang) == pytest.approx(bias(ml), rel=0.05)
    # Langevin keeps the spread (the kernels add ~6%), ML with the split tie keeps most of
    # it, ML with the plain tie shrinks it
    assert 0.97 < spread(lang) < 1.15
    assert 0.9 < spread(ml_keep) < 1.0
    assert spread(ml) < 0.85
    # a calibrated base stays calibrated: the conditional's 80% interval coverage
    chol_cov = torch.linalg.inv(_problem(16)[4])
    sd = chol_cov.diagonal().sqrt()
    for x in (exact, refine(den, ctx, exact, method="langevin", noise_scale=1.0,
                            keep_spread=True, **kw)):
        lo, hi = x.quantile(0.1, dim=1), x.quantile(0.9, dim=1)
        z = torch.randn(200, 16, H, generator=torch.Generator().manual_seed(9), dtype=F64)
        truth = mean + z * sd
        cover = float(((truth >= lo) & (truth <= hi)).double().mean())
        assert 0.74 < cover < 0.86, cover


def test_prior_prox_matches_brute_force() -> None:
    v = torch.tensor([[-2.0, -0.3, 0.05, 0.4, 3.0]], dtype=F64)
    base = torch.tensor([[0.0, 0.1, 0.0, 0.0, 1.0]], dtype=F64)
    grid = torch.linspace(-5, 5, 200001, dtype=F64)
    for kind, q in [("mse", None), ("quantile", torch.tensor([0.2], dtype=F64))]:
        c = 0.7
        out = _prior_prox(kind, v, base, q, c)
        for j in range(v.shape[1]):
            e = base[0, j] - grid
            r = e * e if kind == "mse" else torch.maximum(0.2 * e, -0.8 * e)
            obj = 0.5 * (grid - v[0, j]) ** 2 + c * r
            assert float(out[0, j]) == pytest.approx(float(grid[obj.argmin()]), abs=1e-4)


def test_quantile_regulariser_orders_the_refined_samples() -> None:
    gm, proc, ctx, mean, prec, base = _problem(32)
    den = gm.denoiser(proc)
    out = refine(den, ctx, base, num_samples=5, prior="quantile", prox_weight=2.0, steps=20,
                 lr=0.1, dtype=F64)
    assert out.shape == (32, 5, H)
    level_means = out.mean(dim=(0, 2))
    assert bool((level_means[1:] >= level_means[:-1]).all()), level_means


def test_observed_context_stays_fixed_and_missing_values_are_refined() -> None:
    gm, proc, ctx, mean, prec, base = _problem(4)
    den = gm.denoiser(proc)
    ctx_nan = ctx.clone()
    ctx_nan[:, [1, 4]] = float("nan")
    windows = []
    out = refine(den, ctx_nan.numpy(), base.numpy(), steps=5, dtype=F64,
                 callback=lambda info: windows.append(info["y"]))
    assert bool(torch.isfinite(out).all())
    last = windows[-1]
    obs = [j for j in range(C) if j not in (1, 4)]
    assert torch.equal(last[:, obs], ctx[:, obs])
    fill = ctx[:, obs].mean(1, keepdim=True)
    assert float((last[:, [1, 4]] - fill).abs().max()) > 0  # moved from the initial fill


def test_network_denoiser_with_channels_and_condition() -> None:
    from polydiff.core.denoiser import ModelDenoiser

    class Net(torch.nn.Module):  # an untrained epsilon network over (B, 1, L) with a feature
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv1d(2, 1, 5, padding=2)

        def forward(self, x, t, *, feat):
            return self.conv(torch.cat([x, feat], dim=1))

    proc = VPDiscrete.linear(100, 1e-4, 0.1)
    den = ModelDenoiser(Net(), proc, "epsilon", time_input=proc.model_timestep)
    ctx = np.sin(np.arange(2 * C).reshape(2, C) / 3.0)
    base = np.zeros((2, 5, H))
    feat = torch.randn(2, 1, L)
    for method in ("ml", "langevin"):
        out = refine(den, ctx, base, method=method, steps=3, cond={"feat": feat},
                     channel_dim=True, prior="quantile")
        assert out.shape == (2, 5, H) and out.dtype == torch.float32
        assert bool(torch.isfinite(out).all()) and not torch.equal(out, torch.zeros_like(out))
    assert all(p.grad is None for p in den.model.parameters())


def test_bad_input() -> None:
    gm, proc, ctx, mean, prec, base = _problem(2)
    den = gm.denoiser(proc)
    with pytest.raises(ValueError, match="base_forecast"):
        refine(den, ctx, base[:1])
    with pytest.raises(ValueError, match="finite"):
        refine(den, ctx, base * float("nan"))
    with pytest.raises(ValueError, match="unknown method"):
        refine(den, ctx, base, method="hmc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="diffusion times"):
        denoising_energy(den, torch.zeros(2, L, dtype=F64), t=2.0)
    with pytest.raises(ValueError, match="keep_spread"):
        refine(den, ctx, base, keep_spread=True, prior="quantile")
