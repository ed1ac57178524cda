"""The adaptive PF-ODE solver and ODE log-likelihoods against closed forms and the exact
densities of Gaussian-mixture test beds."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.processes import EDM, OUVE, VPLinear
from polydiff.core.samplers.adaptive import (
    log_likelihood,
    odeint_adaptive,
    sample_ode_adaptive,
    solve_pf_ode,
)
from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny float64 batches: intra-op threads only add synchronisation overhead
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sigma_tilde_time(process, st: float) -> float:
    return float(process.t_from_sigma_tilde(torch.tensor([st], dtype=F64))[0])


# --------------------------------------------------------------------------- integrator
@pytest.mark.parametrize("method,tol", [("dopri5", 1e-8), ("bosh3", 1e-6)])
def test_odeint_linear_system(method, tol):
    """y' = A(s) y with a rotation-plus-decay field: y(s) known in closed form; both
    directions of integration; a second (B,) state component integrates a scalar ODE."""
    y0 = torch.tensor([[1.0, 0.0], [0.3, -2.0]], dtype=F64)

    def f(s, state):
        y, q = state
        rot = torch.stack([-y[:, 1], y[:, 0]], 1)  # d/ds of a rotation by angle s^2 / 2
        return (s * rot - 0.5 * y, math.cos(s) * torch.ones_like(q))

    def exact(s):
        ang = s * s / 2
        c, sn = math.cos(ang), math.sin(ang)
        rot = torch.stack([c * y0[:, 0] - sn * y0[:, 1], sn * y0[:, 0] + c * y0[:, 1]], 1)
        return rot * math.exp(-0.5 * s), math.sin(s) * torch.ones(2, dtype=F64)

    (y1, q1), nfe, n_steps = odeint_adaptive(f, (y0, torch.zeros(2, dtype=F64)), 0.0, 3.0,
                                             rtol=tol, atol=tol, method=method)
    ey, eq = exact(3.0)
    assert float((y1 - ey).abs().max()) < 50 * tol and float((q1 - eq).abs().max()) < 50 * tol
    assert 0 < n_steps < nfe < 5000
    (yb, _), _, _ = odeint_adaptive(f, (ey, eq), 3.0, 0.0, rtol=tol, atol=tol, method=method)
    assert float((yb - y0).abs().max()) < 50 * tol
    with pytest.raises(RuntimeError):
        odeint_adaptive(f, (y0, torch.zeros(2, dtype=F64)), 0.0, 3.0, rtol=tol, atol=tol,
                        method=method, max_steps=3)


def test_odeint_rejects_unknown_method():
    with pytest.raises(ValueError):
        odeint_adaptive(lambda s, y: y, (torch.ones(1),), 0.0, 1.0, method="rk45x")


# --------------------------------------------------------------------------- PF-ODE
@pytest.fixture(scope="module", params=[VPLinear(), EDM()], ids=["vp", "edm"])
def pf_problem(request):
    process = request.param
    mix = GaussianMixture.random(2, 3, seed=0)
    t0, t1 = _sigma_tilde_time(process, 15.0), _sigma_tilde_time(process, 0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g, dtype=F64) * float(process.sigma(torch.tensor(t0)))
    return process, mix, t0, t1, x, reference_pf_ode(mix, process, x, t0, t1)


@pytest.mark.parametrize("variable", ["log_sigma", "t"])
def test_solve_pf_ode_matches_reference(pf_problem, variable):
    process, mix, t0, t1, x, ref = pf_problem
    den = mix.denoiser(process)
    out, nfe = solve_pf_ode(den, x, t0, t1, rtol=1e-7, atol=1e-7, variable=variable)
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < 1e-6, rel  # measured 4e-8
    assert nfe == den.nfe
    loose, nfe_loose = solve_pf_ode(den, x, t0, t1, rtol=1e-4, atol=1e-4, variable=variable)
    assert nfe_loose < nfe and float((loose - ref).abs().max()) < 1e-2


def test_sample_ode_adaptive_surface():
    """``ts`` gives the ends; a grid ending at sigma = 0 finishes with one denoiser jump."""
    process = VPLinear()
    mix = GaussianMixture.random(2, 3, seed=1)
    den = mix.denoiser(process)
    x = process.prior_sample((8, 1, 2), generator=torch.Generator().manual_seed(2), dtype=F64)
    ts = time_grid(process, 5, "logsnr")
    seen = []
    out = sample_ode_adaptive(den, x, ts, rtol=1e-6, atol=1e-6, callback=seen.append,
                              disable=True)
    assert out.shape == x.shape and len(seen) > 3
    assert seen[-1]["t_next"] == pytest.approx(float(ts[-1]))
    torch.testing.assert_close(seen[-1]["x"], out)
    ref = reference_pf_ode(mix, process, x, float(ts[0]), float(ts[-1]))
    assert float((out - ref).abs().max()) < 1e-4
    ts0 = time_grid(process, 5, "logsnr", final_zero=True)
    out0 = sample_ode_adaptive(den, x, ts0, rtol=1e-6, atol=1e-6, disable=True)
    ref0 = reference_pf_ode(mix, process, x, float(ts0[0]), None)
    assert float((out0 - ref0).abs().max()) < 3e-3  # the final jump's O(sigma(t_min)^2)


def test_solve_pf_ode_centred_process():
    """OUVE (mean-reverting, centre y): the solver integrates x - y."""
    process = OUVE()
    mix = GaussianMixture.random(2, 2, seed=3)
    den = mix.denoiser(process)
    g = torch.Generator().manual_seed(4)
    y = torch.randn(6, 2, generator=g, dtype=F64)
    x = process.prior_sample((6, 2), y=y, generator=g)
    out, _ = solve_pf_ode(den, x, process.t_max, process.t_min, cond={"y": y}, rtol=1e-8,
                          atol=1e-8)
    ref = reference_pf_ode(mix, process, x, process.t_max, process.t_min, y=y)
    assert float((out - ref).abs().max()) < 1e-5


# --------------------------------------------------------------------------- likelihood
def _mixture(dim: int) -> GaussianMixture:
    return GaussianMixture.random(dim, 3, seed=dim)


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("process", [VPLinear(), EDM()], ids=["vp", "edm"])
def test_exact_trace_likelihood(dim, process):
    """log p_{t_eps}(x0) from the ODE equals the mixture's exact marginal density; with the
    exact density at t_max as the prior the only error is the solver's (measured < 1e-6)."""
    mix = _mixture(dim)
    den = mix.denoiser(process)
    x0 = mix.sample(6, torch.Generator().manual_seed(5))
    exact = mix.log_prob_t(x0, process.t_min, process)
    res = log_likelihood(den, x0, trace="exact", rtol=1e-7, atol=1e-7,
                         prior_logp=lambda z: mix.log_prob_t(z, process.t_max, process))
    assert float((res["logp"] - exact).abs().max()) < 1e-5
    assert res["logp"].shape == (6,) and res["nfe"] == den.nfe
    torch.testing.assert_close(res["bpd"], -res["logp"] / (dim * math.log(2)))


def test_default_prior():
    """Without ``prior_logp`` the prior is ``process.prior_logp`` (N(0, sigma(t_max)^2 I),
    which neglects ``alpha(t_max) x0``: here a 1e-3..1e-2 nats approximation)."""
    process = VPLinear()
    mix = _mixture(2)
    den = mix.denoiser(process)
    x0 = mix.sample(4, torch.Generator().manual_seed(5))
    exact = mix.log_prob_t(x0, process.t_min, process)
    res = log_likelihood(den, x0, trace="exact", rtol=1e-6, atol=1e-6)
    ref = log_likelihood(den, x0, trace="exact", rtol=1e-6, atol=1e-6,
                         prior_logp=lambda z: mix.log_prob_t(z, process.t_max, process))
    torch.testing.assert_close(res["z"], ref["z"], rtol=0, atol=0)
    torch.testing.assert_close(res["prior_logp"], process.prior_logp(res["z"]))
    torch.testing.assert_close(res["logp"] - ref["logp"],
                               res["prior_logp"] - ref["prior_logp"])
    assert float((ref["logp"] - exact).abs().max()) < 1e-4
    assert float((res["logp"] - exact).abs().max()) < 3e-2


def test_likelihood_variables_and_centred_process():
    """Integration in process time agrees with log-sigma~; OUVE's centre is honoured."""
    process = OUVE()
    mix = _mixture(2)
    den = mix.denoiser(process)
    g = torch.Generator().manual_seed(6)
    x0 = mix.sample(4, g)
    y = x0 + 0.3 * torch.randn(4, 2, generator=g, dtype=F64)
    exact = mix.log_prob_t(x0, process.t_min, process, y=y)
    for variable in ("log_sigma", "t"):
        res = log_likelihood(den, x0, cond={"y": y}, trace="exact", rtol=1e-7, atol=1e-7,
                             variable=variable,
                             prior_logp=lambda z: mix.log_prob_t(z, process.t_max, process,
                                                                 y=y))
        assert float((res["logp"] - exact).abs().max()) < 1e-5, variable


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """Hutchinson-Skilling: each row of a batch of copies draws its own probe, so one solve
    gives independent estimates; their mean matches the exact value within a few standard
    errors and 8 probes shrink the spread by about sqrt(8)."""
    process = VPLinear()
    mix = _mixture(5)
    den = mix.denoiser(process)
    x0 = mix.sample(2, torch.Generator().manual_seed(7))
    copies = 48
    xs = x0.repeat_interleave(copies, 0)
    exact = mix.log_prob_t(x0, process.t_min, process)
    prior = lambda z: mix.log_prob_t(z, process.t_max, process)  # noqa: E731
    spreads = []
    for n_probes in (1, 8):
        g = torch.Generator().manual_seed(8 + n_probes)
        res = log_likelihood(den, xs, trace="hutchinson", n_probes=n_probes, probe=probe,
                             generator=g, rtol=1e-6, atol=1e-6, prior_logp=prior)
        est = res["logp"].reshape(2, copies)
        mean, sd = est.mean(1), est.std(1)
        assert bool((sd > 0).all())
        assert bool(((mean - exact).abs() < 4 * sd / math.sqrt(copies) + 1e-4).all()), \
            (mean, exact, sd)
        spreads.append(sd)
    ratio = spreads[1] / spreads[0]
    assert bool(((ratio > 0.2) & (ratio < 0.6)).all()), ratio  # 1/sqrt(8) = 0.35


def test_likelihood_validation():
    process = VPLinear()
    den = _mixture(2).denoiser(process)
    x0 = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError):
        log_likelihood(den, x0, trace="diag")
    with pytest.raises(ValueError):
        log_likelihood(den, x0, probe="uniform")
    with pytest.raises(NotImplementedError):
        log_likelihood(den, x0.to(torch.complex128))
