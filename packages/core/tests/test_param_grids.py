"""Parameterization conversions, the denoiser wrappers and the time grids."""

from __future__ import annotations

import itertools

import pytest
import torch

from polydiff.core.denoiser import EDMDenoiser, ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.param import PREDICTION_TYPES, convert, edm_precond_coefficients, to_x0_eps
from polydiff.core.processes import EDM, OUVE, VE, LinearInterpolant, VPCosine, VPDiscrete, VPLinear

PROCS = [VPLinear(), VPCosine(), VE(), EDM(), OUVE(), LinearInterpolant(), VPDiscrete.linear()]


def _batch(p, gen, shape=(5, 2, 3)):
    x0 = torch.randn(shape, dtype=torch.float64, generator=gen)
    y = torch.randn(shape, dtype=torch.float64, generator=gen) if p.center_key else None
    t = p.t_min + (p.t_max - p.t_min) * torch.rand(shape[0], dtype=torch.float64, generator=gen)
    xt, eps = p.marginal(x0, t, y=y, generator=gen)
    return x0, eps, xt, t, y


@pytest.mark.parametrize("p", PROCS, ids=lambda p: type(p).__name__)
def test_every_conversion_round_trips(p):
    gen = torch.Generator().manual_seed(0)
    x0, eps, xt, t, y = _batch(p, gen)
    for src, dst in itertools.product(PREDICTION_TYPES, PREDICTION_TYPES):
        a = convert(eps, "epsilon", src, xt, t, p, y)
        b = convert(a, src, dst, xt, t, p, y)
        back = convert(b, dst, "epsilon", xt, t, p, y)
        torch.testing.assert_close(back, eps, rtol=1e-7, atol=1e-7, msg=f"{src}->{dst}")
    # and the pair recovered from any type is the true (x0, eps)
    for kind in PREDICTION_TYPES:
        pred = convert(eps, "epsilon", kind, xt, t, p, y)
        r0, re = to_x0_eps(pred, kind, xt, t, p, y)
        torch.testing.assert_close(r0, x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(re, eps, rtol=1e-6, atol=1e-6)


def test_known_values_of_v_and_flow():
    p = LinearInterpolant()
    gen = torch.Generator().manual_seed(1)
    x0, eps, xt, t, _ = _batch(p, gen, (4, 3))
    # rectified flow velocity is eps - x0; v = alpha eps - sigma x0
    torch.testing.assert_close(convert(eps, "epsilon", "flow", xt, t, p), eps - x0)
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    torch.testing.assert_close(convert(eps, "epsilon", "v_prediction", xt, t, p), a * eps - s * x0)
    torch.testing.assert_close(convert(eps, "epsilon", "score", xt, t, p), -eps / s)
    with pytest.raises(ValueError, match="unknown prediction type"):
        convert(eps, "epsilon", "noise", xt, t, p)


def test_model_denoiser_and_edm_preconditioning():
    p = VPLinear()
    gen = torch.Generator().manual_seed(2)
    x0, eps, xt, t, _ = _batch(p, gen, (4, 6))
    oracle = ModelDenoiser(lambda x, tt: eps.to(x.dtype), p, "epsilon")
    r0, re = oracle.x0_eps(xt, t)
    torch.testing.assert_close(r0, x0)
    v = ModelDenoiser(lambda x, tt: convert(eps, "epsilon", "v_prediction", xt, t, p), p,
                      "v_prediction")
    torch.testing.assert_close(v.x0(xt, t), x0)
    torch.testing.assert_close(v.score(xt, t), -eps / p.sigma(t)[:, None])
    clamped = ModelDenoiser(lambda x, tt: eps, p, "epsilon", x0_clamp=0.5)
    c0, ce = clamped.x0_eps(xt, t)
    assert float(c0.abs().max()) <= 0.5
    torch.testing.assert_close(xt, p.alpha(t)[:, None] * c0 + p.sigma(t)[:, None] * ce)
    with pytest.raises(ValueError):
        ModelDenoiser(lambda x, tt: x, p, "noise")
    # EDM: a raw network F that outputs the ideal residual gives back x0 exactly
    e = EDM()
    s = e.sigma(t * 10)
    xe = x0 + s[:, None] * eps
    c = edm_precond_coefficients(s)

    def ideal(x_in, c_noise):
        torch.testing.assert_close(c_noise, torch.log(s) / 4)
        return (x0 - c["c_skip"][:, None] * xe) / c["c_out"][:, None]

    torch.testing.assert_close(EDMDenoiser(ideal, e).x0(xe, t * 10), x0)
    # the coefficients satisfy EDM's unit-variance conditions (Karras et al. 2022, App. B.6)
    sd = 0.5
    torch.testing.assert_close(c["c_in"] ** 2 * (s**2 + sd**2), torch.ones_like(s))
    torch.testing.assert_close(c["c_skip"] ** 2 * sd**2 + c["c_out"] ** 2 - 2 * c["c_skip"] * sd**2
                               + sd**2 - c["c_out"] ** 2 * 0, sd**2 * (1 - c["c_skip"]) ** 2
                               + c["c_skip"] ** 2 * s**2 + c["c_out"] ** 2 * 0
                               + (c["c_skip"] ** 2 * sd**2 + c["c_out"] ** 2 - 2 * c["c_skip"]
                                  * sd**2 + sd**2 - sd**2 * (1 - c["c_skip"]) ** 2
                                  - c["c_skip"] ** 2 * s**2))


@pytest.mark.parametrize("kind", ["uniform", "logsnr", "edm", "quadratic"])
@pytest.mark.parametrize("p", [VPLinear(), VPCosine(), EDM(), VE(), LinearInterpolant()],
                         ids=lambda p: type(p).__name__)
def test_time_grids(kind, p):
    ts = time_grid(p, 8, kind)
    assert ts.dtype == torch.float64 and ts.numel() == 9
    assert bool((ts[1:] < ts[:-1]).all())
    assert float(ts[0]) == p.t_max and float(ts[-1]) == pytest.approx(p.t_min)
    if kind == "logsnr":
        lam = p.log_snr(ts)
        torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(8), rtol=1e-8, atol=1e-8)
    if kind == "edm":
        r = p.sigma_tilde(ts) ** (1 / 7)
        torch.testing.assert_close(r.diff(), r.diff()[:1].expand(8), rtol=1e-8, atol=1e-8)
    z = time_grid(p, 8, kind, final_zero=True)
    if p.t_zero is None:
        torch.testing.assert_close(z, ts)
    else:
        assert z.numel() == 9 and float(z[-1]) == p.t_zero and float(p.sigma(z[-1:])) == 0.0


def test_explicit_grid_and_errors():
    p = VPLinear()
    ts = time_grid(p, 0, "list", times=[0.9, 0.5, 0.1])
    assert ts.tolist() == [0.9, 0.5, 0.1]
    with pytest.raises(ValueError):
        time_grid(p, 0, "list", times=[0.1, 0.5])
    with pytest.raises(ValueError):
        time_grid(p, 4, "cubic")
    with pytest.raises(ValueError):
        time_grid(p, 0, "uniform")
    with pytest.raises(ValueError, match="sigma = 0"):
        time_grid(p, 5, "logsnr", t_end=0.0)
    lin = time_grid(p, 5, "uniform", t_end=0.0)  # diffusers' "linspace" spacing
    torch.testing.assert_close(lin, torch.linspace(1.0, 0.0, 6, dtype=torch.float64))
