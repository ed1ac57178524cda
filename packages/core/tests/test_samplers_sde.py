"""Stochastic samplers (DDPM ancestral, Euler–Maruyama, predictor–corrector) against exact
references: diffusers' DDPM scheduler, exact Gaussian-mixture and Gaussian test beds, and the
high-accuracy probability-flow ODE reference, each with a control that must fail."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.processes import OUVE, VE, GaussianProcess, VPDiscrete, VPLinear
from polydiff.core.samplers.sde import sample_ddpm, sample_euler_maruyama, sample_pc
from polydiff.core.shapes import append_dims
from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

F64 = torch.float64


# --------------------------------------------------------------------------- helpers
class GaussianDenoiser(Denoiser):
    """Exact denoiser of isotropic Gaussian data ``N(m, s^2 I)`` (complex: ``CN(m, s^2)``,
    ``E|x0 - m|^2 = s^2``) under any process with optional centre ``y``; scores follow the
    SGMSE convention ``-(x - mu_t) / v`` for real and complex data alike."""

    def __init__(self, process: GaussianProcess, m: Tensor, s: float):
        super().__init__(process)
        self.m, self.s = m, s

    def moments(self, x: Tensor, t: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        a, sg = append_dims(self.process.alpha(t), x), append_dims(self.process.sigma(t), x)
        mu = a * self.m if y is None else y + a * (self.m - y)
        return mu, a * a * self.s**2 + sg * sg

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        y = self.center(cond)
        a, sg = append_dims(self.process.alpha(t), x), append_dims(self.process.sigma(t), x)
        mu, v = self.moments(x, t, y)
        eps = sg * (x - mu) / v
        z = x if y is None else x - y
        z0 = (z - sg * eps) / a
        return (z0 if y is None else z0 + y), eps


class ScaledEps(Denoiser):
    """A deliberately wrong denoiser: the exact noise estimate times ``k`` (score times k)."""

    def __init__(self, base: Denoiser, k: float):
        super().__init__(base.process)
        self.base, self.k = base, k

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        from polydiff.core.param import to_x0_eps

        eps = self.k * self.base.x0_eps(x, t, **cond)[1]
        return to_x0_eps(eps, "epsilon", x, t, self.process, self.center(cond))[0], eps


def sliced_w2(a: Tensor, b: Tensor, n_proj: int = 64) -> float:
    """Sliced 2-Wasserstein distance of two equal-size point clouds (exact per projection)."""
    g = torch.Generator().manual_seed(1234)
    d = torch.randn(a.shape[1], n_proj, generator=g, dtype=F64)
    d = d / d.norm(dim=0)
    pa, pb = (a.double() @ d).sort(0)[0], (b.double() @ d).sort(0)[0]
    return float(((pa - pb) ** 2).mean().sqrt())


MIX = GaussianMixture.random(2, 3, seed=0)
N = 3000
REF = MIX.sample(N, torch.Generator().manual_seed(1))


def mixture_errors(out: Tensor, process: GaussianProcess) -> dict[str, float]:
    mean, cov = MIX.moments()
    occ = torch.bincount(MIX.responsibilities(out, process.t_min, process).argmax(1),
                         minlength=MIX.n_components) / out.shape[0]
    return {"mean": float((out.mean(0) - mean).norm()),
            "cov": float((torch.cov(out.T) - cov).norm()),
            "sw": sliced_w2(out, REF), "occupancy": float((occ - MIX.weights).abs().max())}


# loose statistical tolerances for N = 3000 samples (two independent data sets: sw ~ 0.025,
# mean ~ 0.015, cov ~ 0.015, occupancy ~ 0.01)
TOL = {"mean": 0.05, "cov": 0.06, "sw": 0.05, "occupancy": 0.03}


def matches(err: dict[str, float]) -> bool:
    return all(err[k] < TOL[k] for k in TOL)


SAMPLERS = {
    "ddpm": (sample_ddpm, {}, 200),  # its O(1/n) variance deficit is ~0.02 at 200 steps
    "euler_maruyama": (sample_euler_maruyama, {}, 100),
    "pc_ald": (sample_pc, {"corrector": "ald", "snr": 0.16}, 50),
    "pc_langevin": (sample_pc, {"corrector": "langevin", "snr": 0.16}, 50),
}


def _run_mixture(name: str, denoiser: Denoiser, process: GaussianProcess) -> Tensor:
    fn, kw, n = SAMPLERS[name]
    x = MIX.sample_t(N, process.t_max, process, generator=torch.Generator().manual_seed(2))
    ts = time_grid(process, n, "uniform", final_zero=True)
    return fn(denoiser, x, ts, seed=3, disable=True, **kw)


# --------------------------------------------------------------------------- reference
@pytest.mark.slow  # importing diffusers alone takes ~10 s of CPU
@pytest.mark.diffusers
def test_ddpm_matches_diffusers_ddpm_scheduler() -> None:
    diffusers = pytest.importorskip("diffusers")
    n_train, steps = 1000, 20
    sched = diffusers.DDPMScheduler(num_train_timesteps=n_train, beta_schedule="linear",
                                    clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(steps)
    process = VPDiscrete.linear(n_train)

    def model(x: Tensor, step: Tensor) -> Tensor:  # an arbitrary smooth eps-model
        return 0.3 * x + 1e-3 * append_dims(step, x) * torch.tanh(x)

    x = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = torch.Generator().manual_seed(5)
    ref = x.clone()
    for t in sched.timesteps:
        eps = model(ref, torch.full((6,), float(t), dtype=F64))
        ref = sched.step(eps, t, ref, generator=g).prev_sample
    times = torch.cat([(sched.timesteps.double() + 1) / n_train, torch.zeros(1, dtype=F64)])
    ts = time_grid(process, steps, "list", times=times)
    den = ModelDenoiser(model, process, "epsilon", time_input=process.model_timestep)
    out = sample_ddpm(den, x, ts, seed=5, disable=True)
    # diffusers keeps alphas_cumprod in float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, sample_ddpm(den, x, ts, seed=6, disable=True), atol=1e-2)


# --------------------------------------------------------------------------- mixture statistics
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_match_gaussian_mixture(name: str) -> None:
    process = VPLinear()
    err = mixture_errors(_run_mixture(name, MIX.denoiser(process), process), process)
    assert matches(err), err


@pytest.mark.parametrize("name", ["ddpm", "pc_ald"])
def test_wrong_score_fails_the_mixture_check(name: str) -> None:
    process = VPLinear()
    err = mixture_errors(_run_mixture(name, ScaledEps(MIX.denoiser(process), 1.3), process),
                         process)
    assert not matches(err), err


def test_pc_ve_exact_discretization_matches_mixture() -> None:
    """Song et al.'s VE setting: reverse-diffusion predictor with ``sigma_i^2 - sigma_{i-1}^2``
    and the Langevin corrector, on a geometric grid."""
    process = VE(sigma_min=0.01, sigma_max=20.0)
    x = MIX.sample_t(N, process.t_max, process, generator=torch.Generator().manual_seed(2))
    ts = time_grid(process, 60, "logsnr")
    out = sample_pc(MIX.denoiser(process), x, ts, corrector="langevin", snr=0.16,
                    discretization="exact", seed=3, disable=True)
    err = mixture_errors(out, process)
    assert matches(err), err


# --------------------------------------------------------------------------- OUVE, real and complex
@pytest.mark.parametrize("dtype", [F64, torch.complex128])
@pytest.mark.parametrize("corrector", ["ald", "langevin"])
def test_pc_ouve_recovers_gaussian_data(dtype: torch.dtype, corrector: str) -> None:
    process = OUVE()
    b, d, s = 4000, 8, 0.2
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, d, generator=g, dtype=dtype).expand(b, d)
    m = y[:1] + 0.5 * torch.randn(1, d, generator=g, dtype=dtype)
    den = GaussianDenoiser(process, m, s)
    t_max = torch.full((b,), process.t_max, dtype=F64)
    mu, v = den.moments(y, t_max, y)
    x = mu + v.sqrt() * torch.randn(b, d, generator=g, dtype=dtype)  # the exact marginal
    ts = time_grid(process, 30, "uniform", final_zero=True)  # ends at sigma = 0: the data

    def run(denoiser: Denoiser) -> tuple[float, float]:
        out = sample_pc(denoiser, x, ts, cond={"y": y}, corrector=corrector,
                        snr=0.5 if corrector == "ald" else 0.16, seed=1, disable=True)
        assert out.dtype == dtype
        mean_err = float((out.mean(0) - m[0]).abs().max())
        std = float((out - out.mean(0)).abs().pow(2).mean().sqrt())
        return mean_err, std

    mean_err, std = run(den)
    assert mean_err < 0.03 and abs(std / s - 1) < 0.03, (mean_err, std)
    _, std_wrong = run(GaussianDenoiser(process, m, 1.5 * s))  # control: wrong score
    assert abs(std_wrong / s - 1) > 0.2, std_wrong


# --------------------------------------------------------------------------- probability flow
@pytest.fixture(scope="module")
def pf_reference() -> tuple[Tensor, Tensor, float]:
    process, t_end = VPLinear(), 0.05
    x = MIX.sample_t(64, process.t_max, process, generator=torch.Generator().manual_seed(4))
    return x, reference_pf_ode(MIX, process, x, process.t_max, t_end, rtol=1e-9, atol=1e-10), t_end


@pytest.mark.parametrize(("predictor", "discretization", "tol"), [
    ("reverse_diffusion", "euler", 0.03), ("euler_maruyama", "euler", 0.03),
    ("reverse_diffusion", "exact", 0.25)])  # the exact kernel is a cruder ODE step
def test_probability_flow_predictor_converges_to_reference_ode(
        predictor: str, discretization: str, tol: float,
        pf_reference: tuple[Tensor, Tensor, float]) -> None:
    process = VPLinear()
    x, ref, t_end = pf_reference
    errs = []
    for n in (50, 200):
        ts = time_grid(process, n, "uniform", t_end=t_end)
        out = sample_pc(MIX.denoiser(process), x, ts, predictor=predictor, corrector="none",
                        probability_flow=True, discretization=discretization, disable=True)
        errs.append(float((out - ref).abs().max()))
    assert errs[1] < tol, errs
    assert 3.0 < errs[0] / errs[1] < 6.0, errs  # first order: ~4x smaller for 4x the steps


# --------------------------------------------------------------------------- mechanics
class Counting(Denoiser):
    def __init__(self, base: Denoiser):
        super().__init__(base.process)
        self.base, self.calls, self.times = base, 0, []

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.times.append(float(t[0]))
        return self.base.x0_eps(x, t, **cond)


@pytest.mark.parametrize(("kw", "per_step"), [
    ({}, 2), ({"corrector_steps": 3}, 4), ({"corrector": "none"}, 1),
    ({"predictor": "none", "corrector_steps": 2}, 2)])
def test_pc_nfe(kw: dict[str, Any], per_step: int) -> None:
    process = VPLinear()
    den = Counting(MIX.denoiser(process))
    ts = time_grid(process, 7, "uniform")
    sample_pc(den, torch.randn(4, 2, dtype=F64), ts, seed=0, disable=True, **kw)
    assert den.calls == 7 * per_step
    den.calls = 0
    sample_pc(den, torch.randn(4, 2, dtype=F64), ts, seed=0, disable=True, denoise_final=True,
              **kw)
    assert den.calls == 7 * per_step + 1 and den.times[-1] == pytest.approx(float(ts[-1]))


@pytest.mark.parametrize("fn", [sample_ddpm, sample_euler_maruyama, sample_pc])
def test_denoise_final_modes_seed_and_shape(fn: Any) -> None:
    process = VPLinear()
    den = MIX.denoiser(process)
    ts = time_grid(process, 6, "uniform")  # ends at t_min: sigma > 0
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean = fn(den, x, ts, seed=1, disable=True)
    torch.testing.assert_close(mean, fn(den, x, ts, seed=1, disable=True), rtol=0, atol=0)
    gen = torch.Generator().manual_seed(1)
    torch.testing.assert_close(mean, fn(den, x, ts, generator=gen, disable=True), rtol=0, atol=0)
    noisy = fn(den, x, ts, seed=1, denoise_final="none", disable=True)
    assert (noisy - mean).abs().max() > 1e-3  # the last step's noise
    tweedie = fn(den, x, ts, seed=1, denoise_final=True, disable=True)
    torch.testing.assert_close(tweedie, den.x0(mean, ts[-1].expand(5)))
    # shape-agnostic: (B, 1, 2) gives the same numbers as (B, 2)
    torch.testing.assert_close(fn(den, x[:, None], ts, seed=1, disable=True)[:, 0], mean)
    seen = []
    fn(den, x, ts, seed=1, disable=True, callback=seen.append)
    assert [c["i"] for c in seen] == list(range(6)) and set(seen[0]) == {
        "i", "t", "t_next", "x", "x0"}


def test_reverse_diffusion_exact_step_is_song_ve_update() -> None:
    """One VE step: ``x <- x + (sigma_i^2 - sigma_{i-1}^2) score + sqrt(...) z``."""
    process = VE(sigma_min=0.01, sigma_max=10.0)
    m = torch.tensor([[0.3, -0.2]], dtype=F64)
    den = GaussianDenoiser(process, m, 0.5)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = torch.tensor([0.8, 0.6], dtype=F64)
    out = sample_pc(den, x, ts, corrector="none", discretization="exact",
                    denoise_final="none", seed=7, disable=True)
    s0, s1 = process.sigma(ts)
    mu, v = den.moments(x, ts[:1].expand(4), None)
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    expect = x + (s0**2 - s1**2) * (-(x - mu) / v) + (s0**2 - s1**2).sqrt() * noise
    torch.testing.assert_close(out, expect)


def test_ddpm_one_step_is_the_gaussian_posterior() -> None:
    """VDM eq. 33-34 against the textbook DDPM posterior on a VP process:
    mean ``sqrt(a_s) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_s) / (1 - a_t) x_t``."""
    process = VPLinear()
    den = GaussianDenoiser(process, torch.tensor([[1.0, -1.0]], dtype=F64), 0.3)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = torch.tensor([0.5, 0.4], dtype=F64)
    out = sample_ddpm(den, x, ts, seed=2, denoise_final="none", disable=True)
    ab_t, ab_s = process.alpha(ts) ** 2
    beta = 1 - ab_t / ab_s
    x0 = den.x0(x, ts[:1].expand(3))
    mean = ab_s.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t) * x
    var = (1 - ab_s) / (1 - ab_t) * beta
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(out, mean + var.sqrt() * noise)


@pytest.mark.parametrize("kind", ["ald", "langevin"])
def test_corrector_step_formula(kind: str) -> None:
    """One corrector step by hand: ``x + e score + sqrt(2 e) n`` with SGMSE's
    ``e = 2 (snr sigma)^2`` or Song et al.'s ``e = 2 alpha_i (snr ||n|| / ||score||)^2``
    (norms averaged over the batch)."""
    process = VPLinear()
    den = GaussianDenoiser(process, torch.tensor([[0.3, -0.2, 1.0]], dtype=F64), 0.5)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = torch.tensor([0.6, 0.5], dtype=F64)
    out = sample_pc(den, x, ts, predictor="none", corrector=kind, snr=0.3, seed=7,
                    disable=True)
    score = den.score(x, ts[:1].expand(4))
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    if kind == "ald":
        e = 2 * (0.3 * process.sigma(ts[0])) ** 2
    else:
        a_i = (process.alpha(ts[0]) / process.alpha(ts[1])) ** 2
        e = 2 * a_i * (0.3 * noise.norm(dim=1).mean() / score.norm(dim=1).mean()) ** 2
    torch.testing.assert_close(out, x + e * score + (2 * e).sqrt() * noise)


def test_ald_reaches_the_langevin_stationary_law() -> None:
    """Corrector-only sampling at (nearly) fixed ``t`` on Gaussian ``p_t = N(mu, v)``: the
    unadjusted Langevin chain with step ``e`` has the stationary variance
    ``v / (1 - e / (2 v))`` (exact for Gaussians), here ~30 % above ``v``."""
    process = VPLinear()
    den = GaussianDenoiser(process, torch.tensor([[0.5, -0.5]], dtype=F64), 0.4)
    b, t = 10000, 0.5
    ts = torch.linspace(t, t - 1e-9, 151, dtype=F64)
    x = torch.randn(b, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = sample_pc(den, x, ts, predictor="none", corrector="ald", snr=0.5, seed=1,
                    disable=True)
    mu, v = den.moments(x, torch.full((b,), t, dtype=F64), None)
    e = 2 * (0.5 * process.sigma(torch.tensor(t, dtype=F64))) ** 2
    expect = v[0, 0] / (1 - e / (2 * v[0, 0]))
    torch.testing.assert_close(out.mean(0), mu[0], atol=0.04, rtol=0)
    assert abs(float(out.var(0).mean() / expect) - 1) < 0.04
    assert abs(float(out.var(0).mean() / v[0, 0]) - 1) > 0.15  # control: the target itself


def test_invalid_arguments() -> None:
    process = VPLinear()
    den, x = MIX.denoiser(process), torch.zeros(2, 2, dtype=F64)
    ts = time_grid(process, 3)
    with pytest.raises(ValueError):
        sample_pc(den, x, ts, predictor="heun")
    with pytest.raises(ValueError):
        sample_pc(den, x, ts, corrector="foo")
    with pytest.raises(ValueError):
        sample_ddpm(den, x, ts, denoise_final="maybe")
    with pytest.raises(ValueError):  # sigma = 0 before the last grid point
        sample_euler_maruyama(den, x, torch.tensor([1.0, 0.0, 0.0]).double())
