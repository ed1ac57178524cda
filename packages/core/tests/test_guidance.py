"""Guidance transforms against closed forms: CFG identities and Lin et al.'s rescale, gradient
guidance as Bayes' rule for Gaussians (real and complex), DPS corrections, and their effect on
samples from exact Gaussian-mixture denoisers under every sampler."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.guidance import ClassifierFreeGuidance, GradientGuidance, MeasurementGuidance
from polydiff.core.processes import OUVE, GaussianProcess, VPLinear
from polydiff.core.samplers import (
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler_maruyama,
    sample_heun,
    sample_pc,
)
from polydiff.core.shapes import append_dims
from polydiff.core.testbeds import GaussianMixture

F64 = torch.float64
VP = VPLinear()


# --------------------------------------------------------------------------- test beds
class GaussianDenoiser(Denoiser):
    """Exact denoiser of ``N(m, s^2 I)`` data (complex ``CN(m, s^2)``), any process."""

    def __init__(self, process: GaussianProcess, m: Tensor, s: float):
        super().__init__(process)
        self.m, self.s = m, s

    def coeffs(self, x: Tensor, t: Tensor, y: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``alpha, sigma``, the marginal mean ``mu_t`` and variance ``v``."""
        a, sg = append_dims(self.process.alpha(t), x), append_dims(self.process.sigma(t), x)
        mu = a * self.m if y is None else y + a * (self.m - y)
        return a, sg, mu, a * a * self.s**2 + sg * sg

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        y = self.center(cond)
        a, sg, mu, v = self.coeffs(x, t, y)
        eps = sg * (x - mu) / v
        z = x if y is None else x - y
        z0 = (z - sg * eps) / a
        return (z0 if y is None else z0 + y), eps


MEANS = torch.tensor([[-0.35, 0.0], [0.35, 0.2]], dtype=F64)
STD = 0.45
TWO = GaussianMixture(MEANS, torch.full((2, 2), STD**2, dtype=F64))
NULL = 2


class LabelDenoiser(Denoiser):
    """Exact class-conditional denoiser of :data:`TWO`: ``label`` k in {0, 1} selects
    component k, ``label == NULL`` the whole mixture; counts calls and batch sizes."""

    def __init__(self, process: GaussianProcess):
        super().__init__(process)
        self.parts = [GaussianMixture(MEANS[k:k + 1], torch.full((1, 2), STD**2, dtype=F64))
                      for k in range(2)] + [TWO]
        self.batches: list[int] = []

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        label = cond["label"]
        self.batches.append(x.shape[0])
        outs = [p.x0_eps(x, t, self.process) for p in self.parts]
        x0 = torch.zeros_like(x)
        eps = torch.zeros_like(x)
        for k, (x0k, ek) in enumerate(outs):
            sel = append_dims(label == k, x)
            x0, eps = torch.where(sel, x0k, x0), torch.where(sel, ek, eps)
        return x0, eps


def _x_t(n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=F64), 0.1 + 0.8 * torch.rand(n, generator=g,
                                                                               dtype=F64)


def _score(den: Denoiser, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
    return den.score(x, t, **cond)


def _consistent(den: Denoiser, x: Tensor, t: Tensor, x0: Tensor, eps: Tensor,
                y: Tensor | None = None) -> None:
    """``x_t = c + alpha (x0 - c) + sigma eps``."""
    a, s = append_dims(den.process.alpha(t), x), append_dims(den.process.sigma(t), x)
    c = 0 if y is None else y
    torch.testing.assert_close(c + a * (x0 - c) + s * eps, x)


# --------------------------------------------------------------------------- CFG
def test_cfg_scale_one_and_zero_are_exact() -> None:
    den = LabelDenoiser(VP)
    x, t = _x_t()
    label = torch.tensor([0, 1] * 4)
    cond_out = den.x0_eps(x, t, label=label)
    uncond_out = den.x0_eps(x, t, label=torch.full_like(label, NULL))
    for got, ref, w in [(ClassifierFreeGuidance(den, 1.0, uncond={"label": NULL}), cond_out, 1),
                        (ClassifierFreeGuidance(den, 0.0, uncond={"label": NULL}), uncond_out, 0)]:
        out = got.x0_eps(x, t, label=label)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1]), w
        # a per-sample tensor scale goes through the formula: equal up to rounding
        tens = ClassifierFreeGuidance(den, torch.full((8,), float(w), dtype=F64),
                                      uncond={"label": NULL}).x0_eps(x, t, label=label)
        torch.testing.assert_close(tens, ref)
    assert not torch.allclose(cond_out[1], uncond_out[1])


def test_cfg_guidance_weight_zero_is_the_conditional_model() -> None:
    """Ho & Salimans' weight w (eps = (1 + w) eps_c - w eps_u): w = 0 is the conditional model,
    and w = 2 is diffusers' scale 3, through the full formula (tensor weight)."""
    den = LabelDenoiser(VP)
    x, t = _x_t()
    label = torch.tensor([0, 1] * 4)
    x0c, ec = den.x0_eps(x, t, label=label)
    x0u, eu = den.x0_eps(x, t, label=torch.full_like(label, NULL))
    for w in (0.0, torch.zeros(8, dtype=F64)):
        g = ClassifierFreeGuidance.from_weight(den, w, uncond={"label": NULL})
        x0, eps = g.x0_eps(x, t, label=label)
        torch.testing.assert_close(eps, ec, rtol=0, atol=1e-12)
        torch.testing.assert_close(x0, x0c, rtol=0, atol=1e-12)
    x0, eps = ClassifierFreeGuidance.from_weight(den, 2.0, uncond={"label": NULL}).x0_eps(
        x, t, label=label)
    torch.testing.assert_close(eps, 3.0 * ec - 2.0 * eu)


@pytest.mark.parametrize("rescale_on", ["x0", "eps"])
def test_cfg_formula_and_rescale(rescale_on: str) -> None:
    den = LabelDenoiser(VP)
    x, t = _x_t()
    label = torch.tensor([0, 1] * 4)
    x0c, ec = den.x0_eps(x, t, label=label)
    x0u, eu = den.x0_eps(x, t, label=torch.full_like(label, NULL))
    w = 3.0
    x0, eps = ClassifierFreeGuidance(den, w, uncond={"label": NULL}).x0_eps(x, t, label=label)
    torch.testing.assert_close(eps, eu + w * (ec - eu))
    torch.testing.assert_close(x0, x0u + w * (x0c - x0u))
    _consistent(den, x, t, x0, eps)
    # Lin et al. (2024) eq. 15-16 by hand
    phi = 0.7
    cfg = ClassifierFreeGuidance(den, w, uncond={"label": NULL}, rescale=phi,
                                 rescale_on=rescale_on)
    rx0, reps = cfg.x0_eps(x, t, label=label)
    v, ref = (x0, x0c) if rescale_on == "x0" else (eps, ec)
    factor = phi * ref.std(dim=1, keepdim=True) / v.std(dim=1, keepdim=True) + 1 - phi
    torch.testing.assert_close(rx0 if rescale_on == "x0" else reps, v * factor)
    _consistent(den, x, t, rx0, reps)
    assert not torch.allclose(rx0, x0)
    zero = ClassifierFreeGuidance(den, w, uncond={"label": NULL}, rescale=0.0,
                                  rescale_on=rescale_on).x0_eps(x, t, label=label)
    assert torch.equal(zero[0], x0) and torch.equal(zero[1], eps)


def test_cfg_batching() -> None:
    den = LabelDenoiser(VP)
    x, t = _x_t()
    label = torch.tensor([0, 1] * 4)
    batched = ClassifierFreeGuidance(den, 2.5, uncond={"label": NULL})
    out = batched.x0_eps(x, t, label=label)
    assert den.batches == [16]  # one call on the doubled batch
    den.batches.clear()
    two = ClassifierFreeGuidance(den, 2.5, uncond={"label": NULL}, batched=False)
    ref = two.x0_eps(x, t, label=label)
    assert den.batches == [8, 8]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    den.batches.clear()
    # a callable uncond with a per-sample tensor also batches
    call = ClassifierFreeGuidance(den, 2.5, uncond=lambda c: {**c, "label": c["label"] * 0 + NULL})
    torch.testing.assert_close(call.x0_eps(x, t, label=label), ref, rtol=1e-12, atol=1e-12)
    assert den.batches == [16]


def test_cfg_pushes_samples_toward_the_label() -> None:
    den = LabelDenoiser(VP)
    n = 2000
    x = VP.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = time_grid(VP, 100, "uniform", final_zero=True)
    label = torch.zeros(n, dtype=torch.long)

    def log_class_prob(w: float) -> tuple[float, float]:
        cfg = ClassifierFreeGuidance(den, w, uncond={"label": NULL})
        out = sample_euler_maruyama(cfg, x, ts, cond={"label": label}, seed=1, disable=True)
        resp = TWO.responsibilities(out, 0.0, VP)[:, 0]  # p(label 0 | x0)
        return float(resp.clamp_min(1e-300).log().mean()), float((resp > 0.5).double().mean())

    (lp1, frac1), (lp4, frac4) = log_class_prob(1.0), log_class_prob(4.0)
    assert lp4 > lp1 + 0.2 and frac4 > frac1 + 0.05, (lp1, lp4, frac1, frac4)
    # scale 1 samples the labelled component: p(0 | x) averages P(0 | x ~ component 0)
    comp0 = MEANS[0] + STD * torch.randn(20000, 2, generator=torch.Generator().manual_seed(2),
                                         dtype=F64)
    exact = TWO.responsibilities(comp0, 0.0, VP)[:, 0]
    target = float((exact > 0.5).double().mean())
    assert abs(frac1 - target) < 0.03, (frac1, target)
    assert abs(log_class_prob(0.0)[1] - target) > 0.1  # control: the unconditional model


# --------------------------------------------------------------------------- gradient guidance
def test_gradient_guidance_scale_zero_is_the_base() -> None:
    den = GaussianDenoiser(VP, torch.tensor([0.5, -1.0], dtype=F64), 0.7)
    x, t = _x_t()
    out = GradientGuidance(den, lambda v: -(v**2).sum(1), 0.0).x0_eps(x, t)
    ref = den.x0_eps(x, t)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_gradient_guidance_on_xt_is_bayes_for_gaussians() -> None:
    """Prior ``p_t = N(mu, v I)`` times likelihood ``exp(-||x - a||^2 / (2 r^2))``: the guided
    score is the score of the product, ``-(x - mu) / v - (x - a) / r^2``."""
    m, s, a, r = torch.tensor([0.5, -1.0], dtype=F64), 0.7, torch.tensor([1.0, 2.0]), 0.4
    den = GaussianDenoiser(VP, m, s)
    x, t = _x_t()
    a = a.to(F64)
    guided = GradientGuidance(den, lambda v: -((v - a) ** 2).sum(1) / (2 * r * r), on="xt")
    _, _, mu, v = den.coeffs(x, t)
    expect = -(x - mu) / v - (x - a) / r**2
    torch.testing.assert_close(_score(guided, x, t), expect)
    _consistent(guided, x, t, *guided.x0_eps(x, t))
    # per-sample scale and time-aware functions
    w = torch.linspace(0.0, 2.0, 8, dtype=F64)
    timed = GradientGuidance(den, lambda v, tt: -((v - a) ** 2).sum(1) / (2 * r * r) * tt, w,
                             on="xt", with_time=True)
    torch.testing.assert_close(_score(timed, x, t),
                               -(x - mu) / v - append_dims(w * t, x) * (x - a) / r**2)


def test_gradient_guidance_complex_follows_the_sgmse_score_convention() -> None:
    """Complex OUVE with ``CN(m, s^2)`` data and a ``CN(a, r^2)`` likelihood
    (``log L = -|x - a|^2 / r^2``): guided score ``-(x - mu)/v - (x - a)/r^2``."""
    p = OUVE()
    g = torch.Generator().manual_seed(3)
    y = torch.randn(6, 4, generator=g, dtype=torch.complex128)
    m = y + 0.5 * torch.randn(6, 4, generator=g, dtype=torch.complex128)
    a = torch.randn(6, 4, generator=g, dtype=torch.complex128)
    den, r = GaussianDenoiser(p, m, 0.3), 0.5
    x = y + 0.4 * torch.randn(6, 4, generator=g, dtype=torch.complex128)
    t = torch.full((6,), 0.5, dtype=F64)
    guided = GradientGuidance(den, lambda v, **c: -((v - a).abs() ** 2).sum(1) / r**2, on="xt")
    _, _, mu, v = den.coeffs(x, t, y)
    torch.testing.assert_close(_score(guided, x, t, y=y), -(x - mu) / v - (x - a) / r**2)
    _consistent(guided, x, t, *guided.x0_eps(x, t, y=y), y=y)


def test_gradient_guidance_on_x0_differentiates_through_the_denoiser() -> None:
    """For Gaussian data ``x0_hat = m + alpha s^2 / v (x - mu)``, so
    ``grad_x fn(x0_hat) = alpha s^2 / v grad fn(x0_hat)``."""
    m, s = torch.tensor([0.5, -1.0], dtype=F64), 0.7
    den = GaussianDenoiser(VP, m, s)
    x, t = _x_t()
    a = torch.tensor([1.0, 2.0], dtype=F64)
    guided = GradientGuidance(den, lambda v: -((v - a) ** 2).sum(1) / 2, 1.5)
    al, _, _, v = den.coeffs(x, t)
    x0 = den.x0(x, t)
    expect = den.score(x, t) + 1.5 * al * s**2 / v * (a - x0)
    torch.testing.assert_close(_score(guided, x, t), expect)
    with pytest.raises(ValueError):  # one value per sample
        GradientGuidance(den, lambda v: v).x0_eps(x, t)


# --------------------------------------------------------------------------- DPS
@pytest.mark.parametrize("norm", [False, True])
def test_dps_correction_closed_form(norm: bool) -> None:
    m, s = torch.tensor([0.5, -1.0], dtype=F64), 0.7
    den = GaussianDenoiser(VP, m, s)
    x, t = _x_t()
    y_meas = torch.tensor([1.5, 0.5], dtype=F64)
    dps = MeasurementGuidance(den, lambda v: v, y_meas, 0.8, norm=norm, sigma_y=0.3)
    al, _, _, v = den.coeffs(x, t)
    r = y_meas - den.x0(x, t)
    # grad_x ||r||^2 = -2 alpha s^2 / v r
    grad_sq = -2 * al * s**2 / v * r
    coef = -0.8 / r.norm(dim=1, keepdim=True) if norm else -0.8 / (2 * 0.3**2)
    torch.testing.assert_close(_score(dps, x, t), den.score(x, t) + coef * grad_sq)
    _consistent(dps, x, t, *dps.x0_eps(x, t))


def test_dps_pulls_samples_toward_the_measurement() -> None:
    mix = GaussianMixture.random(2, 3, seed=0)
    den = mix.denoiser(VP)
    n = 500
    x = VP.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = time_grid(VP, 50, "uniform", final_zero=True)
    y_meas = torch.tensor([1.0, -1.0], dtype=F64)

    def dist(d: Denoiser) -> float:
        out = sample_ddpm(d, x, ts, seed=1, disable=True)
        return float((out - y_meas).norm(dim=1).mean())

    free = dist(den)
    guided = dist(MeasurementGuidance(den, lambda v: v, y_meas, 1.0, norm=False, sigma_y=0.2))
    normed = dist(MeasurementGuidance(den, lambda v: v, y_meas, 0.5))
    assert guided < 0.7 * free and normed < 0.8 * free, (free, guided, normed)


# --------------------------------------------------------------------------- every sampler
SAMPLERS = [
    (sample_ddpm, {"seed": 0}), (sample_euler_maruyama, {"seed": 0}),
    (sample_pc, {"seed": 0}), (sample_ddim, {}), (sample_heun, {}), (sample_dpmpp_2m, {}),
]


@pytest.mark.parametrize(("fn", "kw"), SAMPLERS, ids=lambda v: getattr(v, "__name__", ""))
def test_guided_denoisers_work_with_every_sampler(fn: Any, kw: dict[str, Any]) -> None:
    den = LabelDenoiser(VP)
    x = VP.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = time_grid(VP, 8, "logsnr")
    cond = {"label": torch.zeros(16, dtype=torch.long)}
    base = fn(den, x, ts, cond=cond, disable=True, **kw)
    a = torch.tensor([1.0, 1.0], dtype=F64)
    for guided in (ClassifierFreeGuidance(den, 3.0, uncond={"label": NULL}, rescale=0.5),
                   GradientGuidance(den, lambda v, **c: -((v - a) ** 2).sum(1), 0.5),
                   MeasurementGuidance(den, lambda v: v[:, :1], a[:1], 0.5)):
        out = fn(guided, x, ts, cond=cond, disable=True, **kw)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert (out - base).abs().max() > 1e-3, type(guided).__name__
