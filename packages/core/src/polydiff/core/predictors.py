"""Predictor guidance: train a time-conditioned property predictor on noisy samples, and
steer any sampler with it through :class:`~polydiff.core.guidance.GradientGuidance`, with a
guidance schedule over time.

* :class:`NoisyPredictorLoss`: the objective of a noise-aware predictor ``f(x_t, t, **cond)``
  of a property ``y(x0)``, trained on ``x_t ~ q(x_t | x0)`` at random times (the noisy
  classifier of Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis",
  Sec. 4; the noisy-architecture meta-predictor of An et al. 2024, "DiffusionNAG:
  Predictor-guided Neural Architecture Generation with Diffusion Models", eq. 6-7);
* :class:`GuidanceSchedule`: a weight ``w(t)`` on the guidance gradient (constant,
  increasing towards the data, or on a window of times);
* :func:`predictor_guidance`: the guided denoiser with score
  ``score + scale w(t) grad_{x_t} f(x_t, t)`` (maximise ``f``), or with the Gaussian
  likelihood ``log N(y*; f(x_t, t), s^2)`` of a target value ``y*`` (DiffusionNAG eq. 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.guidance import GradientGuidance
from polydiff.core.losses import sample_time
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import as_time

__all__ = ["NoisyPredictorLoss", "GuidanceSchedule", "SCHEDULE_KINDS", "predictor_guidance"]

SCHEDULE_KINDS = ("constant", "linear", "cosine", "window")


class NoisyPredictorLoss:
    """Loss of a predictor ``model(x_t, t, **cond)`` of targets ``y`` from noisy inputs.

    ``x_t = alpha x0 + sigma eps`` at ``t ~ U[t_min, t_max]`` (or ``t=`` given); with
    ``clean_fraction > 0`` that share of each batch is evaluated at ``t_min`` (the clean end,
    where the predictor also ranks finished samples).

    Args:
        process: the forward process of the diffusion model it will guide.
        kind: ``"mse"`` (regression on ``(B,)`` or ``(B, K)`` targets) or ``"ce"``
            (classification logits ``(B, K)``, integer targets).
        clean_fraction: share of samples at ``t_min``.

    Call ``loss(model, x0, y, cond=None, t=None, generator=None, weight=None)``; batches for
    the training loop are mappings ``{"x0", "y", ...conditioning}``
    (:meth:`objective` gives ``loss_fn(model, batch, generator)``).
    """

    def __init__(self, process: GaussianProcess, kind: Literal["mse", "ce"] = "mse", *,
                 clean_fraction: float = 0.0):
        if kind not in ("mse", "ce"):
            raise ValueError(f"kind must be 'mse' or 'ce', got {kind!r}")
        if not 0.0 <= clean_fraction <= 1.0:
            raise ValueError("clean_fraction must lie in [0, 1]")
        self.process, self.kind, self.clean_fraction = process, kind, float(clean_fraction)

    def noisy(self, x0: Tensor, t: Tensor | float | None = None,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x_t, t)`` for a batch of clean samples."""
        b = x0.shape[0]
        if t is None:
            t = sample_time(self.process, b, generator=generator, device=x0.device)[0]
            n_clean = int(round(self.clean_fraction * b))
            if n_clean:
                t[:n_clean] = float(self.process.t_min)
        else:
            t = as_time(t, b, x0.device)
        return self.process.marginal(x0, t, generator=generator)[0], t

    def per_sample(self, model: Callable[..., Tensor], x0: Tensor, y: Tensor, *,
                   cond: Mapping[str, Any] | None = None, t: Tensor | float | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        x_t, t = self.noisy(x0, t, generator)
        dtype = x0.real.dtype if x0.is_complex() else x0.dtype
        pred = model(x_t, t.to(dtype), **dict(cond or {}))
        if self.kind == "ce":
            return F.cross_entropy(pred, y.long(), reduction="none")
        err = (pred - y.to(pred.dtype)).square()
        return err.reshape(err.shape[0], -1).mean(1)

    def __call__(self, model: Callable[..., Tensor], x0: Tensor, y: Tensor, *,
                 cond: Mapping[str, Any] | None = None, t: Tensor | float | None = None,
                 generator: torch.Generator | None = None, weight: Tensor | None = None
                 ) -> Tensor:
        per = self.per_sample(model, x0, y, cond=cond, t=t, generator=generator)
        if weight is not None:
            return (per * weight.to(per.dtype)).sum() / weight.sum().clamp_min(1e-12)
        return per.mean()

    def objective(self) -> Callable[[Any, Mapping[str, Tensor], torch.Generator], Tensor]:
        """``loss_fn(model, batch, generator)`` for :class:`~polydiff.core.training.Trainer`:
        ``batch`` holds ``"x0"``, ``"y"``, optional ``"weight"`` and conditioning."""

        def loss_fn(model: Any, batch: Mapping[str, Tensor], generator: torch.Generator
                    ) -> Tensor:
            cond = dict(batch)
            x0, y, w = cond.pop("x0"), cond.pop("y"), cond.pop("weight", None)
            return self(model, x0, y, cond=cond, generator=generator, weight=w)

        return loss_fn


@dataclass(frozen=True)
class GuidanceSchedule:
    """A weight ``w(t)`` on the guidance gradient, ``t`` in process time ``[0, 1]``.

    * ``"constant"``: 1;
    * ``"linear"``: ``1 - t`` (strong near the data, where the predictor is reliable);
    * ``"cosine"``: ``cos(pi t / 2)``;
    * ``"window"``: 1 on ``[t_lo, t_hi]``, 0 elsewhere (guide only part of the trajectory).

    ``floor`` is added to the profile's minimum (``w = floor + (1 - floor) profile``).
    """

    kind: str = "constant"
    t_lo: float = 0.0
    t_hi: float = 1.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown guidance schedule {self.kind!r}; expected one of "
                             f"{SCHEDULE_KINDS}")
        if not 0.0 <= self.t_lo <= self.t_hi or not 0.0 <= self.floor <= 1.0:
            raise ValueError("need 0 <= t_lo <= t_hi and 0 <= floor <= 1")

    def __call__(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if self.kind == "constant":
            prof = torch.ones_like(t)
        elif self.kind == "linear":
            prof = (1.0 - t).clamp(0.0, 1.0)
        elif self.kind == "cosine":
            prof = torch.cos(0.5 * math.pi * t.clamp(0.0, 1.0))
        else:
            prof = ((t >= self.t_lo) & (t <= self.t_hi)).to(t.dtype)
        return self.floor + (1.0 - self.floor) * prof


def predictor_guidance(denoiser: Denoiser, predictor: Callable[..., Tensor],
                       scale: float | Tensor = 1.0, *,
                       schedule: GuidanceSchedule | None = None,
                       target: float | Tensor | None = None, target_std: float = 1.0,
                       predictor_cond: Mapping[str, Any] | None = None) -> GradientGuidance:
    """Guide ``denoiser`` with a time-conditioned predictor ``predictor(x_t, t, **cond)``.

    The guidance function is ``w(t) f(x_t, t)`` (ascend the predicted property) or, with a
    ``target`` ``y*``, ``w(t) log N(y*; f(x_t, t), target_std^2)`` (move towards ``y*``:
    DiffusionNAG's conditional score ``grad log p(y | x_t)``, An et al. 2024, eq. 8); either
    is differentiated w.r.t. ``x_t`` by :class:`~polydiff.core.guidance.GradientGuidance`
    (``on="xt"``, noise-aware predictor). ``predictor_cond`` is passed to the predictor in
    place of the sampler's conditioning (e.g. a task embedding the denoiser does not take).
    """
    if target_std <= 0:
        raise ValueError(f"target_std must be positive, got {target_std}")
    sched = schedule or GuidanceSchedule()
    extra = None if predictor_cond is None else dict(predictor_cond)

    def fn(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        f = predictor(x, t.to(x.dtype), **(cond if extra is None else extra))
        if target is not None:
            y = torch.as_tensor(target, dtype=f.dtype, device=f.device)
            f = -0.5 * ((f - y) / target_std).square()
        return sched(t).to(f.dtype) * f

    return GradientGuidance(denoiser, fn, scale, on="xt", with_time=True)
