"""Tests of the ODE samplers (DDIM, Euler, Heun) and the DPM-Solver++ family.

References: the exact Gaussian-mixture denoiser and its high-accuracy probability-flow ODE
solution (:func:`reference_pf_ode`), measured convergence orders, an inline DPM-Solver-1, the
process invariance of the scaled ODE, the exact noisy marginals of the mixture, the DDPM
sampler of ``samplers/sde.py``, and diffusers' schedulers step by step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
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
)
from polydiff.core.samplers.dpmsolver import (
    dpmpp_coefficients,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
)
from polydiff.core.samplers.ode import sample_ddim, sample_euler, sample_heun
from polydiff.core.samplers.sde import sample_ddpm
from polydiff.core.shapes import append_dims
from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

F64 = torch.float64
MIX = GaussianMixture.random(dim=4, n_components=3, seed=0, std_range=(0.1, 0.5),
                             mean_scale=1.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t_of(proc: GaussianProcess, sigma_tilde: float) -> float:
    return float(proc.t_from_sigma_tilde(torch.tensor(sigma_tilde, dtype=F64)))


def _2m_heun(*a, **k):
    return sample_dpmpp_2m(*a, solver_type="heun", **k)


DETERMINISTIC = {
    "ddim": (sample_ddim, 1), "euler": (sample_euler, 1), "heun": (sample_heun, 2),
    "dpmpp_2m": (sample_dpmpp_2m, 2), "dpmpp_2m_heun": (_2m_heun, 2),
    "dpmpp_3m": (sample_dpmpp_3m, 3),
}
STOCHASTIC = {
    "ddim_eta1": lambda *a, **k: sample_ddim(*a, eta=1.0, **k),
    "ddim_eta05": lambda *a, **k: sample_ddim(*a, eta=0.5, **k),
    "heun_churn": lambda *a, **k: sample_heun(*a, s_churn=5.0, s_tmin=0.1, s_tmax=1.0, **k),
    "euler_churn": lambda *a, **k: sample_euler(*a, s_churn=3.0, s_tmax=1.2, s_noise=1.01, **k),
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_eta05": lambda *a, **k: sample_dpmpp_2m_sde(*a, eta=0.5, **k),
}
ALL = {**{k: v[0] for k, v in DETERMINISTIC.items()}, **STOCHASTIC}


def _run(name: str, den, x, ts, **kw):
    if name in STOCHASTIC:
        kw.setdefault("seed", 11)
    return ALL[name](den, x, ts, disable=True, **kw)


# --------------------------------------------------------------------------- convergence order
@pytest.fixture(scope="module")
def order_problem():
    """PF-ODE from sigma~ = 15 to sigma~ = 0.05 (not to 0: the final step would dominate)."""
    proc = VPLinear()
    t0, t1 = _t_of(proc, 15.0), _t_of(proc, 0.05)
    x = MIX.sample_t(16, t0, proc, generator=_gen(0))
    ref = reference_pf_ode(MIX, proc, x, t0, t1, rtol=1e-9, atol=1e-10)
    return proc, t0, t1, x, ref


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_convergence_order(name, order_problem) -> None:
    """Slope of log(error) against log(NFE) over 16-128 steps on a log-SNR grid.

    The error is the median over samples of the per-sample distance to the reference: a
    trajectory near a decision boundary between components can flip to another mode on
    coarse grids and dominate an RMSE. Measured slopes (median; RMSE in brackets), over four
    sample seeds: ddim/euler 0.99-1.03 (1.07-1.30), heun 2.05-2.06 (2.03-2.31), dpmpp_2m
    2.04-2.06 (1.84-2.57), dpmpp_3m 3.07-3.15 (2.99-3.22); diffusers' DPM-Solver++(3M)
    weighting of the second divided difference measures 2.2-2.3.
    """
    proc, t0, t1, x, ref = order_problem
    fn, order = DETERMINISTIC[name]
    steps = [16, 32, 64, 128]
    errs, rmse = [], []
    for n in steps:
        ts = time_grid(proc, n, "logsnr", t_start=t0, t_end=t1)
        err = (fn(MIX.denoiser(proc), x, ts, disable=True) - ref).norm(dim=-1)
        errs.append(float(err.median()))
        rmse.append(float(err.pow(2).mean().sqrt()))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (name, slope, errs)
    assert rmse[-1] < {1: 2e-2, 2: 1e-3, 3: 5e-5}[order], (name, rmse)


def _dpm_solver_1(den, x, ts):
    """DPM-Solver-1 (Lu et al. 2022, data prediction), written from the process directly."""
    proc, z = den.process, x
    for i in range(ts.numel() - 1):
        t, s = ts[i:i + 1], ts[i + 1:i + 2]
        h = float(proc.log_snr(s) - proc.log_snr(t)) / 2
        z0 = den.x0(z, t.expand(z.shape[0]))
        z = float(proc.sigma(s) / proc.sigma(t)) * z + float(proc.alpha(s)) * -math.expm1(-h) * z0
    return z


def test_ddim_is_dpm_solver_1_and_euler(order_problem) -> None:
    proc, t0, t1, x, ref = order_problem
    den = MIX.denoiser(proc)
    ts = time_grid(proc, 10, "edm", t_start=t0, t_end=t1)
    ddim = sample_ddim(den, x, ts, disable=True)
    torch.testing.assert_close(ddim, _dpm_solver_1(den, x, ts), rtol=1e-10, atol=1e-10)
    # DDIM is Euler in (z/alpha, sigma/alpha) (Song et al. 2021, Sec. 4.3): equal at any step
    torch.testing.assert_close(sample_euler(den, x, ts, disable=True), ddim,
                               rtol=1e-10, atol=1e-10)
    # ... and the first (first-order) step of DPM-Solver++(2M)
    torch.testing.assert_close(sample_dpmpp_2m(den, x, ts[:2], disable=True),
                               sample_ddim(den, x, ts[:2], disable=True), rtol=1e-12, atol=1e-12)
    # SDE-DPM-Solver++ with eta = 0 is the ODE solver
    torch.testing.assert_close(sample_dpmpp_2m_sde(den, x, ts, eta=0.0, disable=True),
                               sample_dpmpp_2m(den, x, ts, disable=True), rtol=1e-12, atol=1e-12)
    # on 20 steps the first-order method is far from the endpoint, Heun much closer
    # (measured median errors 0.053 and 0.0078)
    ts = time_grid(proc, 20, "edm", t_start=t0, t_end=t1)
    e_ddim = float((sample_ddim(den, x, ts, disable=True) - ref).norm(dim=-1).median())
    e_heun = float((sample_heun(den, x, ts, disable=True) - ref).norm(dim=-1).median())
    assert e_ddim > 0.03 and e_heun < 0.25 * e_ddim, (e_heun, e_ddim)


# --------------------------------------------------------------------------- processes
INVARIANT = {
    "vp": VPLinear, "vpcos": VPCosine, "subvp": SubVP, "ve": VE, "edm": EDM,
    "linear": LinearInterpolant, "trig": TrigInterpolant, "ouve": OUVE,
}


@pytest.mark.parametrize("name", list(ALL))
def test_process_invariance(name) -> None:
    """Every process has the same PF-ODE in (x~ = z/alpha, sigma~): on grids uniform in
    log-SNR between the same sigma~, every sampler gives the same x~ (same noise too)."""
    x_tilde = MIX.sample_t(8, 1.5, EDM(), generator=_gen(1))
    outs = {}
    for key, cls in INVARIANT.items():
        proc = cls()
        t0, t1 = _t_of(proc, 1.5), _t_of(proc, 0.05)
        ts = time_grid(proc, 7, "logsnr", t_start=t0, t_end=t1)
        a0, a1 = float(proc.alpha(ts[:1])), float(proc.alpha(ts[-1:]))
        cond = {"y": torch.zeros_like(x_tilde)} if proc.center_key else None
        out = _run(name, MIX.denoiser(proc), a0 * x_tilde, ts, cond=cond)
        outs[key] = out / a1
    for key, out in outs.items():
        torch.testing.assert_close(out, outs["edm"], rtol=1e-8, atol=1e-8, msg=key)


@pytest.mark.parametrize("name", ["ddim", "heun", "dpmpp_2m", "dpmpp_3m"])
def test_mean_reverting_ouve_with_condition(name) -> None:
    proc = OUVE()
    t0, t1 = _t_of(proc, 1.5), _t_of(proc, 0.05)
    g = _gen(2)
    y = torch.randn(8, 4, generator=g, dtype=F64)
    x = MIX.sample_t(8, t0, proc, y=y, generator=g)
    ref = reference_pf_ode(MIX, proc, x, t0, t1, y=y, rtol=1e-9, atol=1e-10)
    ts = time_grid(proc, 40, "logsnr", t_start=t0, t_end=t1)
    fn, order = DETERMINISTIC[name]
    out = fn(MIX.denoiser(proc), x, ts, cond={"y": y}, disable=True)
    err = float((out - ref).abs().max())
    assert err < {1: 0.05, 2: 5e-3, 3: 1e-3}[order], err
    with pytest.raises(ValueError, match="mean-reverting"):
        fn(MIX.denoiser(proc), x, ts, disable=True)


# --------------------------------------------------------------------------- surface
@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_surface_shapes_dtypes_callback_nfe(name, dtype) -> None:
    mix = GaussianMixture.random(dim=6, n_components=2, seed=3)
    proc = VPLinear()
    n = 8
    ts = time_grid(proc, n, "edm", final_zero=True)
    x64 = mix.sample_t(5, proc.t_max, proc, generator=_gen(4)).reshape(5, 2, 3)
    den = mix.denoiser(proc)
    calls = []
    out = _run(name, den, x64.to(dtype), ts, callback=calls.append)
    assert out.shape == (5, 2, 3) and out.dtype == dtype and bool(out.isfinite().all())
    assert [c["i"] for c in calls] == list(range(n))
    assert all(set(c) == {"i", "t", "t_next", "x", "x0"} for c in calls)
    assert float(calls[-1]["t_next"]) == 0.0
    # the step to sigma = 0 is first order: it lands on the last denoised estimate
    torch.testing.assert_close(calls[-1]["x"], calls[-1]["x0"])
    expected = 2 * n - 1 if name.startswith("heun") else n
    assert den.nfe == expected
    if dtype == torch.float32 and name not in STOCHASTIC:  # (noise streams differ by dtype)
        ref = _run(name, mix.denoiser(proc), x64, ts)
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-3)


class _PointMassAtCentre(Denoiser):
    """Exact denoiser of data concentrated on the centre ``y``: ``z0 = 0``, ``eps = z/sigma``."""

    def x0_eps(self, x, t, **cond):
        y = self.center(cond)
        return y, (x - y) / append_dims(self.process.sigma(t), x)


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_complex_point_mass_is_exact(name) -> None:
    """Complex data (SGMSE-style spectrograms) under the mean-reverting OUVE: for a point mass
    every sampler is exact, ``z_t = (sigma_t / sigma_s) z_s``, whatever the step size."""
    proc = OUVE()
    g = _gen(9)
    y = torch.randn(3, 2, 5, generator=g, dtype=torch.complex128)
    z = torch.randn(3, 2, 5, generator=g, dtype=torch.complex128)
    ts = time_grid(proc, 5, "edm", t_start=proc.t_max, t_end=0.05)
    out = ALL[name](_PointMassAtCentre(proc), y + z, ts, cond={"y": y}, disable=True)
    ratio = float(proc.sigma(ts[-1:]) / proc.sigma(ts[:1]))
    assert out.dtype == torch.complex128
    torch.testing.assert_close(out, y + ratio * z, rtol=1e-12, atol=1e-12)
    ts0 = time_grid(proc, 5, "edm", t_start=proc.t_max, final_zero=True)
    out = ALL[name](_PointMassAtCentre(proc), (y + z).to(torch.complex64), ts0,
                    cond={"y": y.to(torch.complex64)}, disable=True)
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out, y.to(torch.complex64))


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_complex_stochastic_runs(name) -> None:
    proc = OUVE()
    y = torch.randn(3, 2, 5, generator=_gen(9), dtype=torch.complex64)
    x = proc.prior_sample(y.shape, y=y, generator=_gen(10))
    ts = time_grid(proc, 6, "edm", final_zero=True)
    out = _run(name, _PointMassAtCentre(proc), x, ts, cond={"y": y})
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out, y)  # the point mass, whatever the noise


def test_ddim_eta1_is_ddpm_ancestral() -> None:
    proc = VPCosine()
    ts = time_grid(proc, 12, "uniform")
    x = MIX.sample_t(16, ts[0], proc, generator=_gen(5))
    den = MIX.denoiser(proc)
    ddim = sample_ddim(den, x, ts, eta=1.0, seed=7, disable=True)
    ddpm = sample_ddpm(den, x, ts, seed=7, denoise_final="none", disable=True)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ddim_eta1", "ddim_eta05", "heun_churn", "dpmpp_2m_sde",
                                  "dpmpp_2m_sde_eta05", "dpmpp_3m"])
def test_marginals_match_exact_mixture(name) -> None:
    """From exact samples at sigma~ = 20, sampling to sigma~ = 0.3 reproduces the exact
    marginal there (mean alpha mu, covariance alpha^2 C + sigma^2 I)."""
    proc = VPLinear()
    t0, t1 = _t_of(proc, 20.0), _t_of(proc, 0.3)
    ts = time_grid(proc, 80, "logsnr", t_start=t0, t_end=t1)
    n = 8000
    x = MIX.sample_t(n, t0, proc, generator=_gen(6))
    out = _run(name, MIX.denoiser(proc), x, ts)
    a, s = float(proc.alpha(ts[-1:])), float(proc.sigma(ts[-1:]))
    mean, cov = MIX.moments()
    mean, cov = a * mean, a * a * cov + s * s * torch.eye(4, dtype=F64)
    m_hat, c_hat = out.mean(0), torch.cov(out.T)
    se = (torch.diagonal(cov) / n).sqrt()
    assert bool(((m_hat - mean).abs() < 4 * se).all()), (m_hat - mean) / se
    sd = torch.diagonal(cov).sqrt()
    corr_err = (c_hat - cov) / (sd[:, None] * sd[None, :])
    # measured: <= 0.048 for every sampler here; DDIM with 10 % too much noise gives 0.11-0.13
    assert float(corr_err.abs().max()) < 0.07, corr_err


# --------------------------------------------------------------------------- options
def test_lower_order_final_and_validation() -> None:
    proc = VPLinear()
    for n, lowered in [(10, True), (20, False)]:
        ts = time_grid(proc, n, "logsnr")
        al, sg = proc.alpha(ts).tolist(), proc.sigma(ts).tolist()
        lam = (0.5 * proc.log_snr(ts)).tolist()
        c3 = dpmpp_coefficients(al, sg, lam, 3)
        assert c3[0][2:4] == (0.0, 0.0) and c3[1][3] == 0.0 and c3[2][3] != 0.0  # warm-up
        assert (c3[-1][2] == 0.0) is lowered and (c3[-2][3] == 0.0) is lowered
        assert dpmpp_coefficients(al, sg, lam, 3, lower_order_final=False)[-1][3] != 0.0
    ts = time_grid(proc, 20, "logsnr", final_zero=True)
    al, sg = proc.alpha(ts).tolist(), proc.sigma(ts).tolist()
    c = dpmpp_coefficients(al, sg, (0.5 * proc.log_snr(ts)).tolist(), 2)
    assert c[-1] == (0.0, 1.0, 0.0, 0.0, 0.0) and c[-2][2] != 0.0
    x = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="solver_type"):
        sample_dpmpp_2m(MIX.denoiser(proc), x, ts, solver_type="rk4", disable=True)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(MIX.denoiser(proc), x, ts, eta=-1.0, disable=True)


# --------------------------------------------------------------------------- diffusers
def _diffusers_setup(sched, steps: int, spacing_unique: bool = False):
    n_train = sched.config.num_train_timesteps
    sched.set_timesteps(steps)
    proc = VPDiscrete(alphas_cumprod=sched.alphas_cumprod.double())
    tsteps = torch.unique_consecutive(sched.timesteps) if spacing_unique else sched.timesteps
    ts = torch.cat([(tsteps.double() + 1) / n_train, torch.zeros(1, dtype=F64)])

    def eps_model(x, t):
        tt = (torch.as_tensor(t, dtype=F64).reshape(-1) + 1) / n_train
        return MIX.x0_eps(x, tt.expand(x.shape[0]), proc)[1]

    x = MIX.sample_t(16, ts[0], proc, generator=_gen(8))
    return proc, ts, eps_model, x


@pytest.mark.diffusers
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers(eta) -> None:
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False,
                                    set_alpha_to_one=True)
    proc, ts, model, x = _diffusers_setup(sched, 10)
    g, y = _gen(3), x.clone()
    for t in sched.timesteps:
        noise = torch.randn(x.shape, generator=g, dtype=F64)
        y = sched.step(model(y, t), t, y, eta=eta, variance_noise=noise).prev_sample
    out = sample_ddim(MIX.denoiser(proc), x, ts, eta=eta, seed=3, disable=True)
    torch.testing.assert_close(out, y, rtol=0, atol=1e-5)


@pytest.mark.diffusers
@pytest.mark.parametrize("which", ["euler", "heun"])
def test_euler_heun_match_diffusers(which) -> None:
    diffusers = pytest.importorskip("diffusers")
    cls = diffusers.EulerDiscreteScheduler if which == "euler" else \
        diffusers.HeunDiscreteScheduler
    sched = cls(beta_schedule="linear", timestep_spacing="trailing")
    proc, ts, model, x = _diffusers_setup(sched, 10, spacing_unique=True)
    y = x / float(proc.alpha(ts[:1]))  # diffusers' sample is the scaled x~
    for t in sched.timesteps:
        y = sched.step(model(sched.scale_model_input(y, t), t), t, y).prev_sample
    fn = sample_euler if which == "euler" else sample_heun
    torch.testing.assert_close(fn(MIX.denoiser(proc), x, ts, disable=True), y, rtol=0,
                               atol=1e-5)


@pytest.mark.diffusers
@pytest.mark.parametrize("algo", ["dpmsolver++", "sde-dpmsolver++"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("steps", [10, 20])
def test_dpmpp_2m_matches_diffusers(algo, solver_type, steps) -> None:
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", solver_order=2,
                                                  algorithm_type=algo, solver_type=solver_type)
    proc, ts, model, x = _diffusers_setup(sched, steps)
    g, y = _gen(4), x.clone()
    for t in sched.timesteps:
        noise = torch.randn(x.shape, generator=g, dtype=F64)
        y = sched.step(model(y, t), t, y, variance_noise=noise).prev_sample
    den = MIX.denoiser(proc)
    if algo == "dpmsolver++":
        out = sample_dpmpp_2m(den, x, ts, solver_type=solver_type, disable=True)
    else:
        out = sample_dpmpp_2m_sde(den, x, ts, solver_type=solver_type, seed=4, disable=True)
    torch.testing.assert_close(out, y, rtol=0, atol=2e-5)
