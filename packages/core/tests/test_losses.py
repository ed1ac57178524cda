"""Tests of polydiff.core.losses: weightings by hand, target equivalences, oracle and Bayes-optimal
denoisers, time sampling (importance density and unbiasedness, log-normal statistics), SGMSE's
denoising score matching and a short training run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.losses import (
    DiffusionLoss,
    TimeImportanceSampler,
    denoising_score_matching_loss,
    loss_weight,
    sample_time,
    x0_error_scale,
)
from polydiff.core.param import PREDICTION_TYPES, from_x0_eps
from polydiff.core.processes import EDM, OUVE, LinearInterpolant, VPLinear
from polydiff.core.testbeds import GaussianMixture

F64 = torch.float64
KINDS = PREDICTION_TYPES


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vp_by_hand(t: torch.Tensor, b0: float = 0.1, b1: float = 20.0):
    """alpha, sigma, beta, alpha', sigma' of VPLinear written out independently."""
    log_a = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    a = torch.exp(log_a)
    s = torch.sqrt(1 - a * a)
    beta = b0 + t * (b1 - b0)
    da = -0.5 * beta * a
    ds = -a * da / s
    return a, s, beta, da, ds


class GuessDenoiser(Denoiser):
    """A fixed, imperfect denoiser: ``x0_hat = 0.7 tanh(x - c) + 0.1 t + c``."""

    def x0_eps(self, x, t, **cond):
        y = self.center(cond)
        z = x if y is None else x - y
        tt = t.to(x.real.dtype if x.is_complex() else x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        z0 = 0.7 * torch.tanh(z.real) + 0.1 * tt
        if x.is_complex():
            z0 = z0 + 0.5j * torch.tanh(z.imag)
        x0 = z0 if y is None else z0 + y
        a = self.process.alpha(t).reshape(tt.shape)
        s = self.process.sigma(t).reshape(tt.shape)
        return x0, (z - a * z0) / s


def _as_network(den: Denoiser, kind: str):
    """A raw network predicting ``kind`` that represents the denoiser ``den``."""
    def net(x, t, **cond):
        tt = t.to(F64)
        x0, eps = den.x0_eps(x, tt, **cond)
        return from_x0_eps(x0, eps, kind, x, tt, den.process, den.center(cond))
    return net


# --------------------------------------------------------------------------- weights
def test_weightings_by_hand():
    p = VPLinear()
    t = torch.tensor([0.02, 0.3, 0.7, 0.95], dtype=F64)
    a, s, beta, _, _ = _vp_by_hand(t)
    snr = a * a / (s * s)
    st = s / a
    expected = {
        ("uniform", "epsilon"): snr,
        ("uniform", "sample"): torch.ones_like(t),
        ("uniform", "v_prediction"): snr + 1,
        ("snr", "sample"): snr,
        ("min_snr", "epsilon"): torch.clamp(snr, max=5.0),
        ("edm", "sample"): (st**2 + 0.25) / (st**2 * 0.25),
        ("likelihood", "epsilon"): beta * a * a / s**4,
    }
    for (weighting, target), w in expected.items():
        got = loss_weight(p, t, weighting, target)
        torch.testing.assert_close(got, w, rtol=1e-10, atol=0)
    # per-sample losses are those weights times the x0-space MSE of the denoiser
    x0 = torch.randn(4, 3, 2, dtype=F64, generator=_gen(0))
    eps = torch.randn(4, 3, 2, dtype=F64, generator=_gen(1))
    den = GuessDenoiser(p)
    x_t = a[:, None, None] * x0 + s[:, None, None] * eps
    mse = (den.x0(x_t, t) - x0).pow(2).mean((1, 2))
    for (weighting, target), w in expected.items():
        loss = DiffusionLoss(p, target=target, weighting=weighting)
        got = loss.per_sample(den, x0, t=t, eps=eps)
        torch.testing.assert_close(got, w * mse, rtol=1e-10, atol=0)
    # min-SNR on eps targets is min(SNR, gamma) / SNR (Hang et al. 2023)
    loss = DiffusionLoss(p, target="epsilon", weighting="min_snr", min_snr_gamma=2.0)
    torch.testing.assert_close(loss.weight_in(t, "epsilon"), torch.clamp(snr, max=2.0) / snr)
    # EDM weighting on the EDM process: sigma~ = t
    te = torch.tensor([0.01, 0.5, 3.0, 40.0], dtype=F64)
    torch.testing.assert_close(loss_weight(EDM(), te, "edm", sigma_data=0.7),
                               (te**2 + 0.49) / (te * 0.7) ** 2)


@pytest.mark.parametrize("process", [VPLinear(), LinearInterpolant(), EDM()],
                         ids=["vp", "flow", "edm"])
def test_error_scales_by_hand(process):
    t = torch.tensor([0.1, 0.4, 0.8], dtype=F64)
    a, s = process.alpha(t), process.sigma(t)
    da, ds = process.d_alpha(t), process.d_sigma(t)
    snr = a * a / (s * s)
    hand = {"sample": torch.ones_like(t), "epsilon": snr, "v_prediction": (a * a + s * s) ** 2
            / (s * s), "score": snr / (s * s), "flow": ((a * ds - s * da) / s) ** 2}
    for kind, v in hand.items():
        torch.testing.assert_close(x0_error_scale(process, t, kind) ** 2, v, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", ["vp", "flow", "ouve_complex"])
def test_targets_agree_up_to_documented_weights(case):
    """The same denoiser presented as any parameterization gives the same loss; each target's
    unweighted loss is its hand-computed MSE, i.e. the x0-MSE times s_k^2."""
    shape, cond = (5, 2, 3), {}
    if case == "vp":
        p, dtype = VPLinear(), F64
    elif case == "flow":
        p, dtype = LinearInterpolant(), F64
    else:
        p, dtype = OUVE(), torch.complex128
    x0 = torch.randn(shape, dtype=dtype, generator=_gen(2))
    eps = torch.randn(shape, dtype=dtype, generator=_gen(3))
    t = torch.tensor([0.05, 0.2, 0.45, 0.7, 0.9], dtype=F64)
    y = None
    if case == "ouve_complex":
        y = x0 + 0.3 * torch.randn(shape, dtype=dtype, generator=_gen(4))
        cond = {"y": y}
    den = GuessDenoiser(p)
    a, s = p.alpha(t)[:, None, None], p.sigma(t)[:, None, None]
    da, ds = p.d_alpha(t)[:, None, None], p.d_sigma(t)[:, None, None]
    c = 0 if y is None else y
    x_t = c + a * (x0 - c) + s * eps
    x0_hat = den.x0(x_t, t, **cond)
    e_hat = (x_t - c - a * (x0_hat - c)) / s
    hand = {  # (prediction, truth) written out per target
        "sample": (x0_hat, x0),
        "epsilon": (e_hat, eps),
        "v_prediction": (a * e_hat - s * (x0_hat - c), a * eps - s * (x0 - c)),
        "score": (-e_hat / s, -eps / s),
        "flow": (da * (x0_hat - c) + ds * e_hat, da * (x0 - c) + ds * eps),
    }
    x0_mse = (x0_hat - x0).abs().pow(2).mean((1, 2))
    for target in KINDS:
        pred, true = hand[target]
        mse = (pred - true).abs().pow(2).mean((1, 2))
        scale2 = x0_error_scale(p, t, target) ** 2
        torch.testing.assert_close(mse, scale2 * x0_mse, rtol=1e-9, atol=1e-14)
        for weighting in ("uniform", "snr", "min_snr", "edm", "likelihood"):
            loss = DiffusionLoss(p, target=target, weighting=weighting)
            w = loss.weight(t)
            ref = w * x0_mse
            if weighting == "uniform":
                torch.testing.assert_close(ref, mse, rtol=1e-9, atol=1e-14)
            models = [den, _as_network(den, target)]
            models += [ModelDenoiser(_as_network(den, k), p, k) for k in KINDS]
            for m in models:
                got = loss.per_sample(m, x0, cond=cond, t=t, eps=eps)
                torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-13)


# --------------------------------------------------------------------------- perfect models
@pytest.mark.parametrize("kind", KINDS)
def test_oracle_model_has_zero_loss(kind):
    p = VPLinear()
    x0 = torch.randn(6, 4, dtype=F64, generator=_gen(5))
    eps = torch.randn(6, 4, dtype=F64, generator=_gen(6))
    t = torch.linspace(0.05, 0.95, 6, dtype=F64)

    def oracle(x, tt, **cond):  # knows the true (x0, eps) of this batch
        return from_x0_eps(x0, eps, kind, x, tt.to(F64), p)

    for weighting in ("uniform", "min_snr", "likelihood"):
        for target in ("epsilon", "v_prediction"):
            loss = DiffusionLoss(p, target=target, weighting=weighting)
            val = loss(ModelDenoiser(oracle, p, kind), x0, t=t, eps=eps)
            assert float(val) < 1e-20
    def off_by_tenth(x, tt, **cond):  # x0 estimate off by 0.1, eps consistent with x_t
        tt = tt.to(F64)
        e_hat = (x - p.alpha(tt)[:, None] * (x0 + 0.1)) / p.sigma(tt)[:, None]
        return from_x0_eps(x0 + 0.1, e_hat, kind, x, tt, p)

    bad = ModelDenoiser(off_by_tenth, p, kind)
    assert float(DiffusionLoss(p, "sample")(bad, x0, t=t, eps=eps)) == pytest.approx(0.01)


def test_exact_denoiser_attains_bayes_risk():
    """For Gaussian data N(m, diag(v)) the optimal x0-MSE at time t is
    mean_d v_d sigma^2 / (alpha^2 v_d + sigma^2); the exact test-bed denoiser attains it."""
    p = VPLinear()
    v = torch.tensor([0.2, 1.0, 2.5], dtype=F64)
    mix = GaussianMixture(torch.tensor([[0.5, -1.0, 0.3]], dtype=F64), v[None])
    n, t0 = 40000, 0.35
    x0 = mix.sample(n, _gen(7))
    a, s = float(p.alpha(torch.tensor(t0, dtype=F64))), float(p.sigma(torch.tensor(t0,
                                                                                   dtype=F64)))
    risk = float((v * s**2 / (a * a * v + s**2)).mean())
    den = mix.denoiser(p)
    for target, factor in (("sample", 1.0), ("epsilon", a * a / s**2)):
        val = DiffusionLoss(p, target=target)(den, x0, t=t0, generator=_gen(8))
        assert float(val) == pytest.approx(factor * risk, rel=0.02)
    worse = DiffusionLoss(p, "sample")(GuessDenoiser(p), x0, t=t0, generator=_gen(8))
    assert float(worse) > 1.2 * risk


# --------------------------------------------------------------------------- time sampling
def _vp_likelihood_cdf(t: torch.Tensor, p: VPLinear) -> torch.Tensor:
    """Exact CDF of density ~ beta / sigma^2 on [t_min, t_max]: with B(t) = int beta,
    sigma^2 = 1 - exp(-B) and the antiderivative log(expm1(B))."""
    def prim(tt):
        big_b = p.beta_min * tt + 0.5 * (p.beta_max - p.beta_min) * tt**2
        return torch.log(torch.expm1(big_b))
    lo, hi = torch.tensor(p.t_min, dtype=F64), torch.tensor(p.t_max, dtype=F64)
    return (prim(t) - prim(lo)) / (prim(hi) - prim(lo))


def test_importance_sampling_density_and_unbiasedness():
    p = VPLinear()
    n = 200_000
    t, w = sample_time(p, n, "importance", generator=_gen(9))
    assert float(t.min()) >= p.t_min and float(t.max()) <= p.t_max
    # empirical CDF vs the exact CDF (Kolmogorov distance; DKW bound at n=2e5 is ~0.004)
    ts, _ = torch.sort(t)
    emp = torch.arange(1, n + 1, dtype=F64) / n
    assert float((emp - _vp_likelihood_cdf(ts, p)).abs().max()) < 0.005
    # histogram (log-spaced bins) vs exact bin probabilities
    edges = torch.logspace(math.log10(p.t_min), 0.0, 16, dtype=F64)
    counts = torch.histogram(t, bins=edges).hist / n
    probs = torch.diff(_vp_likelihood_cdf(edges, p))
    torch.testing.assert_close(counts, probs, rtol=0.05, atol=0.002)
    # the tabulated density matches beta / sigma^2 / Z in the bulk
    sampler = TimeImportanceSampler(p)
    tm = torch.tensor([0.01, 0.1, 0.5, 0.9], dtype=F64)
    a, s, beta, _, _ = _vp_by_hand(tm)
    big_b = lambda u: p.beta_min * u + 0.5 * (p.beta_max - p.beta_min) * u**2  # noqa: E731
    z = math.log(math.expm1(big_b(1.0))) - math.log(math.expm1(big_b(p.t_min)))
    torch.testing.assert_close(sampler.pdf(tm), beta / s**2 / z, rtol=1e-3, atol=0)
    # unbiased: E_q[w f(t)] = E_uniform[f(t)] for f(t) = t^2 and f = likelihood weight
    uni = (p.t_max**3 - p.t_min**3) / 3 / (p.t_max - p.t_min)
    assert float((w * t**2).mean()) == pytest.approx(uni, rel=0.01)
    # importance sampling of the likelihood weight makes the weighted integrand constant
    const = w * p.g2(t) / p.sigma(t) ** 2
    torch.testing.assert_close(const, torch.full_like(const, z / (p.t_max - p.t_min)),
                               rtol=2e-3, atol=0)


def test_importance_sampled_loss_weights():
    p = VPLinear()
    loss = DiffusionLoss(p, target="epsilon", weighting="likelihood", time_sampling="importance")
    x0 = torch.randn(4096, 2, dtype=F64, generator=_gen(10))
    den = GuessDenoiser(p)
    g = _gen(11)
    per = loss.per_sample(den, x0, generator=g)
    # same draw by hand: t and eps from the same generator state
    g = _gen(11)
    t, iw = loss.sample_time(4096, generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    e_mse = (den.eps(x_t, t) - eps).pow(2).mean(1)
    torch.testing.assert_close(per, iw * p.g2(t) / s[:, 0] ** 2 * e_mse)
    # Song et al.: the per-sample weight is the constant Z / (t_max - t_min)
    ratio = per / e_mse
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.median())), rtol=2e-3,
                               atol=0)


def test_lognormal_sigma_statistics():
    n = 100_000
    t, w = sample_time(EDM(), n, "lognormal", generator=_gen(12))  # sigma~ = t
    assert bool((w == 1).all())
    ln = torch.log(t)
    assert float(ln.mean()) == pytest.approx(-1.2, abs=0.015)
    assert float(ln.std()) == pytest.approx(1.2, abs=0.015)
    t2, _ = sample_time(EDM(), n, "lognormal", generator=_gen(12), p_mean=0.4, p_std=0.5)
    assert float(torch.log(t2).mean()) == pytest.approx(0.4, abs=0.01)
    # VP: mapped through t_from_sigma_tilde and clipped; quantiles of ln sigma~ are Gaussian
    p = VPLinear()
    tv, _ = sample_time(p, n, "lognormal", generator=_gen(13))
    assert float(tv.min()) >= p.t_min and float(tv.max()) <= p.t_max
    q = torch.quantile(torch.log(p.sigma_tilde(tv)), torch.tensor([0.25, 0.5, 0.75], dtype=F64))
    ref = torch.tensor([-1.2 - 0.67449 * 1.2, -1.2, -1.2 + 0.67449 * 1.2], dtype=F64)
    torch.testing.assert_close(q, ref, rtol=0, atol=0.02)


def test_uniform_time_sampling_range():
    p = OUVE()
    t, w = sample_time(p, 50_000, generator=_gen(14))
    assert float(t.min()) >= p.t_min and float(t.max()) <= p.t_max
    assert float(t.mean()) == pytest.approx(0.5 * (p.t_min + p.t_max), abs=0.005)
    assert bool((w == 1).all())


# --------------------------------------------------------------------------- SGMSE
def test_denoising_score_matching_matches_sgmse_form():
    """SGMSE+'s loss: mean over the batch of 1/2 sum |sigma s(x_t, y, t) + z|^2 (complex)."""
    p = OUVE()
    shape = (3, 1, 4, 5)
    x0 = torch.randn(shape, dtype=torch.complex128, generator=_gen(15))
    y = x0 + 0.5 * torch.randn(shape, dtype=torch.complex128, generator=_gen(16))
    z = torch.randn(shape, dtype=torch.complex128, generator=_gen(17))
    t = torch.tensor([0.05, 0.4, 0.9], dtype=F64)

    def score_net(x, tt, y):
        return -0.8 * (x - y) * (1 + tt.reshape(-1, 1, 1, 1)) + 0.1j * x

    mean = y + p.alpha(t).reshape(-1, 1, 1, 1) * (x0 - y)
    sig = p.sigma(t).reshape(-1, 1, 1, 1)
    err = score_net(mean + sig * z, t, y) * sig + z
    ref = torch.mean(0.5 * torch.sum(err.abs().square().reshape(3, -1), dim=-1))
    got = denoising_score_matching_loss(score_net, x0, p, cond={"y": y}, t=t, eps=z)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)
    # the generic loss: target "score" with SNR weighting (sigma^2 on the score-MSE) ...
    generic = DiffusionLoss(p, target="score", weighting="snr", dim_reduction="sum")
    torch.testing.assert_close(0.5 * generic(score_net, x0, cond={"y": y}, t=t, eps=z), ref)
    # ... which is the plain eps-MSE of the same network
    eps_loss = DiffusionLoss(p, target="epsilon", dim_reduction="sum")
    md = ModelDenoiser(score_net, p, "score")
    torch.testing.assert_close(0.5 * eps_loss(md, x0, cond={"y": y}, t=t, eps=z), ref)
    with pytest.raises(ValueError, match="mean-reverting"):
        denoising_score_matching_loss(score_net, x0, p, t=t, eps=z)


# --------------------------------------------------------------------------- training
@pytest.fixture
def one_thread():
    """Tiny networks run fastest (and immune to a loaded machine) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_tiny_mlp_reduces_loss(one_thread):
    torch.manual_seed(0)
    mix = GaussianMixture.random(2, 4, seed=1, cov="diag")
    p = VPLinear()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                                   nn.Linear(64, 2))

        def forward(self, x, t):
            return self.f(torch.cat([x, t[:, None]], 1))

    net = Net()
    model = ModelDenoiser(net, p, "epsilon")
    loss = DiffusionLoss(p, target="epsilon", weighting="min_snr")
    g = _gen(18)
    x_eval = mix.sample(2048, _gen(19)).float()
    t_eval, _ = sample_time(p, 2048, generator=_gen(20))
    e_eval = torch.randn(x_eval.shape, generator=_gen(21))
    with torch.no_grad():
        before = float(loss(model, x_eval, t=t_eval, eps=e_eval))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        x0 = mix.sample(128, g).float()
        val = loss(model, x0, generator=g)
        opt.zero_grad()
        val.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss(model, x_eval, t=t_eval, eps=e_eval))
    assert after < 0.6 * before, (before, after)


def test_bad_arguments():
    p = VPLinear()
    with pytest.raises(ValueError):
        DiffusionLoss(p, target="noise")
    with pytest.raises(ValueError):
        DiffusionLoss(p, weighting="p2")
    with pytest.raises(ValueError):
        sample_time(p, 3, "beta")
    custom = DiffusionLoss(p, target="sample", weighting=lambda t: 2 * t)
    t = torch.tensor([0.25, 0.5], dtype=F64)
    torch.testing.assert_close(custom.weight(t), 2 * t)


def test_mask_restricts_the_error_to_observed_entries() -> None:
    """A mask of ones changes nothing; a partial mask equals the hand-computed masked mean
    and sum; a fully masked sample contributes zero."""
    from polydiff.core.losses import DiffusionLoss
    from polydiff.core.processes import VPCosine

    process = VPCosine()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 1, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 0.9], dtype=torch.float64)
    eps = torch.randn(4, 1, 6, generator=g, dtype=torch.float64)

    def net(x, tt):
        return 0.3 * x + tt.view(-1, 1, 1)

    mask = (torch.rand(4, 1, 6, generator=g) > 0.4).double()
    mask[3] = 0
    for red in ("mean", "sum"):
        loss = DiffusionLoss(process, dim_reduction=red)
        plain = loss.per_sample(net, x0, t=t, eps=eps)
        ones = loss.per_sample(net, x0, t=t, eps=eps, mask=torch.ones(4, 1, 6))
        torch.testing.assert_close(ones, plain, rtol=0, atol=0)
        x_t, _ = process.marginal(x0, t, eps=eps)
        sq = (net(x_t, t) - eps).square() * mask
        want = sq.sum((1, 2))
        if red == "mean":
            want = want / mask.sum((1, 2)).clamp_min(1)
        got = loss.per_sample(net, x0, t=t, eps=eps, mask=mask)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert got[3] == 0 and not torch.allclose(got, plain)
