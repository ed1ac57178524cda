"""Noise-aware predictor training and scheduled predictor guidance, against closed forms."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.predictors import GuidanceSchedule, NoisyPredictorLoss, predictor_guidance
from polydiff.core.processes import VPLinear
from polydiff.core.samplers import sample_euler_maruyama, sample_pc
from polydiff.core.testbeds import GaussianMixture

VP = VPLinear()


def test_loss_of_an_exact_predictor_is_zero_and_errors_are_weighted():
    """The property ``y = sum(x0)`` is predicted exactly from ``x_t`` only through the noise
    model: an oracle that knows ``x0`` gets zero loss, a constant gets the variance."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 4, generator=g)
    y = x0.sum(1)
    loss = NoisyPredictorLoss(VP, clean_fraction=0.5)
    const = loss(lambda x, t: torch.zeros(x.shape[0]), x0, y, generator=g)
    assert torch.isclose(const, y.square().mean(), rtol=1e-6)
    w = torch.zeros(256)
    w[0] = 1.0
    one = loss(lambda x, t: torch.zeros(x.shape[0]), x0, y, generator=g, weight=w)
    assert torch.isclose(one, y[0].square(), rtol=1e-6)


def test_clean_fraction_and_explicit_time():
    loss = NoisyPredictorLoss(VP, clean_fraction=0.25)
    x0 = torch.ones(8, 3)
    _, t = loss.noisy(x0, generator=torch.Generator().manual_seed(0))
    assert (t[:2] == VP.t_min).all() and (t[2:] > VP.t_min).all()
    xt, t = loss.noisy(x0, t=0.5, generator=torch.Generator().manual_seed(0))
    assert (t == 0.5).all() and xt.shape == x0.shape


def test_cross_entropy_kind_and_objective():
    loss = NoisyPredictorLoss(VP, "ce")
    logits = torch.tensor([[10.0, -10.0]]).expand(4, 2)
    val = loss(lambda x, t: logits, torch.zeros(4, 2), torch.zeros(4))
    assert val < 1e-6
    obj = NoisyPredictorLoss(VP).objective()
    batch = {"x0": torch.zeros(4, 2), "y": torch.ones(4), "weight": torch.ones(4)}
    assert torch.isclose(obj(lambda x, t: torch.zeros(4), batch, torch.Generator()),
                         torch.tensor(1.0))
    with pytest.raises(ValueError, match="kind"):
        NoisyPredictorLoss(VP, "hinge")


def test_schedules():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(GuidanceSchedule()(t), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(GuidanceSchedule("linear")(t), torch.tensor([1.0, 0.5, 0.0],
                                                                     dtype=torch.float64))
    cos = GuidanceSchedule("cosine")(t)
    assert cos[0] == 1.0 and abs(cos[2]) < 1e-12 and 0.7 < cos[1] < 0.71
    win = GuidanceSchedule("window", t_lo=0.25, t_hi=0.75, floor=0.1)(t)
    assert torch.allclose(win, torch.tensor([0.1, 1.0, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown guidance schedule"):
        GuidanceSchedule("exponential")


def _normal_denoiser(dim: int) -> Denoiser:
    """Exact denoiser of N(0, I) data (a one-component Gaussian mixture)."""
    mix = GaussianMixture(torch.zeros(1, dim), torch.ones(1, dim))
    return mix.denoiser(VP)


@pytest.mark.parametrize("sampler", ["pc", "em"])
def test_linear_predictor_guidance_shifts_a_gaussian_exactly(sampler):
    """For N(0, I) data under VP every marginal is N(0, I); the time-conditioned predictor
    ``f = alpha(t) c . x_t`` adds ``alpha(t) c`` to the score, which makes it the score of
    N(alpha(t) c, I), the marginal at time t of N(c, I) data: samples come out N(c, I)."""
    torch.manual_seed(0)
    den = _normal_denoiser(2)
    c = torch.tensor([1.5, -0.5], dtype=torch.float64)
    guided = predictor_guidance(
        den, lambda x, t: VP.alpha(t).to(x.dtype) * (x * c.to(x.dtype)).sum(1), 1.0)
    x = VP.prior_sample((4000, 2), dtype=torch.float64, generator=torch.Generator()
                        .manual_seed(1))
    ts = time_grid(VP, 200, "uniform")
    if sampler == "pc":
        out = sample_pc(guided, x, ts, corrector="langevin", snr=0.1, seed=2, disable=True)
    else:
        out = sample_euler_maruyama(guided, x, ts, seed=2, disable=True)
    assert torch.allclose(out.mean(0), c, atol=0.08)
    assert torch.allclose(out.std(0), torch.ones(2, dtype=torch.float64), atol=0.08)


def test_target_guidance_pulls_towards_the_target_and_schedule_zero_is_unguided():
    torch.manual_seed(0)
    mix = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.full((2, 1), 0.05))
    den = mix.denoiser(VP)
    x = VP.prior_sample((2000, 1), dtype=torch.float64, generator=torch.Generator()
                        .manual_seed(3))
    ts = time_grid(VP, 100, "uniform")

    def ident(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return v[:, 0]

    def run(d: Denoiser) -> torch.Tensor:
        return sample_euler_maruyama(d, x, ts, seed=4, disable=True)[:, 0]

    base = run(den)
    assert abs((base > 0).double().mean() - 0.5) < 0.05
    up = run(predictor_guidance(den, ident, 2.0))
    down = run(predictor_guidance(den, ident, 2.0, target=-2.0, target_std=0.5))
    off = run(predictor_guidance(den, ident, 2.0,
                                 schedule=GuidanceSchedule("window", t_lo=0.0, t_hi=0.0)))
    assert (up > 0).double().mean() > 0.9
    assert (down < 0).double().mean() > 0.9
    assert torch.allclose(off, base)
