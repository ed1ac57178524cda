"""The shared one-step updates (polydiff.core.samplers.stepper): driven by hand they give the
sampler functions exactly, their first steps match closed forms, and the grid helpers accept
``(alphas, sigmas)`` as well as a ``Sampling``."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.processes import EDM, OUVE, VPLinear
from polydiff.core.samplers._common import Sampling, make_generator
from polydiff.core.samplers.dpmsolver import (
    dpmpp_stepper,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
)
from polydiff.core.samplers.ode import ddim_stepper, sample_ddim
from polydiff.core.samplers.ode import half_log_snr as ode_half_log_snr
from polydiff.core.samplers.stepper import (
    DDIMStepper,
    DPMSolverStepper,
    UniPCStepper,
    half_log_snr,
)
from polydiff.core.samplers.unipc import sample_unipc, unipc_stepper
from polydiff.core.testbeds import GaussianMixture

F64 = torch.float64
MIX = GaussianMixture.random(dim=3, n_components=2, seed=5)

# name: (sampler function, stepper constructor on (alphas, sigmas), hyperparameters)
CASES = {
    "ddim": (sample_ddim, ddim_stepper, {}),
    "ddim_eta": (sample_ddim, ddim_stepper, {"eta": 0.6}),
    "dpmpp_2m": (sample_dpmpp_2m, lambda a, s, **k: dpmpp_stepper(a, s, 2, **k), {}),
    "dpmpp_2m_heun": (sample_dpmpp_2m, lambda a, s, **k: dpmpp_stepper(a, s, 2, **k),
                      {"solver_type": "heun", "lower_order_final": False}),
    "dpmpp_3m": (sample_dpmpp_3m, lambda a, s, **k: dpmpp_stepper(a, s, 3, **k), {}),
    "dpmpp_2m_sde": (sample_dpmpp_2m_sde,
                     lambda a, s, **k: dpmpp_stepper(a, s, 2, **{"eta": 1.0, **k}), {}),
    "unipc": (sample_unipc, unipc_stepper, {}),
    "unipc_bh1_p2": (sample_unipc, unipc_stepper, {"order": 2, "variant": "bh1"}),
    "unipc_no_corr": (sample_unipc, unipc_stepper, {"disable_corrector": [1, 3]}),
}
STOCHASTIC = {"ddim_eta", "dpmpp_2m_sde"}


def _hand_loop(stepper, den, x, ts, cond=None, seed=None):
    """An outside loop (as a diffusers pipeline runs it): the state, the denoiser's
    ``(x0, eps)`` at grid index ``i``, one ``step``."""
    s = Sampling(den, x, ts, cond)
    gen = make_generator(None, seed, x.device)
    z = s.z
    for i in range(s.steps):
        z0, eps = s.denoise(z, i)
        z = stepper.step(i, z, z0, eps, gen)
    return s.finish(z)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("proc", "grid", "final_zero"),
                         [(VPLinear(), "logsnr", True), (EDM(), "edm", False),
                          (OUVE(), "logsnr", False)])
def test_hand_loop_equals_sampler(name, proc, grid, final_zero) -> None:
    fn, make, hyper = CASES[name]
    ts = time_grid(proc, 9, grid, final_zero=final_zero)
    g = torch.Generator().manual_seed(1)
    cond = {"y": torch.randn(6, 3, generator=g, dtype=F64)} if proc.center_key else None
    x = MIX.sample_t(6, float(ts[0]), proc, generator=g, **(cond or {}))
    den = MIX.denoiser(proc)
    seed = {"seed": 7} if name in STOCHASTIC else {}
    ref = fn(den, x, ts, cond=cond, disable=True, **seed, **hyper)
    stepper = make(proc.alpha(ts), proc.sigma(ts), **hyper)
    out = _hand_loop(stepper, den, x, ts, cond, seed.get("seed"))
    assert torch.equal(out, ref)
    # reset() starts a new trajectory: the same stepper gives the same result again
    stepper.reset()
    assert torch.equal(_hand_loop(stepper, den, x, ts, cond, seed.get("seed")), ref)


def test_first_steps_closed_forms() -> None:
    proc = VPLinear()
    ts = time_grid(proc, 6, "logsnr", final_zero=True)
    al, sg = proc.alpha(ts), proc.sigma(ts)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(4, 2, 3, generator=g, dtype=F64), torch.randn(4, 2, 3, generator=g,
                                                                           dtype=F64)
    z = float(al[0]) * x0 + float(sg[0]) * eps
    # DDIM, eta = 0 (Song et al. 2021, eq. 12): alpha_1 x0 + sigma_1 eps
    expect = float(al[1]) * x0 + float(sg[1]) * eps
    torch.testing.assert_close(ddim_stepper(al, sg).step(0, z, x0, eps), expect, rtol=0,
                               atol=1e-14)
    # DPM-Solver++ first step (first order): (s_1/s_0) z + a_1 (1 - e^{-h}) x0, the same point
    for order in (2, 3):
        out = dpmpp_stepper(al, sg, order).step(0, z, x0, eps)
        torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)
    # UniPC's first prediction is the same first-order step; step = predict(correct(.))
    st = unipc_stepper(al, sg, 3)
    torch.testing.assert_close(st.step(0, z, x0, eps), expect, rtol=0, atol=1e-12)
    st2 = unipc_stepper(al, sg, 3)
    assert torch.equal(st2.predict(0, st2.correct(0, z, x0)), st.step(0, z, x0, eps))
    # the last DDIM / DPM step to sigma = 0 lands on alpha x0
    n = len(ts) - 1
    assert torch.equal(DDIMStepper(ddim_stepper(al, sg).coefs).step(n - 1, z, x0, eps),
                       x0 * float(al[-1]))
    dpm = DPMSolverStepper(dpmpp_stepper(al, sg, 2).coefs)
    assert torch.equal(dpm.step(n - 1, z, x0, eps), x0 * float(al[-1]))
    assert isinstance(st, UniPCStepper) and st.steps == n


def test_half_log_snr_forms() -> None:
    proc = VPLinear()
    ts = time_grid(proc, 7, "logsnr", final_zero=True)
    x = torch.zeros(2, 3, dtype=F64)
    s = Sampling(MIX.denoiser(proc), x, ts)
    lam = half_log_snr(proc.alpha(ts), proc.sigma(ts))
    assert lam == half_log_snr(s) == ode_half_log_snr(s)
    assert lam[-1] == math.inf
    ref = (0.5 * proc.log_snr(ts[:-1])).tolist()
    assert max(abs(a - b) for a, b in zip(lam, ref)) < 1e-12


def test_grid_checks() -> None:
    proc = VPLinear()
    ts = time_grid(proc, 5, "logsnr", final_zero=True)
    bad = torch.cat([ts[:2], ts[-1:], ts[-1:]])  # sigma = 0 before the last point
    al, sg = proc.alpha(bad), proc.sigma(bad)
    with pytest.raises(ValueError, match="sigma > 0"):
        ddim_stepper(al, sg)
    with pytest.raises(ValueError, match="sigma > 0"):
        dpmpp_stepper(al, sg, 2)
    with pytest.raises(ValueError, match="sigma = 0"):
        unipc_stepper(al, sg)
    with pytest.raises(ValueError, match="eta"):
        ddim_stepper(proc.alpha(ts), proc.sigma(ts), eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        dpmpp_stepper(proc.alpha(ts), proc.sigma(ts), 2, eta=-0.1)
