"""Tests of the exact Gaussian-mixture test beds and the reference probability-flow ODE.

Every exact quantity is checked against an independent reference: dense-matrix posterior means
(Cholesky factors of the dense covariances, no eigendecompositions), float64 autograd of
``log_prob_t``, scipy densities, quadrature, Monte Carlo, and closed-form ODE flows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from scipy.integrate import solve_ivp

from polydiff.core.denoiser import Denoiser
from polydiff.core.processes import (
    EDM,
    OUVE,
    VE,
    GaussianProcess,
    LinearInterpolant,
    SubVP,
    VPCosine,
    VPLinear,
)
from polydiff.core.testbeds import GaussianMixture, LowRankMixture, reference_pf_ode

F64 = torch.float64

MIXTURES = {
    "full": lambda: GaussianMixture.random(3, 3, seed=0, cov="full"),
    "diag": lambda: GaussianMixture.random(3, 4, seed=1, cov="diag"),
    "lowrank": lambda: LowRankMixture.random(4, rank=2, n_components=3, seed=2),
    "lowrank_noisy": lambda: LowRankMixture.random(4, rank=1, n_components=2, seed=3,
                                                    noise_std=0.1),
}
PROCESSES = {
    "vp": VPLinear, "vpcos": VPCosine, "subvp": SubVP, "ve": VE, "edm": EDM, "ouve": OUVE,
    "linear": LinearInterpolant,
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny float64 tensors: intra-op threads only add overhead (and contention in CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _setup(gm: GaussianMixture, proc: GaussianProcess, batch: int = 16, seed: int = 0):
    """Per-sample times spread over the process's range, a centre y if needed, and x_t."""
    g = _gen(seed)
    u = torch.rand(batch, generator=g, dtype=F64)
    t = proc.t_min + (proc.t_max - proc.t_min) * (0.02 + 0.96 * u)
    if isinstance(proc, EDM):
        t = torch.exp(math.log(0.02) + u * math.log(20 / 0.02))  # sigma in [0.02, 20]
    y = torch.randn(batch, gm.dim, generator=g, dtype=F64) if proc.center_key else None
    x = gm.sample_t(batch, t, proc, y=y, generator=g)
    return x, t, y


def _dense_x0_eps(gm: GaussianMixture, proc: GaussianProcess, x, t, y):
    """Brute-force reference: dense covariances and their Cholesky factors."""
    a, s = proc.alpha(t).reshape(-1, 1, 1), proc.sigma(t).reshape(-1, 1, 1)  # (B, K, D)
    eye = torch.eye(gm.dim, dtype=F64)
    cov = gm.covs[None]
    big_s = a[..., None] ** 2 * cov + s[..., None] ** 2 * eye  # (B, K, D, D)
    c = torch.zeros_like(x) if y is None else y
    m = a * gm.means[None] + (1 - a) * c[:, None]  # (B, K, D)
    chol = torch.linalg.cholesky(big_s)
    half = torch.linalg.solve_triangular(chol, (x[:, None] - m)[..., None], upper=False)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    lognormal = -0.5 * (half[..., 0].pow(2).sum(-1) + logdet + gm.dim * math.log(2 * math.pi))
    logp = lognormal + gm.weights.log()
    r = torch.softmax(logp, -1)[..., None]
    sol = torch.cholesky_solve((x[:, None] - m)[..., None], chol)[..., 0]
    x0k = gm.means[None] + a * (cov @ sol[..., None])[..., 0]
    x0 = (r * x0k).sum(1)
    eps = (x - c - a[:, 0] * (x0 - c)) / s[:, 0]
    return x0, eps, torch.logsumexp(logp, -1)


@pytest.mark.parametrize("pname", list(PROCESSES))
@pytest.mark.parametrize("mname", list(MIXTURES))
def test_exact_quantities_match_dense_reference_and_autograd(mname: str, pname: str) -> None:
    gm, proc = MIXTURES[mname](), PROCESSES[pname]()
    x, t, y = _setup(gm, proc)
    x0, eps = gm.x0_eps(x, t, proc, y=y)
    rx0, reps, rlogp = _dense_x0_eps(gm, proc, x, t, y)
    torch.testing.assert_close(x0, rx0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps, reps, rtol=1e-8, atol=1e-8)
    xg = x.clone().requires_grad_(True)
    logp = gm.log_prob_t(xg, t, proc, y=y)
    torch.testing.assert_close(logp.detach(), rlogp, rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(logp.sum(), xg)
    score = gm.score(x, t, proc, y=y)
    torch.testing.assert_close(score, grad, rtol=1e-8, atol=1e-8)
    # Tweedie: alpha (E[x0|x] - c) = (x - c) + sigma^2 grad log p_t
    a, s = proc.alpha(t)[:, None], proc.sigma(t)[:, None]
    c = 0.0 if y is None else y
    torch.testing.assert_close(a * (x0 - c), (x - c) + s * s * grad, rtol=1e-8, atol=1e-8)


def test_posterior_mean_matches_importance_sampling() -> None:
    gm, proc = GaussianMixture.random(2, 3, seed=4), VPLinear()
    x0s = gm.sample(400_000, _gen(1))
    t = torch.tensor([0.3, 0.5, 0.7], dtype=F64)
    x = gm.sample_t(3, t, proc, generator=_gen(2))
    a, s = proc.alpha(t), proc.sigma(t)
    logw = -0.5 * ((x[:, None] - a[:, None, None] * x0s[None]) ** 2).sum(-1) / s[:, None] ** 2
    w = torch.softmax(logw, -1)
    mc = w @ x0s
    ess = 1.0 / (w * w).sum(-1)
    assert ess.min() > 500
    x0 = gm.x0_eps(x, t, proc)[0]
    torch.testing.assert_close(x0, mc, rtol=0, atol=0.05)


def test_log_prob_t_integrates_to_one() -> None:
    gm1 = GaussianMixture([[-1.0], [1.5]], [[0.1], [0.4]], [0.3, 0.7])
    grid = torch.linspace(-12, 12, 24001, dtype=F64)[:, None]
    for t in (0.05, 0.5, 1.0):
        p = gm1.log_prob_t(grid, t, VPLinear()).exp()
        assert abs(torch.trapezoid(p, grid[:, 0]).item() - 1) < 1e-8
    gm2 = LowRankMixture.random(2, rank=1, n_components=3, seed=5)
    ax = torch.linspace(-9, 9, 721, dtype=F64)
    xx, yy = torch.meshgrid(ax, ax, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    p = gm2.log_prob_t(pts, 0.3, EDM()).exp().reshape(721, 721)
    mass = torch.trapezoid(torch.trapezoid(p, ax, dim=1), ax).item()
    assert abs(mass - 1) < 1e-6


def test_log_prob_matches_scipy() -> None:
    gm = GaussianMixture.random(3, 3, seed=6)
    x = gm.sample(50, _gen(0))
    ref = np.logaddexp.reduce(np.stack([
        np.log(w) + stats.multivariate_normal(m, c).logpdf(x.numpy())
        for w, m, c in zip(gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy(), strict=True)
    ]), axis=0)
    np.testing.assert_allclose(gm.log_prob(x).numpy(), ref, rtol=1e-11, atol=1e-11)
    single = GaussianMixture(gm.means[:1], gm.covs[:1])
    np.testing.assert_allclose(
        single.log_prob(x).numpy(),
        stats.multivariate_normal(gm.means[0].numpy(), gm.covs[0].numpy()).logpdf(x.numpy()),
        rtol=1e-11, atol=1e-11)
    diag = GaussianMixture.random(3, 1, seed=7, cov="diag")
    np.testing.assert_allclose(
        diag.log_prob(x).numpy(),
        stats.norm(diag.means[0].numpy(), diag.covs[0].diagonal().sqrt().numpy())
        .logpdf(x.numpy()).sum(1), rtol=1e-11)
    noisy = LowRankMixture.random(3, rank=1, n_components=2, seed=8, noise_std=0.2)
    np.testing.assert_allclose(noisy.log_prob(x).numpy(), GaussianMixture(
        noisy.means, noisy.covs, noisy.weights).log_prob(x).numpy(), rtol=1e-11)


def test_singular_data_density_raises() -> None:
    gm = LowRankMixture.random(3, rank=1, n_components=2, seed=0)
    with pytest.raises(ValueError, match="noise_std"):
        gm.log_prob(torch.zeros(2, 3, dtype=F64))
    full = GaussianMixture(gm.means, gm.covs, gm.weights)  # the same law, dense eigen-path
    with pytest.raises(ValueError, match="singular"):
        full.log_prob(torch.zeros(2, 3, dtype=F64))
    x = gm.sample_t(8, 0.01, VPLinear(), generator=_gen(0))
    for a, b in zip(full.x0_eps(x, 0.01, VPLinear()), gm.x0_eps(x, 0.01, VPLinear()),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError):
        GaussianMixture(torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError):
        GaussianMixture(torch.zeros(1, 2), -torch.eye(2)[None])


def test_samples_and_moments() -> None:
    gm = GaussianMixture.random(3, 3, seed=9)
    x, labels = gm.sample(200_000, _gen(0), return_labels=True)
    mean, cov = gm.moments()
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=0.02)
    torch.testing.assert_close(x.T.cov(), cov, rtol=0, atol=0.03)
    freq = torch.bincount(labels, minlength=3).to(F64) / len(labels)
    torch.testing.assert_close(freq, gm.weights, rtol=0, atol=0.01)
    k0 = x[labels == 0]
    torch.testing.assert_close(k0.T.cov(), gm.covs[0], rtol=0, atol=0.02)
    # exact noisy marginal: mean alpha mu + (1 - alpha) y, covariance alpha^2 Cov + sigma^2 I
    proc, y = OUVE(), torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    xt = gm.sample_t(200_000, 0.6, proc, y=y, generator=_gen(1))
    a, s = proc.alpha(torch.tensor(0.6, dtype=F64)), proc.sigma(torch.tensor(0.6, dtype=F64))
    torch.testing.assert_close(xt.mean(0), a * mean + (1 - a) * y, rtol=0, atol=0.02)
    torch.testing.assert_close(xt.T.cov(), a * a * cov + s * s * torch.eye(3, dtype=F64),
                               rtol=0, atol=0.03)


def test_low_rank_samples_lie_in_subspaces() -> None:
    gm = LowRankMixture.random(6, rank=2, n_components=4, seed=10)
    x, labels = gm.sample(1000, _gen(0), return_labels=True)
    assert gm.subspace_distance(x).max() < 1e-12
    r = x - gm.means[labels]
    u = gm.factors[labels]  # (n, D, r)
    coef = torch.linalg.lstsq(u, r[..., None]).solution
    assert (u @ coef - r[..., None]).abs().max() < 1e-12
    assert gm.subspace_distance(x + 0.1 * torch.randn(x.shape, generator=_gen(1),
                                                       dtype=F64)).min() > 1e-3
    noisy = LowRankMixture(gm.means[:1], gm.factors[:1], noise_std=0.3)
    xn = noisy.sample(200_000, _gen(2))
    ref = gm.factors[0] @ gm.factors[0].T + 0.09 * torch.eye(6, dtype=F64)
    torch.testing.assert_close(xn.T.cov(), ref, rtol=0, atol=0.02)


def test_random_constructors() -> None:
    a, b = GaussianMixture.random(5, 4, seed=3), GaussianMixture.random(5, 4, seed=3)
    torch.testing.assert_close(a.covs, b.covs)
    assert not torch.allclose(a.means, GaussianMixture.random(5, 4, seed=4).means)
    for cov in ("full", "diag"):
        gm = GaussianMixture.random(8, 5, seed=0, cov=cov)
        ev = torch.linalg.eigvalsh(gm.covs)
        cond = ev[:, -1] / ev[:, 0]
        assert (cond <= 100 + 1e-6).all() and cond.max() > 10
        dists = torch.cdist(gm.means, gm.means)
        assert dists[dists > 0].min() > 3 * ev[:, -1].sqrt().max()  # well separated modes
    lr = LowRankMixture.random(7, rank=3, n_components=2, seed=0)
    assert lr.rank == 3 and torch.linalg.matrix_rank(lr.covs[0]) == 3
    with pytest.raises(ValueError):
        GaussianMixture.random(3, 2, cov="tri")


def test_denoiser_dtype_shape_and_cond() -> None:
    gm, proc = GaussianMixture.random(4, 3, seed=11), OUVE()
    den = gm.denoiser(proc)
    assert isinstance(den, Denoiser)
    x, t, y = _setup(gm, proc, batch=6)
    x0, eps = den.x0_eps(x.float().reshape(6, 1, 2, 2), t, y=y.float().reshape(6, 1, 2, 2))
    assert x0.dtype == torch.float32 and x0.shape == (6, 1, 2, 2)
    ref = gm.x0_eps(x, t, proc, y=y)
    torch.testing.assert_close(x0.reshape(6, 4).double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps.reshape(6, 4).double(), ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(den.score(x, t, y=y), gm.score(x, t, proc, y=y))
    with pytest.raises(ValueError, match="y"):
        den.x0_eps(x, t)
    vp = VPLinear()
    x0z, epsz = gm.denoiser(vp).x0_eps(x, torch.zeros(6, dtype=F64))  # sigma = 0: identity
    torch.testing.assert_close(x0z, x)
    assert (epsz == 0).all()


# --------------------------------------------------------------------------- reference ODE
def _single_gaussian_flow(mu, cov, xt0, st0: float, st1: float):
    """Closed-form PF-ODE flow of N(mu, C) in scaled variables:
    x~(s1) = mu + (C + s1^2)^{1/2} (C + s0^2)^{-1/2} (x~(s0) - mu)."""
    lam, v = torch.linalg.eigh(cov)
    lam = torch.where(lam > 1e-12 * lam.max(), lam, 0.0)  # exact zeros for low-rank C
    gain = ((lam + st1**2) / (lam + st0**2)).sqrt()
    return mu + ((xt0 - mu) @ v) * gain @ v.T


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_reference_pf_ode_single_gaussian_closed_form(kind: str) -> None:
    if kind == "full":
        gm = GaussianMixture.random(3, 1, seed=12)
    else:
        gm = LowRankMixture.random(3, rank=2, n_components=1, seed=12)
    proc = VPLinear()
    t0, t1 = torch.tensor(0.8, dtype=F64), torch.tensor(0.2, dtype=F64)
    st0, st1 = float(proc.sigma_tilde(t0)), float(proc.sigma_tilde(t1))
    x = gm.sample_t(8, t0, proc, generator=_gen(0))
    xt0 = x / proc.alpha(t0)
    mid = reference_pf_ode(gm, proc, x, t0, t1)
    ref = proc.alpha(t1) * _single_gaussian_flow(gm.means[0], gm.covs[0], xt0, st0, st1)
    torch.testing.assert_close(mid, ref, rtol=1e-10, atol=1e-10)
    end = reference_pf_ode(gm, proc, x, t0)
    ref = _single_gaussian_flow(gm.means[0], gm.covs[0], xt0, st0, 0.0)
    torch.testing.assert_close(end, ref, rtol=1e-10, atol=1e-10)


def test_reference_pf_ode_maps_quantiles_1d() -> None:
    """In 1-D the flow map is monotone and transports p_{s0} to p_{s1}: F_{s1}(T(x)) = F_{s0}(x)."""
    gm = GaussianMixture([[-2.0], [0.5], [2.0]], [[0.05], [0.3], [0.01]], [0.2, 0.5, 0.3])
    mu, var, w = gm.means[:, 0].numpy(), gm.covs[:, 0, 0].numpy(), gm.weights.numpy()

    def cdf(x: float, s: float) -> float:
        return float((w * stats.norm.cdf(x, mu, np.sqrt(var + s * s))).sum())

    proc, s0 = EDM(), 3.0
    x = torch.linspace(-5, 5, 11, dtype=F64)[:, None]
    for s1 in (0.5, None):
        out = reference_pf_ode(gm, proc, x, s0, s1)
        for xi, oi in zip(x[:, 0].tolist(), out[:, 0].tolist(), strict=True):
            target = cdf(xi, s0)
            ref = optimize.brentq(lambda z, q=target, s=s1 or 0.0: cdf(z, s) - q, -20, 20,
                                  xtol=1e-15, rtol=1e-15)
            assert abs(oi - ref) < 1e-9, (xi, oi, ref)


def test_reference_pf_ode_transports_prior_to_data() -> None:
    gm, proc = GaussianMixture.random(2, 3, seed=13), VPLinear()
    x = gm.sample_t(3000, 1.0, proc, generator=_gen(0))
    out = reference_pf_ode(gm, proc, x, 1.0, rtol=1e-8, atol=1e-9)
    mean, cov = gm.moments()
    torch.testing.assert_close(out.mean(0), mean, rtol=0, atol=0.08)
    torch.testing.assert_close(out.T.cov(), cov, rtol=0, atol=0.15)
    # the endpoints are data: almost all mass near the modes (log-density well above the floor)
    assert (gm.log_prob(out) > -10).float().mean() > 0.99


def test_reference_pf_ode_identical_across_processes() -> None:
    gm = GaussianMixture.random(3, 3, seed=14)
    st0, st1 = 1.0, 0.1
    xt0 = gm.sample_t(5, st0, EDM(), generator=_gen(0))  # scaled variable at sigma~ = st0
    y = torch.randn(5, 3, generator=_gen(1), dtype=F64)
    results_end, results_mid = [], []
    for proc in (VPLinear(), VE(), EDM(), LinearInterpolant(), OUVE()):
        t0 = proc.t_from_sigma_tilde(torch.tensor(st0, dtype=F64))
        t1 = proc.t_from_sigma_tilde(torch.tensor(st1, dtype=F64))
        a0, a1 = proc.alpha(t0), proc.alpha(t1)
        if proc.center_key:  # x - y = alpha (x0 - y) + ...: the same flow of x~ = (x - y)/alpha
            x = y + a0 * (xt0 - y)
            mid = (reference_pf_ode(gm, proc, x, t0, t1, y=y) - y) / a1 + y
            end = reference_pf_ode(gm, proc, x, t0, y=y)
        else:
            x = a0 * xt0
            mid = reference_pf_ode(gm, proc, x, t0, t1) / a1
            end = reference_pf_ode(gm, proc, x, t0)
        results_mid.append(mid)
        results_end.append(end)
    for mid, end in zip(results_mid[1:], results_end[1:], strict=True):
        torch.testing.assert_close(mid, results_mid[0], rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(end, results_end[0], rtol=1e-8, atol=1e-8)


def test_reference_pf_ode_shapes_and_errors() -> None:
    gm, proc = LowRankMixture.random(4, rank=2, n_components=2, seed=15), VPLinear()
    x = gm.sample_t(3, 0.5, proc, generator=_gen(0))
    flat = reference_pf_ode(gm, proc, x, 0.5, 0.3)
    shaped = reference_pf_ode(gm, proc, x.float().reshape(3, 1, 2, 2),
                              torch.full((3,), 0.5, dtype=F64), 0.3)
    assert shaped.shape == (3, 1, 2, 2) and shaped.dtype == F64
    torch.testing.assert_close(shaped.reshape(3, 4), flat, rtol=1e-6, atol=1e-6)
    assert gm.subspace_distance(reference_pf_ode(gm, proc, x, 0.5)).max() < 1e-9
    with pytest.raises(ValueError, match="shared"):
        reference_pf_ode(gm, proc, x, torch.tensor([0.5, 0.4, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="y"):
        reference_pf_ode(gm, OUVE(), x, 0.5)
    with pytest.raises(ValueError, match="4-dimensional"):
        gm.x0_eps(torch.zeros(2, 5), 0.5, proc)


@pytest.mark.parametrize("proc", [SubVP(), OUVE()], ids=["subvp", "ouve"])
def test_reference_pf_ode_matches_native_pf_ode(proc: GaussianProcess) -> None:
    """Independent of the scaled-variable derivation: integrate the process's own PF-ODE
    ``dx/dt = f (x - c) - g^2 score / 2`` (``GaussianProcess.pf_ode``) in process time."""
    gm, batch = GaussianMixture.random(3, 3, seed=16), 6
    y = torch.randn(batch, 3, generator=_gen(1), dtype=F64) if proc.center_key else None
    t0, t1 = 0.9 * proc.t_max, 0.1
    x = gm.sample_t(batch, t0, proc, y=y, generator=_gen(0))

    def rhs(t: float, flat: np.ndarray) -> np.ndarray:
        z, tt = torch.from_numpy(flat.reshape(batch, 3)), torch.full((batch,), t, dtype=F64)
        return proc.pf_ode(z, tt, gm.score(z, tt, proc, y=y), y=y).numpy().ravel()

    sol = solve_ivp(rhs, (t0, t1), x.numpy().ravel(), method="DOP853", rtol=1e-9, atol=1e-10)
    native = torch.from_numpy(sol.y[:, -1].copy()).reshape(batch, 3)
    ref = reference_pf_ode(gm, proc, x, t0, t1, y=y)
    torch.testing.assert_close(ref, native, rtol=1e-8, atol=1e-8)
