"""UniPC (Zhao et al. 2023) against the exact probability-flow ODE of Gaussian mixtures, a
first-order exponential-integrator oracle and diffusers' UniPCMultistepScheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.processes import EDM, LinearInterpolant, VPLinear
from polydiff.core.samplers.unipc import phi, sample_unipc, unipc_coefficients
from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny float64 batches: intra-op threads only add synchronisation overhead
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(process, batch: int = 16, seed: int = 0):
    """Mixture, start/end times (sigma~ = 15 -> 0.05), start points and the exact endpoint."""
    mix = GaussianMixture.random(2, 3, seed=0)
    t0 = float(process.t_from_sigma_tilde(torch.tensor([15.0], dtype=F64))[0])
    t1 = float(process.t_from_sigma_tilde(torch.tensor([0.05], dtype=F64))[0])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, generator=g, dtype=F64) * float(process.sigma(torch.tensor(t0)))
    return mix, t0, t1, x, reference_pf_ode(mix, process, x, t0, t1)


@pytest.fixture(scope="module")
def vp_problem():
    return (VPLinear(),) + _problem(VPLinear())


def _ddim(den, x, ts):
    """Oracle: the first-order exponential (DDIM / DPM-Solver-1, data prediction) step
    z' = (s'/s) z - a' expm1(-h) z0, written out independently."""
    p = den.process
    a, s = p.alpha(ts), p.sigma(ts)
    z = x
    for i in range(ts.numel() - 1):
        z0 = den.x0(z, ts[i].expand(z.shape[0]))
        if float(s[i + 1]) == 0.0:
            z = float(a[i + 1]) * z0
            continue
        h = math.log(a[i + 1] / s[i + 1]) - math.log(a[i] / s[i])
        z = float(s[i + 1] / s[i]) * z - float(a[i + 1]) * math.expm1(-h) * z0
    return z


def _rmse(a, b) -> float:
    return float((a - b).pow(2).mean().sqrt())


def test_phi_functions():
    """phi_k(z) = int_0^1 e^{(1 - u) z} u^{k-1} / (k-1)! du (Hochbruck & Ostermann 2010)."""
    quad = pytest.importorskip("scipy.integrate").quad
    for z in (-3.0, -0.7, -1e-3, -1e-7, 0.2, 2.5):
        for k in range(1, 5):
            ref = quad(lambda u, k=k, z=z: math.exp((1 - u) * z) * u ** (k - 1)
                       / math.factorial(k - 1), 0.0, 1.0, epsabs=0.0, epsrel=1e-13)[0]
            assert phi(k, z) == pytest.approx(ref, rel=1e-12)
    assert phi(1, 0.0) == 1.0 and phi(3, 0.0) == pytest.approx(1 / 6)
    assert phi(2, -math.inf) == 0.0 and phi(1, -math.inf) == 0.0


@pytest.mark.parametrize("final_zero", [False, True])
def test_order1_without_corrector_is_ddim(vp_problem, final_zero):
    process, mix, *_ = vp_problem
    den = mix.denoiser(process)
    x = process.prior_sample((8, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    ts = time_grid(process, 12, "logsnr", final_zero=final_zero)
    out = sample_unipc(den, x, ts, order=1, disable_corrector=True, disable=True)
    torch.testing.assert_close(out, _ddim(den, x, ts), rtol=1e-12, atol=1e-12)


def test_one_denoiser_call_per_step_and_callback(vp_problem):
    process, mix, t0, t1, x, _ = vp_problem
    den = mix.denoiser(process)
    ts = time_grid(process, 9, "logsnr", t_start=t0, t_end=t1)
    seen = []
    out = sample_unipc(den, x, ts, order=3, callback=seen.append, disable=True)
    assert den.nfe == 9 and [d["i"] for d in seen] == list(range(9))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(seen[0]["x0"], den.x0(x, ts[0].expand(x.shape[0])))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_convergence_order_with_corrector(vp_problem, order):
    """UniPC-p (UniP-p + UniC-p) has global order p + 1 (Zhao et al. 2023, Thm. 3.3), with
    ``lower_order_final=False``. Measured slopes: 1.97, 2.94, 3.79 (rmse 16..128 steps)."""
    process, mix, t0, t1, x, ref = vp_problem
    den = mix.denoiser(process)
    ns = [16, 32, 64, 128]
    errs = [_rmse(sample_unipc(den, x, time_grid(process, n, "logsnr", t_start=t0, t_end=t1),
                               order=order, lower_order_final=False, disable=True), ref)
            for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - (order + 1)) < 0.4, (errs, slope)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_convergence_order_predictor_only(vp_problem, order):
    """UniP-p alone has order p. Measured slopes: 1.00, 1.97, 3.18."""
    process, mix, t0, t1, x, ref = vp_problem
    den = mix.denoiser(process)
    ns = [16, 32, 64, 128]
    errs = [_rmse(sample_unipc(den, x, time_grid(process, n, "logsnr", t_start=t0, t_end=t1),
                               order=order, lower_order_final=False, disable_corrector=True,
                               disable=True), ref)
            for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.4, (errs, slope)


@pytest.mark.parametrize("process", [VPLinear(), EDM()], ids=["vp", "edm"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_ten_steps_beat_ddim(process, variant):
    mix, t0, t1, x, ref = _problem(process, batch=32, seed=1)
    den = mix.denoiser(process)
    ts = time_grid(process, 10, "logsnr", t_start=t0, t_end=t1)
    e_ddim = _rmse(_ddim(den, x, ts), ref)
    e_unipc = _rmse(sample_unipc(den, x, ts, order=3, variant=variant, disable=True), ref)
    assert e_unipc < e_ddim / 5, (e_unipc, e_ddim)


def test_final_step_to_sigma_zero(vp_problem):
    """A grid ending at t_zero: the last step is z = alpha m (the denoiser's output there),
    and the result approaches the exact ODE's data endpoint."""
    process, mix, t0, _, x, _ = vp_problem
    den = mix.denoiser(process)
    ts = time_grid(process, 25, "logsnr", t_start=t0, final_zero=True)
    seen = []
    out = sample_unipc(den, x, ts, order=3, callback=seen.append, disable=True)
    torch.testing.assert_close(out, seen[-1]["x0"] * float(process.alpha(ts[-1])))
    ref = reference_pf_ode(mix, process, x, t0, None)
    assert _rmse(out, ref) < 3e-3


def test_shape_agnostic_and_float32(vp_problem):
    process, mix, t0, t1, x, _ = vp_problem
    den = mix.denoiser(process)
    ts = time_grid(process, 8, "edm", t_start=t0, t_end=t1)
    flat = sample_unipc(den, x, ts, disable=True)
    shaped = sample_unipc(den, x.reshape(-1, 1, 2, 1), ts, disable=True)
    torch.testing.assert_close(shaped.reshape(-1, 2), flat)
    f32 = sample_unipc(den, x.float(), ts, disable=True)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), flat, rtol=1e-4, atol=1e-4)


def test_coefficients_validation():
    t = torch.linspace(1.0, 0.0, 6, dtype=F64)
    p = VPLinear()
    a, s = p.alpha(t), p.sigma(t)
    steps = unipc_coefficients(a, s, order=3)
    assert [st.order for st in steps] == [1, 2, 3, 2, 1]  # warm-up / lower_order_final
    assert steps[-1].cx == 0.0 and steps[-1].pred == (1.0,) and steps[-1].corr is None
    assert all(st.corr is not None for st in steps[:-1])
    steps = unipc_coefficients(a, s, order=3, lower_order_final=False)
    assert [st.order for st in steps] == [1, 2, 3, 3, 1]  # the step to sigma = 0 is DDIM's
    with pytest.raises(ValueError):
        unipc_coefficients(a, s, order=4)
    with pytest.raises(ValueError):
        unipc_coefficients(a, s, variant="bh3")
    t_flow = torch.linspace(1.0, 0.0, 7, dtype=F64)  # alpha = 0 at the start: lambda = -inf
    flow = LinearInterpolant()
    steps = unipc_coefficients(flow.alpha(t_flow), flow.sigma(t_flow), order=3)
    assert [st.order for st in steps] == [1, 1, 2, 3, 2, 1]
    assert steps[0].corr is None and all(math.isfinite(w) for st in steps for w in st.pred)
    s_bad = s.clone()
    s_bad[2] = 0.0
    with pytest.raises(ValueError):
        unipc_coefficients(a, s_bad)


@pytest.mark.diffusers
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("lower_order_final", [True, False])
def test_matches_diffusers(order, variant, lower_order_final):
    """Same sigma grid, same data predictions: diffusers' UniPCMultistepScheduler
    (``predict_x0=True``) and ours agree to rounding, corrector skipping included."""
    diffusers = pytest.importorskip("diffusers")
    process = VPLinear()
    den = GaussianMixture.random(2, 3, seed=0).denoiser(process)
    x = process.prior_sample((8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    n = 8
    for final_zero, disable_corrector in ((False, ()), (False, (2,)), (True, ())):
        if final_zero and (variant == "bh1" or not lower_order_final):
            continue  # diffusers divides by zero there; ours drops to first order
        ts = time_grid(process, n, "logsnr", final_zero=final_zero)
        sch = diffusers.UniPCMultistepScheduler(
            solver_order=order, prediction_type="sample", predict_x0=True, solver_type=variant,
            lower_order_final=lower_order_final, disable_corrector=list(disable_corrector))
        sch.set_timesteps(n)
        sch.sigmas = process.sigma_tilde(ts).to(F64)
        y = x.clone()
        for i, step in enumerate(sch.timesteps):
            y = sch.step(den.x0(y, ts[i].expand(8)), step, y).prev_sample
        ours = sample_unipc(den, x, ts, order=order, variant=variant,
                            lower_order_final=lower_order_final,
                            disable_corrector=disable_corrector, disable=True)
        torch.testing.assert_close(ours, y, rtol=1e-12, atol=1e-12)
