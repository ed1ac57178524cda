"""Predict: observation self-guidance, Kollovieh et al. (2023), "Predict, Refine, Synthesize:
Self-Guiding Diffusion Models for Probabilistic Time Series Forecasting" (TSDiff), Sec. 4.1.

An *unconditional* diffusion model over windows ``x = [context, horizon]`` is conditioned at
inference time on the observed entries ``y_obs`` (mask ``m``) by adding the gradient of an
observation log-likelihood to its score (the paper's eq. for ``grad log p(x^t | y_obs)``):

    grad_{x^t} log p(x^t | y_obs) ~= grad_{x^t} log p(x^t) + s grad_{x^t} log p(y_obs | x^t),

with ``p(y_obs | x^t)`` evaluated on the denoised estimate ``x0_hat(x^t)`` (Tweedie's formula;
the gradient flows through the denoiser, which is what makes it *self*-guidance):

* mean-squared guidance: ``log p = -sum_i m_i (y_i - x0_hat_i)^2`` (Gaussian);
* quantile guidance at level ``kappa``: ``log p = -sum_i m_i rho_kappa(y_i - x0_hat_i)``,
  ``rho_kappa(e) = max(kappa e, (kappa - 1) e)`` (asymmetric Laplace with ``b = 1``, the
  pinball loss). With ``S`` samples per series, sample ``k`` is guided at level
  ``kappa_k = (k + 1) / (S + 1)`` so that the sample paths spread over the predictive
  distribution (as the authors' code does).

Both energies are sums over the observed entries (no factor 1/2), as in the authors'
reference implementation, so the scales ``s`` it tunes (4 for electricity, 8 for solar and
exchange rate, quantile guidance, DDPM) carry over: mean-squared guidance with scale ``s``
is a Gaussian observation model with variance ``1 / (2 s)``.

Implementation: guidance is a transform of the denoiser (docs/architecture.md):
:func:`guided_denoiser` returns core's :class:`~polydiff.core.guidance.GradientGuidance`
(``on="x0"``) around an energy from :func:`observation_energy`; :func:`forecast` samples it
with core's :func:`~polydiff.core.samplers.sample_ddpm` or
:func:`~polydiff.core.samplers.sample_ddim`. The score shift ``delta = s grad log p`` enters
as ``eps' = eps - sigma delta``: for DDIM exactly the authors' ``eps - s sqrt(1 - abar_t)
grad`` (Dhariwal & Nichol 2021, Algorithm 2). For DDPM the authors add
``s beta~_t grad`` (the posterior variance, Dhariwal & Nichol Algorithm 1) after each
ancestral step, with the gradient taken at the new sample; here the shifted score moves the
step's mean by ``s beta_t / sqrt(1 - beta_t) grad``, the discretised score of the posterior
``p_t(x) p(y_obs | x)`` for ``s = 1`` and an exact likelihood. On TSDiff's schedule (100
linear betas 1e-4..0.1) the ratio of the two, ``(1 - abar_t) / ((1 - abar_{t-1}) sqrt(1 -
beta_t))``, is 1.05 at step 50, 1.1 at step 20, 1.5 at step 5 and large only in the last 2-3
steps, where ``beta~_t -> 0``.

Missing values: ``NaN`` entries of the context get mask 0 (and value 0) and are imputed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.guidance import GradientGuidance
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.samplers.registry import get_sampler, sampler_names
from polydiff.core.shapes import append_dims

__all__ = ["GUIDANCE_KINDS", "SAMPLERS", "DDIM_STEPS", "observation_energy", "guided_denoiser",
           "forecast", "observation_mask", "sample_quantile_levels", "default_grid",
           "as_series", "mean_scale"]

GUIDANCE_KINDS = ("mse", "quantile")
#: Every sampler of core's registry (:mod:`polydiff.core.samplers.registry`); TSDiff's own are
#: ``"ddim"`` (guided DDIM, the default) and ``"ddpm"`` (ancestral).
SAMPLERS = sampler_names()
#: guided DDIM's default number of steps (DDPM's default is the model's training timesteps)
DDIM_STEPS = 20

Energy = Callable[..., Tensor]


# --------------------------------------------------------------------------- helpers
def as_series(values: Any, name: str = "context", *, ndim: int = 2,
              dtype: torch.dtype = torch.float64) -> Tensor:
    """A float tensor from numpy/torch/list input, checked to have ``ndim`` dimensions."""
    t = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(dtype)
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def observation_mask(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(values with NaN -> 0, mask)``: the mask is 1 where a value is observed (finite)."""
    mask = torch.isfinite(values)
    return torch.where(mask, values, torch.zeros_like(values)), mask.to(values.dtype)


def mean_scale(context: Tensor, mask: Tensor, minimum: float = 1e-10) -> Tensor:
    """TSDiff's mean scaling (as gluonts' ``MeanScaler``): the mean absolute observed value of
    each context, ``(B,)``, floored at ``minimum`` (1 for an all-missing context)."""
    n = mask.sum(dim=1)
    s = (context.abs() * mask).sum(dim=1) / n.clamp_min(1.0)
    return torch.where(n > 0, s.clamp_min(minimum), torch.ones_like(s))


def sample_quantile_levels(num_samples: int, quantiles: Sequence[float] | None = None
                           ) -> Tensor:
    """The quantile level of each of ``num_samples`` samples, ``(S,)`` float64:
    ``(k + 1) / (S + 1)`` by default (evenly spread, as the authors' code), else
    ``quantiles[k % len(quantiles)]``."""
    if quantiles is None:
        return torch.arange(1, num_samples + 1, dtype=torch.float64) / (num_samples + 1)
    q = torch.as_tensor(list(quantiles), dtype=torch.float64).flatten()
    if q.numel() == 0 or not bool(((q > 0) & (q < 1)).all()):
        raise ValueError(f"quantile levels must lie in (0, 1), got {list(quantiles)}")
    return q[torch.arange(num_samples) % q.numel()]


def default_grid(process: GaussianProcess, steps: int | None = None) -> Tensor:
    """The sampling grid: ``steps`` steps, uniform in time from ``t_max`` to ``t_min``, the last
    one to the zero-noise time where the process has one (default: the process's
    ``num_train_timesteps``, else 100). On a ``VPDiscrete`` schedule with ``steps = N`` these
    are exactly the N training timesteps of DDPM's Algorithm 2."""
    if steps is None:
        steps = int(getattr(process, "num_train_timesteps", 100))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return time_grid(process, steps, "uniform", final_zero=True)


# --------------------------------------------------------------------------- energies
def observation_energy(kind: Literal["mse", "quantile"], y_obs: Tensor, mask: Tensor | None = None,
                       quantile: float | Tensor | None = None) -> Energy:
    """The observation energy ``E(x0) = -log p(y_obs | x0)`` (up to a constant) of TSDiff's
    self-guidance, a function ``energy(x0, **cond) -> (B,)`` (``cond`` is ignored).

    Args:
        kind: ``"mse"``: ``sum_i m_i (y_i - x0_i)^2``; ``"quantile"``: ``sum_i m_i
            rho_kappa(y_i - x0_i)`` with ``rho_kappa(e) = max(kappa e, (kappa - 1) e)``.
        y_obs: observations, shaped like (or broadcastable to) the windows ``x0``; entries
            with mask 0 are ignored (NaNs there are fine).
        mask: 1 where observed, 0 elsewhere (default: where ``y_obs`` is finite).
        quantile: ``kappa`` in (0, 1) for ``kind="quantile"``: a float or per-sample ``(B,)``.
    """
    if kind not in GUIDANCE_KINDS:
        raise ValueError(f"unknown guidance {kind!r}; expected one of {GUIDANCE_KINDS}")
    if mask is None:
        y_obs, mask = observation_mask(y_obs)
    else:
        mask = mask.to(y_obs.dtype)
        y_obs = torch.where(mask > 0, y_obs, torch.zeros_like(y_obs))
    if kind == "quantile":
        if quantile is None:
            raise ValueError("quantile guidance needs the quantile level(s) kappa")
        q = torch.as_tensor(quantile, dtype=torch.float64)
        if not bool(((q > 0) & (q < 1)).all()):
            raise ValueError("quantile levels must lie in (0, 1)")
    else:
        q = None

    def energy(x0: Tensor, **_: Any) -> Tensor:
        e = (y_obs.to(x0) - x0) * mask.to(x0)
        if q is None:
            per = e * e
        else:
            k = append_dims(q, e) if q.ndim else float(q)
            per = torch.maximum(k * e, (k - 1.0) * e)
        return per.reshape(x0.shape[0], -1).sum(dim=1)

    return energy


def guided_denoiser(denoiser: Denoiser, y_obs: Tensor, mask: Tensor | None = None, *,
                    guidance: Literal["mse", "quantile"] = "quantile",
                    scale: float | Tensor = 4.0, quantile: float | Tensor | None = None
                    ) -> Denoiser:
    """Observation self-guidance (TSDiff, Sec. 4.1) as a denoiser transform: core's
    :class:`~polydiff.core.guidance.GradientGuidance` with ``fn = -E`` of
    :func:`observation_energy` on the denoised estimate (``on="x0"``); ``scale = 0`` returns
    the base denoiser's answers unchanged."""
    energy = observation_energy(guidance, y_obs, mask, quantile)
    return GradientGuidance(denoiser, lambda x0, **cond: -energy(x0), scale, on="x0")


# --------------------------------------------------------------------------- forecast
def _repeat_cond(cond: dict[str, Any] | None, b: int, s: int) -> dict[str, Any]:
    """Repeat each per-series ``(B, ...)`` tensor of ``cond`` ``S`` times (series-major)."""
    out: dict[str, Any] = {}
    for k, v in (cond or {}).items():
        out[k] = v.repeat_interleave(s, dim=0) if torch.is_tensor(v) and v.ndim >= 1 \
            and v.shape[0] == b else v
    return out


def forecast(denoiser: Denoiser, context: Any, horizon: int, *, num_samples: int = 100,
             guidance: Literal["mse", "quantile"] = "quantile", scale: float = 4.0,
             sampler: str = "ddim", steps: int | None = None,
             quantiles: Sequence[float] | None = None, eta: float = 0.0, seed: int | None = 0,
             cond: dict[str, Any] | None = None, channel_dim: bool = False,
             scaling: Literal["none", "mean"] = "none", return_window: bool = False,
             dtype: torch.dtype = torch.float32, disable: bool | None = True) -> Tensor:
    """Probabilistic forecasts by observation self-guidance (TSDiff, Kollovieh et al. 2023,
    Sec. 4.1) of an unconditional denoiser over windows of length ``C + H``.

    Args:
        denoiser: any :class:`~polydiff.core.denoiser.Denoiser` over ``(B, L)`` windows
            (``(B, 1, L)`` with ``channel_dim=True``), ``L = C + horizon``.
        context: ``(B, C)`` observed values (numpy or torch); NaN marks a missing value.
        horizon: ``H``, the number of steps to forecast.
        num_samples: ``S`` sample paths per series.
        guidance: ``"mse"`` or ``"quantile"`` (see the module docstring).
        scale: the guidance scale ``s`` (0 = unguided sampling).
        sampler: ``"ddim"`` (guided DDIM, the default; ``eta`` as in core's sampler),
            ``"ddpm"`` (ancestral, the paper's sampler) or any other name of :data:`SAMPLERS`
            (core's registry, e.g. ``"dpmpp_2m"``).
        steps: sampler steps on :func:`default_grid` (default: :data:`DDIM_STEPS` for DDIM,
            the training timesteps for the others).
        quantiles: quantile levels for ``guidance="quantile"``, cycled over the samples
            (default: ``(k + 1) / (S + 1)``); sample ``k`` of every series uses level ``k``.
        seed: seeds one generator for the prior draw and the sampler's noise.
        cond: extra conditioning for the denoiser; ``(B, ...)`` tensors are repeated ``S``
            times along the batch, everything else is passed as is.
        scaling: ``"mean"`` divides each series by its mean absolute observed context value
            before guidance and multiplies the samples back (TSDiff's mean scaling; ``cond``
            is passed unscaled).
        return_window: return the whole sampled window ``(B, S, C + H)`` (context entries,
            including imputed missing values, as sampled) instead of the horizon.
        dtype: the dtype of the sampled windows.

    Returns:
        ``(B, S, H)`` samples (float tensor on the context's device).
    """
    if guidance not in GUIDANCE_KINDS:
        raise ValueError(f"unknown guidance {guidance!r}; expected one of {GUIDANCE_KINDS}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if num_samples < 1 or horizon < 1:
        raise ValueError(f"need num_samples >= 1 and horizon >= 1, got {num_samples}, {horizon}")
    ctx = as_series(context)
    b, c = ctx.shape
    s, length = num_samples, c + horizon
    if scaling not in ("none", "mean"):
        raise ValueError(f"scaling must be 'none' or 'mean', got {scaling!r}")
    values, mask = observation_mask(ctx)
    scl = mean_scale(values, mask) if scaling == "mean" else \
        torch.ones(b, dtype=ctx.dtype, device=ctx.device)
    pad = torch.zeros(b, horizon, dtype=ctx.dtype, device=ctx.device)
    y_obs = torch.cat([values / scl[:, None], pad], dim=1)
    m = torch.cat([mask, pad], dim=1)
    shape = (b * s, 1, length) if channel_dim else (b * s, length)
    y_obs = y_obs.repeat_interleave(s, dim=0).reshape(shape).to(dtype)
    m = m.repeat_interleave(s, dim=0).reshape(shape).to(dtype)
    q = sample_quantile_levels(s, quantiles).repeat(b) if guidance == "quantile" else None
    guided = guided_denoiser(denoiser, y_obs, m, guidance=guidance, scale=scale, quantile=q)

    gen = torch.Generator(device=ctx.device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    x = denoiser.process.prior_sample(shape, generator=gen, device=ctx.device, dtype=dtype)
    if steps is None and sampler == "ddim":
        steps = DDIM_STEPS
    ts = default_grid(denoiser.process, steps)
    kw: dict[str, Any] = dict(cond=_repeat_cond(cond, b, s), disable=disable)
    if sampler == "ddim":
        kw["eta"] = eta
    out = get_sampler(sampler).run(guided, x, ts, generator=gen, **kw)
    out = out.reshape(b, s, length) * scl.to(out)[:, None, None]
    return out if return_window else out[..., c:]
