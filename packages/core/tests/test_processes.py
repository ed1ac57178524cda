"""Forward processes: closed forms against numerical derivatives, inverses and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.processes import (
    EDM,
    OUVE,
    VE,
    GaussianProcess,
    LinearInterpolant,
    SubVP,
    TrigInterpolant,
    VPCosine,
    VPDiscrete,
    VPLinear,
    betas_for_alpha_bar,
)

PROCESSES = {
    "vp_linear": VPLinear(),
    "vp_cosine": VPCosine(),
    "sub_vp": SubVP(),
    "ve": VE(),
    "edm": EDM(),
    "ouve": OUVE(),
    "linear": LinearInterpolant(),
    "trig": TrigInterpolant(),
}


def _times(p: GaussianProcess, n: int = 9) -> torch.Tensor:
    lo, hi = p.t_min, p.t_max
    return lo + (hi - lo) * torch.linspace(0.05, 0.95, n, dtype=torch.float64)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_derivatives_match_finite_differences(name):
    p = PROCESSES[name]
    t = _times(p)
    h = 1e-6 * (p.t_max - p.t_min)
    for fn, dfn in ((p.alpha, p.d_alpha), (p.sigma, p.d_sigma)):
        fd = (fn(t + h) - fn(t - h)) / (2 * h)
        torch.testing.assert_close(dfn(t), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_g2_is_consistent_with_marginal_variance(name):
    # (sigma^2)' = 2 f sigma^2 + g^2 for the linear SDE dx = f x dt + g dw
    p = PROCESSES[name]
    t = _times(p)
    h = 1e-6 * (p.t_max - p.t_min)
    dvar = (p.sigma(t + h) ** 2 - p.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(dvar, 2 * p.f(t) * p.sigma(t) ** 2 + p.g2(t), rtol=1e-6, atol=1e-8)
    assert bool((p.g2(t) > 0).all())


@pytest.mark.parametrize("name", list(PROCESSES) + ["vp_discrete"])
def test_log_snr_inverse_round_trips(name):
    p = VPDiscrete.linear() if name == "vp_discrete" else PROCESSES[name]
    t = _times(p)
    lam = p.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all()), "log-SNR must decrease in t"
    torch.testing.assert_close(p.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(p.t_from_sigma_tilde(p.sigma_tilde(t)), t, rtol=1e-9, atol=1e-9)
    # the generic bisection agrees with each closed form
    torch.testing.assert_close(GaussianProcess.t_from_log_snr(p, lam), t, rtol=1e-8, atol=1e-8)


def test_vp_discrete_matches_alphas_cumprod_and_cosine_betas():
    p = VPDiscrete.linear(1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    n = torch.arange(1000, dtype=torch.float64)
    torch.testing.assert_close(p.alpha((n + 1) / 1000) ** 2, ac, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.model_timestep((n + 1) / 1000), n)
    # the cosine schedule, discretised, follows the continuous one closely
    cos = VPCosine(t_max=0.999)
    b = betas_for_alpha_bar(1000, lambda t: (cos.alpha(t) ** 2))
    q = VPDiscrete(betas=b)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(q.alpha(t), cos.alpha(t), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError):
        VPDiscrete(alphas_cumprod=torch.tensor([0.5, 0.9]))


def test_vp_is_variance_preserving_and_subvp_below():
    t = _times(VPLinear())
    vp, sub = VPLinear(), SubVP()
    torch.testing.assert_close(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, torch.ones_like(t))
    assert bool((sub.sigma(t) < vp.sigma(t)).all())


def _simulate_sde(p: GaussianProcess, x0, y, t_end: float, n_steps: int, gen):
    """Euler-Maruyama of the forward SDE dx = f (x - y) dt + g dw from t=0."""
    x = x0.clone()
    dt = t_end / n_steps
    for k in range(n_steps):
        t = torch.full((x.shape[0],), (k + 0.5) * dt, dtype=torch.float64)
        drift, g = p.sde(x, t, y)
        x = x + drift * dt + g * math.sqrt(dt) * torch.randn(x.shape, generator=gen,
                                                             dtype=x.dtype)
    return x


def test_ouve_marginals_match_monte_carlo():
    """SGMSE's OUVE: closed-form mean e^{-theta t} x0 + (1 - e^{-theta t}) y and std against a
    Monte Carlo simulation of its SDE."""
    p = OUVE()
    gen = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.full((n, 2), 1.0, dtype=torch.float64)
    y = torch.tensor([-0.5, 2.0], dtype=torch.float64).expand(n, 2)
    for t_end in (0.3, 1.0):
        x = _simulate_sde(p, x0, y, t_end, 200, gen)
        t = torch.full((n,), t_end, dtype=torch.float64)
        mean = p.marginal_mean(x0, t, y)[0]
        std = float(p.marginal_std(t[:1]))
        se = std / math.sqrt(n)
        assert (x.mean(0) - mean).abs().max() < 5 * se + 2e-3
        assert abs(float(x.std(0).mean()) / std - 1) < 0.02
    # wrong theta would be detected: the mean moves by far more than the tolerance
    assert float((OUVE(theta=1.0).alpha(t) - p.alpha(t)).abs()[0]) > 0.1


def test_ouve_complex_marginal_and_prior():
    p = OUVE()
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(4000, 3, dtype=torch.complex128, generator=gen)
    x0 = torch.zeros_like(y)
    t = torch.full((4000,), 0.7, dtype=torch.float64)
    xt, eps = p.marginal(x0, t, y=y, generator=gen)
    z = xt - p.marginal_mean(x0, t, y)
    s = float(p.sigma(t[:1]))
    assert abs(float(z.abs().pow(2).mean()) / s**2 - 1) < 0.05  # E|x_t - mean|^2 = sigma^2
    prior = p.prior_sample(y.shape, y=y, generator=gen)
    assert prior.dtype == torch.complex128
    assert abs(float((prior - y).abs().pow(2).mean()) / p.prior_std() ** 2 - 1) < 0.05
    with pytest.raises(ValueError, match="mean-reverting"):
        p.center({})


@pytest.mark.parametrize("name", ["vp_linear", "sub_vp", "trig"])
def test_forward_sde_reproduces_marginal(name):
    p = PROCESSES[name]
    gen = torch.Generator().manual_seed(2)
    n = 20000
    x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
    t0 = p.t_max * 0.5
    x = _simulate_sde(p, x0, None, t0, 200, gen)
    t = torch.full((1,), t0, dtype=torch.float64)
    assert abs(float(x.mean()) - float(p.alpha(t) * 0.8)) < 0.01
    assert abs(float(x.std()) / float(p.sigma(t)) - 1) < 0.02


def test_prior_logp_is_gaussian_density():
    p = VPLinear()
    x = torch.randn(5, 3, dtype=torch.float64)
    d = torch.distributions.Normal(0.0, p.prior_std())
    torch.testing.assert_close(p.prior_logp(x), d.log_prob(x).sum(1))


def test_pf_ode_forms_agree():
    p = VPCosine()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    t = torch.rand(6, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    xt, eps = p.marginal(x0, t, generator=gen)
    score = -eps / p.sigma(t)[:, None]
    torch.testing.assert_close(p.pf_ode(xt, t, score), p.pf_ode_from_x0_eps(x0, eps, t))
