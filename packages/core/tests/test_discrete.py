"""Discrete-state diffusion: transitions, posteriors, losses and ancestral sampling.

Oracles: dense transition matrices (products, Bayes' rule), Monte Carlo of the forward chain,
the exact marginal likelihood of a toy model, and an exact x0-posterior model for a known
categorical data distribution.
"""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.processes.discrete import (
    ABSORBING_SCHEDULES,
    AbsorbingProcess,
    MaskAndReplaceProcess,
)
from polydiff.core.samplers.discrete import discrete_time_grid, sample_discrete

F64 = torch.float64


def _make(name: str) -> MaskAndReplaceProcess:
    if name == "vq_default":
        return MaskAndReplaceProcess(5, 10)
    if name == "vq_wide":  # large replace and mask probabilities: Monte Carlo sees them
        return MaskAndReplaceProcess(4, 6, alpha_bar_range=(0.9, 0.05),
                                     gamma_bar_range=(0.05, 0.6))
    if name == "absorbing":
        return AbsorbingProcess(4, 8)
    if name == "absorbing_cosine":
        return AbsorbingProcess(4, 8, schedule="cosine")
    raise KeyError(name)


ALL = ["vq_default", "vq_wide", "absorbing", "absorbing_cosine"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Oracle:
    """Exact ``log p(x0 | x_t)`` for data with independent categorical positions ``p_data``
    ``(N, K)``, by Bayes' rule on dense cumulative matrices."""

    def __init__(self, process: MaskAndReplaceProcess, p_data: torch.Tensor):
        self.K = process.num_classes
        self.p_data = p_data.to(F64)
        self.Qbar = torch.stack([process.cumulative_matrix(t)
                                 for t in range(process.num_steps + 1)])

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lik = self.Qbar[t][:, : self.K, :].transpose(1, 2)  # (B, x_t, x0)
        lik = lik[torch.arange(xt.shape[0])[:, None], xt]  # (B, N, K): q(x_t | x0 = j)
        return (lik * self.p_data).clamp_min(1e-300).log()


# --------------------------------------------------------------------------- transitions
@pytest.mark.parametrize("name", ALL)
def test_one_step_matrix_is_the_papers(name):
    p = _make(name)
    K = p.num_classes
    for t in range(1, p.num_steps + 1):
        a, b, c = float(p.alpha[t]), float(p.beta[t]), float(p.gamma[t])
        assert a == pytest.approx(1 - K * b - c, abs=1e-12)
        expected = torch.zeros(K + 1, K + 1, dtype=F64)
        expected[:K, :K] = b
        expected[:K, :K] += a * torch.eye(K, dtype=F64)
        expected[:K, K] = c
        expected[K, K] = 1.0
        Q = p.transition_matrix(t)
        torch.testing.assert_close(Q, expected, atol=1e-12, rtol=0)
        assert bool((Q >= 0).all())
        torch.testing.assert_close(Q.sum(1), torch.ones(K + 1, dtype=F64))


@pytest.mark.parametrize("name", ALL)
def test_cumulative_matrix_is_product_of_one_step_matrices(name):
    p = _make(name)
    K = p.num_classes
    prod = torch.eye(K + 1, dtype=F64)
    for t in range(1, p.num_steps + 1):
        prod = prod @ p.transition_matrix(t)
        Qbar = p.cumulative_matrix(t)
        torch.testing.assert_close(Qbar, prod, atol=1e-12, rtol=0)
        torch.testing.assert_close(Qbar.sum(1), torch.ones(K + 1, dtype=F64))
    # paper's cumulative parameters: alpha_bar = prod alpha, 1 - gamma_bar = prod (1 - gamma)
    torch.testing.assert_close(p.alpha_bar[1:], torch.cumprod(p.alpha[1:], 0))
    torch.testing.assert_close(1 - p.gamma_bar[1:], torch.cumprod(1 - p.gamma[1:], 0))
    torch.testing.assert_close(p.beta_bar, (1 - p.alpha_bar - p.gamma_bar) / K)


def test_schedules():
    vq = MaskAndReplaceProcess(16)
    assert vq.num_steps == 100 and vq.mask_index == 16 and vq.num_states == 17
    assert float(vq.alpha_bar[1]) == pytest.approx(0.99999)
    assert float(vq.alpha_bar[-1]) == pytest.approx(0.000009)
    assert float(vq.gamma_bar[1]) == pytest.approx(0.000009)
    assert float(vq.gamma_bar[-1]) == pytest.approx(0.9)
    assert bool((vq.beta[1:] > 0).all())

    T = 12
    lin = AbsorbingProcess(7, T)
    t = torch.arange(T + 1, dtype=F64)
    torch.testing.assert_close(lin.alpha_bar, 1 - t / T)
    torch.testing.assert_close(lin.gamma_bar, t / T)
    assert bool((lin.beta == 0).all())
    mi = AbsorbingProcess(7, T, schedule="mutual_information")
    torch.testing.assert_close(mi.gamma[1:], 1 / (T - t[1:] + 1))
    torch.testing.assert_close(mi.alpha_bar, lin.alpha_bar)
    assert set(ABSORBING_SCHEDULES) >= {"linear", "mutual_information", "cosine"}
    explicit = AbsorbingProcess.from_schedules(7, 1 - t[1:] / T)
    torch.testing.assert_close(explicit.alpha_bar, lin.alpha_bar)


def test_invalid_schedules_raise():
    with pytest.raises(ValueError):  # alpha_bar increasing
        MaskAndReplaceProcess.from_schedules(3, torch.tensor([0.5, 0.6]), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError):  # 1 - gamma_bar < alpha_bar: negative beta
        MaskAndReplaceProcess.from_schedules(3, torch.tensor([0.5, 0.4]), torch.tensor([0.6, 0.7]))
    with pytest.raises(ValueError):
        AbsorbingProcess(3, 5, schedule="nope")
    with pytest.raises(ValueError):
        _make("vq_wide").q_sample(torch.zeros(2, 3, dtype=torch.long), 7)


@pytest.mark.parametrize("name", ALL)
def test_q_xt_given_x0_is_a_row_of_qbar_any_shape(name):
    p = _make(name)
    K, T = p.num_classes, p.num_steps
    x0 = torch.randint(0, K, (T, 3, 2), generator=_gen(0))
    t = torch.arange(1, T + 1)
    q = p.q_xt_given_x0(x0, t, dtype=F64)
    assert q.shape == (T, 3, 2, K + 1)
    dense = torch.stack([p.cumulative_matrix(int(s))[x0[i]] for i, s in enumerate(t)])
    torch.testing.assert_close(q, dense, atol=1e-12, rtol=0)
    # an x0 distribution gives the mixture of rows
    pi = torch.softmax(torch.randn(T, 3, 2, K, generator=_gen(1), dtype=F64), -1)
    mix = torch.einsum("btnk,bkj->btnj", pi, torch.stack([p.cumulative_matrix(int(s))[:K]
                                                          for s in t]))
    torch.testing.assert_close(p.q_xt_given_x0(pi, t), mix, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["vq_wide", "absorbing"])
def test_q_xt_given_x0_matches_iterated_one_step_sampling(name):
    p = _make(name)
    K, n = p.num_classes, 40_000
    x0 = torch.arange(K)[:, None].expand(K, n)  # batch row k starts at token k
    g = _gen(2)
    x = x0.clone()
    for t in range(1, p.num_steps + 1):
        x = p.q_sample_step(x, t, generator=g)
        direct = p.q_sample(x0, t, generator=g)
        want = p.q_xt_given_x0(x0[:, :1], t, dtype=F64)[:, 0]  # (K, K+1)
        for sample in (x, direct):
            freq = torch.nn.functional.one_hot(sample, K + 1).to(F64).mean(1)
            assert (freq - want).abs().max() < 0.012, (t, freq, want)
    assert bool((p.q_sample_step(torch.full((2, 5), K), 1) == K).all())  # [MASK] absorbs


# --------------------------------------------------------------------------- posterior
def _dense_posteriors(p, t, s):
    """Bayes on dense matrices: ``D[x0, x_t, x_s] = q(x_t | x_s) q(x_s | x0) / q(x_t | x0)``
    (``nan`` where ``q(x_t | x0) = 0``)."""
    Q_st, Qbar_s, Qbar_t = p.transition_matrix(t, s), p.cumulative_matrix(s), \
        p.cumulative_matrix(t)
    K = p.num_classes
    joint = Qbar_s[:K, None, :] * Q_st.T[None, :, :]  # (x0, x_t, x_s)
    return joint / Qbar_t[:K, :, None]


@pytest.mark.parametrize("name", ALL)
def test_posterior_is_bayes_rule_on_dense_matrices(name):
    p = _make(name)
    K = p.num_classes
    x0 = torch.arange(K).repeat_interleave(K + 1)
    xt = torch.arange(K + 1).repeat(K)
    n = x0.numel()
    for t in range(1, p.num_steps + 1):
        for s in sorted({0, t // 2, t - 1}):
            post = p.q_posterior(x0[:, None], xt[:, None], torch.full((n,), t), s,
                                 dtype=F64)[:, 0]
            torch.testing.assert_close(post.sum(-1), torch.ones(n, dtype=F64))
            want = _dense_posteriors(p, t, s)[x0, xt]
            ok = p.cumulative_matrix(t)[x0, xt] > 0
            assert int(ok.sum()) >= K
            torch.testing.assert_close(post[ok], want[ok], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_posterior_of_an_x0_distribution_is_the_mixture(name):
    """p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) pi(x0) over the x0 that can reach x_t."""
    p = _make(name)
    K, T = p.num_classes, p.num_steps
    xt = torch.arange(K + 1)
    pi = torch.softmax(torch.randn(K + 1, K, generator=_gen(3), dtype=F64), -1)
    for t in (1, 2, T):
        for s in sorted({0, t - 1}):
            got = p.q_posterior(pi, xt, t, s)
            reach = p.cumulative_matrix(t)[:K].T > 0  # (x_t, x0)
            w = pi * reach
            dense = _dense_posteriors(p, t, s).transpose(0, 1).nan_to_num()  # (x_t, x0, x_s)
            want = (w[..., None] * dense).sum(1) / w.sum(1, keepdim=True)
            possible = reach.any(1)  # absorbing with alpha_bar_T = 0: real x_T impossible
            torch.testing.assert_close(got[possible], want[possible], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["vq_wide", "absorbing"])
def test_posterior_matches_monte_carlo(name):
    p = _make(name)
    K, n, t = p.num_classes, 200_000, 3
    g = _gen(4)
    x0 = torch.randint(0, K, (1, n), generator=g)
    x_prev = p.q_sample(x0, t - 1, generator=g)
    xt = p.q_sample_step(x_prev, t, generator=g)
    x0, x_prev, xt = x0[0], x_prev[0], xt[0]
    checked = 0
    for i in range(K):
        for j in range(K + 1):
            sel = (x0 == i) & (xt == j)
            count = int(sel.sum())
            if count < 1000:
                continue
            freq = torch.bincount(x_prev[sel], minlength=K + 1).to(F64) / count
            want = p.q_posterior(torch.tensor([[i]]), torch.tensor([[j]]), t, dtype=F64)[0, 0]
            assert (freq - want).abs().max() < 5 / math.sqrt(count), (i, j, freq, want)
            checked += 1
    assert checked >= K + 1


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_vb_loss_nonnegative_and_zero_for_a_perfect_model(name, dtype):
    p = _make(name)
    K, T = p.num_classes, p.num_steps
    g = _gen(5)
    x0 = torch.randint(0, K, (T, 3, 2), generator=g)
    t = torch.arange(1, T + 1)
    xt = p.q_sample(x0, t, generator=g)
    logits = torch.randn(T, 3, 2, K, generator=g, dtype=dtype)
    vb = p.vb_loss(logits, x0, xt, t)
    assert vb.shape == (T,) and bool(vb.isfinite().all())
    assert bool((vb >= -1e-6).all()) and float(vb.max()) > 1e-3
    perfect = 1e4 * torch.nn.functional.one_hot(x0, K).to(dtype)
    assert float(p.vb_loss(perfect, x0, xt, t).abs().max()) < 1e-6
    assert float(p.loss(perfect, x0, xt, t, aux_weight=1.0).abs().max()) < 1e-6
    ce = p.x0_cross_entropy(logits, x0)
    torch.testing.assert_close(p.loss(logits, x0, xt, t, aux_weight=0.5), vb + 0.5 * ce)


@pytest.mark.parametrize("name", ["vq_default", "absorbing"])
def test_training_loss_gradients_are_finite(name):
    p = _make(name)
    K = p.num_classes
    emb = torch.nn.Embedding(K + 1, K)
    model = lambda x, t: emb(x) * (1 + t.to(torch.float32)[:, None, None] / p.num_steps)
    x0 = torch.randint(0, K, (8, 6), generator=_gen(6))
    loss = p.training_loss(model, x0, generator=_gen(7))
    assert loss.shape == (8,)
    loss.mean().backward()
    assert bool(emb.weight.grad.isfinite().all()) and float(emb.weight.grad.abs().sum()) > 0


def _dense_reverse_marginal(p, logits_fn):
    """p_theta(x0) = p(x_T) prod_t P_t, with P_t[x_t, x_{t-1}] = p_theta(x_{t-1} | x_t)."""
    states = torch.arange(p.num_states)[:, None]
    dist = p.prior_log_probs().exp()
    for t in range(p.num_steps, 0, -1):
        tt = torch.full((p.num_states,), t)
        P = p.log_p_reverse(logits_fn(states, tt), states, tt).exp()[:, 0]
        dist = dist @ P
    return dist[: p.num_classes]


def _exact_elbo(p, logits_fn, x0: int) -> float:
    """prior KL + sum_t E_{q(x_t | x0)} L_{t-1}, by enumerating x_t."""
    states = torch.arange(p.num_states)[:, None]
    x0s = torch.full_like(states, x0)
    total = float(p.prior_kl(torch.tensor([[x0]])))
    for t in range(1, p.num_steps + 1):
        tt = torch.full((p.num_states,), t)
        q = p.q_xt_given_x0(torch.tensor([[x0]]), t, dtype=F64)[0, 0]
        vb = p.vb_loss(logits_fn(states, tt), x0s, states, tt)
        total += float((q * torch.where(q > 0, vb, 0.0)).sum())
    return total


@pytest.mark.parametrize("name", ["vq_default", "vq_wide", "absorbing"])
def test_elbo_bounds_the_exact_likelihood(name):
    p = _make(name)
    K = p.num_classes
    p_data = torch.softmax(torch.randn(1, K, generator=_gen(8), dtype=F64) * 1.5, -1)
    oracle = Oracle(p, p_data)
    uniform = lambda x, t: torch.zeros(*x.shape, K, dtype=F64)
    mean_elbo = {}
    for label, fn in (("oracle", oracle), ("uniform", uniform)):
        p_model = _dense_reverse_marginal(p, fn)
        assert float(p_model.sum()) == pytest.approx(1.0, abs=1e-9)
        elbos = torch.tensor([_exact_elbo(p, fn, k) for k in range(K)], dtype=F64)
        nll = -p_model.log()
        assert bool(elbos.isfinite().all())
        assert bool((elbos >= nll - 1e-9).all()), (label, elbos, nll)
        mean_elbo[label] = float((p_data[0] * elbos).sum())
        if label == "oracle":
            # the oracle's reverse chain is q's own, up to p(x_T) vs q(x_T)
            if name == "vq_wide":  # alpha_bar_T = 0.05: p(x_T) is far from q(x_T)
                continue
            torch.testing.assert_close(p_model, p_data[0], atol=1e-4, rtol=0)
            gap = 0.0 if name == "absorbing" else 1e-3
            assert bool((elbos - nll <= gap + 1e-9).all()), (elbos, nll)
            if name == "absorbing":  # alpha_bar_T = 0: prior exact, ELBO = -log p_data
                torch.testing.assert_close(elbos, -p_data[0].log(), atol=1e-9, rtol=0)
    assert mean_elbo["uniform"] > mean_elbo["oracle"] + 0.05


def test_prior():
    vq, ab = _make("vq_default"), _make("absorbing")
    x0 = torch.randint(0, 5, (4, 3), generator=_gen(9))
    kl = vq.prior_kl(x0)
    assert kl.shape == (4,) and bool((kl >= 0).all()) and float(kl.max()) < 1e-4
    assert float(vq.prior_log_probs().exp().sum()) == pytest.approx(1.0)
    assert float(ab.prior_kl(x0 % 4).abs().max()) == 0.0
    xT = ab.prior_sample((3, 2, 5), generator=_gen(10))
    assert xT.shape == (3, 2, 5) and bool((xT == ab.mask_index).all())


# --------------------------------------------------------------------------- sampler
def test_discrete_time_grid():
    assert discrete_time_grid(5).tolist() == [5, 4, 3, 2, 1, 0]
    g = discrete_time_grid(10, 4)
    assert g[0] == 10 and g[-1] == 0 and g.numel() == 5 and bool((g[1:] < g[:-1]).all())
    assert discrete_time_grid(10, [10, 3, 0]).tolist() == [10, 3, 0]
    for bad in ([9, 3, 0], [10, 3, 3, 0], 11, 0):
        with pytest.raises(ValueError):
            discrete_time_grid(10, bad)


def _tv(x: torch.Tensor, p_data: torch.Tensor) -> float:
    """Total variation between the empirical joint of two positions and the product law."""
    K = p_data.shape[1]
    emp = torch.bincount(x[:, 0] * K + x[:, 1], minlength=K * K).to(F64) / x.shape[0]
    return 0.5 * float((emp - torch.outer(p_data[0], p_data[1]).flatten()).abs().sum())


@pytest.mark.parametrize("name", ["vq_default", "absorbing"])
@pytest.mark.parametrize("steps", [None, 4])
def test_sampler_with_oracle_reproduces_the_data(name, steps):
    p = _make(name)
    K = 3 if name == "absorbing" else p.num_classes
    p = AbsorbingProcess(K, 10) if name == "absorbing" else p
    p_data = torch.tensor([[0.6, 0.3, 0.1, 0.0, 0.0], [0.05, 0.15, 0.7, 0.05, 0.05]],
                          dtype=F64)[:, :K]
    p_data = p_data / p_data.sum(1, keepdim=True)
    seen = []
    x = sample_discrete(Oracle(p, p_data), p, (10_000, 2), steps=steps, generator=_gen(11),
                        callback=seen.append, disable=True)
    assert x.shape == (10_000, 2) and x.dtype == torch.long
    assert bool(((x >= 0) & (x < K)).all())
    assert len(seen) == len(discrete_time_grid(p.num_steps, steps)) - 1
    assert seen[-1]["t_next"] == 0 and seen[0]["t"] == p.num_steps
    assert seen[0]["x0"].shape == (10_000, 2, K)
    assert _tv(x, p_data) < 0.025


def test_sampler_is_discriminative_and_honours_temperature_and_cond():
    """A wrong model must fail the TV check the oracle passes; cond reaches the model."""
    p = AbsorbingProcess(3, 6)
    p_data = torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.25, 0.7]], dtype=F64)
    calls = []

    def uniform(x, t, *, tag):
        calls.append(tag)
        return torch.zeros(*x.shape, 3)

    x = sample_discrete(uniform, p, (10_000, 2), steps=3, cond={"tag": 1}, generator=_gen(12),
                        disable=True)
    assert _tv(x, p_data) > 0.2 and calls == [1, 1, 1]
    cold = sample_discrete(Oracle(p, p_data), p, (4_000, 2), generator=_gen(13),
                           temperature=1e-3, disable=True)
    modes = torch.bincount(cold[:, 0] * 3 + cold[:, 1], minlength=9)
    assert int(modes.argmax()) == 0 * 3 + 2 and float(modes.max()) > 0.95 * 4_000
