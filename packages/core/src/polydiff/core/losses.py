"""Training losses of Gaussian diffusion models: time sampling, targets and weightings.

One weighted denoising loss covers the usual objectives. Every weighting is expressed in one
*common space*: a weight ``w(t)`` on the clean-data (x0-space) squared error

    ``L = E_t E_{x0, eps} [ w(t) |x0_hat(x_t, t) - x0|^2 ]``

with ``x_t = c + alpha (x0 - c) + sigma eps``.

At fixed ``x_t`` every prediction type is an affine function of the x0 estimate,
``pred_k = s_k(t) x0_hat + (terms in x_t)``, so the squared error of a network predicting type
``k`` is ``s_k(t)^2`` times the x0-space error. :func:`x0_error_scale` obtains ``s_k`` from
:func:`polydiff.core.param.from_x0_eps` (the one conversion table); for reference,
``s_eps^2 = SNR``, ``s_v^2 = (alpha^2 + sigma^2)^2 / sigma^2`` (``SNR + 1`` for VP),
``s_score^2 = SNR / sigma^2``, ``s_flow^2 = ((alpha sigma' - sigma alpha') / sigma)^2``.

Weightings (``w`` on the x0-space error):

* ``"uniform"``: the unweighted MSE of the chosen ``target`` (``w = s_target^2``; DDPM's
  ``L_simple`` for ``target="epsilon"``, Ho et al. 2020);
* ``"snr"``: ``w = SNR = alpha^2 / sigma^2`` (the eps-MSE; also denoising score matching with
  ``lambda = sigma^2``, Song et al. 2021, as in SGMSE);
* ``"min_snr"``: ``w = min(SNR, gamma)`` (Hang et al. 2023, "Efficient Diffusion Training via
  Min-SNR Weighting Strategy": ``min(SNR, gamma) / SNR`` on the eps-MSE);
* ``"edm"``: ``w = lambda(sigma~) = (sigma~^2 + sigma_data^2) / (sigma~ sigma_data)^2`` with
  ``sigma~ = sigma / alpha`` (Karras et al. 2022, "Elucidating the Design Space of
  Diffusion-Based Generative Models", Sec. 5 and Table 1);
* ``"likelihood"``: ``g^2`` on the score-MSE, i.e. ``w = g^2 alpha^2 / sigma^4`` (``g^2 /
  sigma^2`` on the eps-MSE; Song et al. 2021, "Maximum Likelihood Training of Score-Based
  Diffusion Models", Thm. 1: the bound is half the time integral of this loss);
* a callable ``w(t)`` for anything else.

Time sampling (:func:`sample_time`): uniform on ``[t_min, t_max]``; EDM's log-normal noise
levels; importance sampling of ``t`` (inverse CDF on a fine grid) with a weight that keeps the
loss an unbiased estimate of its uniform-time value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser, EDMDenoiser, ModelDenoiser
from polydiff.core.param import PREDICTION_TYPES, from_x0_eps
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import append_dims, as_time

__all__ = [
    "TIME_SAMPLINGS", "WEIGHTINGS", "x0_error_scale", "likelihood_weight", "loss_weight",
    "TimeImportanceSampler", "sample_time", "DiffusionLoss", "denoising_score_matching_loss",
]

TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "lognormal", "importance")
WEIGHTINGS: tuple[str, ...] = ("uniform", "snr", "min_snr", "edm", "likelihood")

WeightFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- weights
def x0_error_scale(process: GaussianProcess, t: Tensor, kind: str) -> Tensor:
    """``s_k(t)``: the error of a type-``kind`` prediction is ``s_k(t)`` times the error of the
    equivalent x0 prediction at the same ``x_t`` (per sample, shape of ``t``).

    Computed with :func:`~polydiff.core.param.from_x0_eps` on a unit x0 perturbation at fixed
    ``x_t`` (which moves ``eps`` by ``-alpha / sigma``), so no conversion table is duplicated.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    t1 = t.reshape(-1)
    a, s = process.alpha(t1), process.sigma(t1)
    one = torch.ones_like(t1)
    scale = from_x0_eps(one, -a / s, kind, torch.zeros_like(t1), t1, process)
    return scale.reshape(t.shape)


def likelihood_weight(process: GaussianProcess, t: Tensor) -> Tensor:
    """The likelihood weighting on the eps-MSE, ``g(t)^2 / sigma(t)^2`` (Song et al. 2021,
    "Maximum Likelihood Training of Score-Based Diffusion Models", Sec. 4-5)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return process.g2(t) / process.sigma(t) ** 2


def loss_weight(process: GaussianProcess, t: Tensor, weighting: str | WeightFn,
                target: str = "sample", *, min_snr_gamma: float = 5.0,
                sigma_data: float = 0.5) -> Tensor:
    """The weight ``w(t)`` on the x0-space squared error of ``weighting`` (see the module
    docstring; ``target`` matters only for ``"uniform"``). float64, shape of ``t``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if callable(weighting):
        return torch.as_tensor(weighting(t), dtype=torch.float64)
    if weighting == "uniform":
        return x0_error_scale(process, t, target) ** 2
    if weighting in ("snr", "min_snr"):
        snr = torch.exp(process.log_snr(t))
        return snr if weighting == "snr" else torch.clamp(snr, max=min_snr_gamma)
    if weighting == "edm":
        return EDMDenoiser.loss_weight(process.sigma_tilde(t), sigma_data)
    if weighting == "likelihood":
        return process.g2(t) * x0_error_scale(process, t, "score") ** 2
    raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS} "
                     "or a callable")


# --------------------------------------------------------------------------- time sampling
class TimeImportanceSampler:
    """Sample ``t`` on ``[t_min, t_max]`` with density proportional to ``weight_fn(t)`` by the
    inverse CDF on a fine grid (Song et al. 2021, "Maximum Likelihood Training of Score-Based
    Diffusion Models", Sec. 5: importance sampling of the likelihood weighting).

    The grid is the union of ``n_grid`` points uniform in ``t`` and ``n_grid`` points uniform
    in log-SNR (so sharply peaked weightings near ``t_min`` are resolved). The sampled density
    ``q`` is piecewise constant (trapezoid masses, uniform within a cell) and
    :meth:`sample` returns the exact importance weight ``u(t) / q(t)`` with ``u`` the uniform
    density, so ``E_q[weight * f(t)] = E_uniform[f(t)]`` holds exactly.
    """

    def __init__(self, process: GaussianProcess, weight_fn: WeightFn | None = None,
                 n_grid: int = 4096, t_min: float | None = None, t_max: float | None = None):
        self.process = process
        self.t_min = float(process.t_min if t_min is None else t_min)
        self.t_max = float(process.t_max if t_max is None else t_max)
        fn = weight_fn or (lambda t: likelihood_weight(process, t))
        u = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
        ends = torch.tensor([self.t_min, self.t_max], dtype=torch.float64)
        lam = process.log_snr(ends)
        t_lam = process.t_from_log_snr(lam[0] + u * (lam[1] - lam[0]))
        grid = torch.cat([ends[0] + u * (ends[1] - ends[0]), t_lam])
        grid = torch.unique(grid.clamp(self.t_min, self.t_max))  # sorted ascending
        p = torch.as_tensor(fn(grid), dtype=torch.float64)
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError("the importance weighting must be finite and non-negative")
        dt = grid[1:] - grid[:-1]
        mass = 0.5 * (p[1:] + p[:-1]) * dt
        self.total = float(mass.sum())
        if not self.total > 0:
            raise ValueError("the importance weighting integrates to zero")
        self.grid, self.dt = grid, dt
        self.cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(mass, 0)])
        self.cdf = self.cdf / self.cdf[-1]
        self.density = mass / self.total / dt  # q on each cell

    def _cell(self, t: Tensor) -> Tensor:
        i = torch.searchsorted(self.grid.to(t.device), t, right=True) - 1
        return i.clamp(0, self.dt.numel() - 1)

    def pdf(self, t: Tensor) -> Tensor:
        """The density ``q(t)`` actually sampled (piecewise constant)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.density.to(t.device)[self._cell(t)]

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``(t, importance_weight)``, both ``(batch,)`` float64."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        cdf, grid, dt = (v.to(u.device) for v in (self.cdf, self.grid, self.dt))
        i = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, dt.numel() - 1)
        frac = ((u - cdf[i]) / (cdf[i + 1] - cdf[i])).clamp(0.0, 1.0)
        t = grid[i] + frac * dt[i]
        w = 1.0 / ((self.t_max - self.t_min) * self.density.to(u.device)[i])
        return t, w


def sample_time(process: GaussianProcess, batch: int, kind: str = "uniform", *,
                generator: torch.Generator | None = None,
                device: torch.device | str | None = None, p_mean: float = -1.2,
                p_std: float = 1.2, weight_fn: WeightFn | None = None, n_grid: int = 4096,
                t_min: float | None = None, t_max: float | None = None,
                ) -> tuple[Tensor, Tensor]:
    """Draw training times; returns ``(t, importance_weight)``, both ``(batch,)`` float64.

    * ``"uniform"``: ``t ~ U[t_min, t_max]``, weight 1;
    * ``"lognormal"``: ``ln sigma~ ~ N(p_mean, p_std^2)`` (Karras et al. 2022, Sec. 5,
      ``P_mean = -1.2``, ``P_std = 1.2``) mapped to process time by
      ``process.t_from_sigma_tilde`` and clipped to ``[t_min, t_max]``; weight 1 (the
      distribution is part of EDM's objective);
    * ``"importance"``: ``t`` with density proportional to ``weight_fn`` (default: the
      likelihood weighting ``g^2 / sigma^2``), weight ``u(t) / q(t)`` (see
      :class:`TimeImportanceSampler`; build one yourself to reuse its table).
    """
    lo = float(process.t_min if t_min is None else t_min)
    hi = float(process.t_max if t_max is None else t_max)
    ones = torch.ones(batch, dtype=torch.float64, device=device)
    if kind == "uniform":
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        return lo + (hi - lo) * u, ones
    if kind == "lognormal":
        n = torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
        t = process.t_from_sigma_tilde(torch.exp(p_mean + p_std * n))
        return t.clamp(lo, hi), ones
    if kind == "importance":
        sampler = TimeImportanceSampler(process, weight_fn, n_grid, lo, hi)
        return sampler.sample(batch, generator=generator, device=device)
    raise ValueError(f"unknown time sampling {kind!r}; expected one of {TIME_SAMPLINGS}")


# --------------------------------------------------------------------------- the loss
def _squared_error(err: Tensor, dim_reduction: str, mask: Tensor | None = None) -> Tensor:
    sq = err.abs().square() if err.is_complex() else err.square()
    if mask is None:
        sq = sq.reshape(sq.shape[0], -1)
        return sq.mean(1) if dim_reduction == "mean" else sq.sum(1)
    m = torch.broadcast_to(mask.to(sq.dtype), sq.shape).reshape(sq.shape[0], -1)
    total = (sq.reshape(sq.shape[0], -1) * m).sum(1)
    return total / m.sum(1).clamp_min(1.0) if dim_reduction == "mean" else total


class DiffusionLoss:
    """Weighted denoising loss (the training objective of every Gaussian process).

    Args:
        process: the forward process.
        target: the parameterization whose unweighted MSE ``weighting="uniform"`` means
            (one of :data:`~polydiff.core.param.PREDICTION_TYPES`); a raw network (not a
            :class:`~polydiff.core.denoiser.Denoiser`) is taken to predict this type.
        weighting: one of :data:`WEIGHTINGS` or a callable ``w(t)``: the weight on the
            x0-space squared error (module docstring).
        min_snr_gamma: ``gamma`` of ``"min_snr"``.
        time_sampling: one of :data:`TIME_SAMPLINGS`.
        sigma_data: EDM's ``sigma_data`` (``"edm"`` weighting).
        p_mean, p_std: EDM's log-normal parameters (``"lognormal"`` sampling).
        importance_fn: density (up to a constant) of ``"importance"`` sampling; default: the
            loss's own weight on the target-space MSE, ``w(t) / s_target(t)^2`` (for
            ``weighting="likelihood", target="epsilon"`` that is Song et al.'s ``g^2 /
            sigma^2``), which makes the per-sample weight constant.
        dim_reduction: ``"mean"`` (default) or ``"sum"`` of the squared error over the
            non-batch dimensions.

    Call ``loss(model, x0, cond=..., t=..., eps=..., generator=..., reduction="mean")``:

    * a :class:`~polydiff.core.denoiser.ModelDenoiser`: its raw network output is compared
      with the true quantity in its own ``prediction_type``, weighted by ``w / s_pred^2``;
    * any other :class:`~polydiff.core.denoiser.Denoiser`: its x0 estimate, weighted by ``w``;
    * any other callable: a network ``model(x_t, t, **cond)`` predicting ``target`` (``t``
      is the process time cast to the data dtype).

    The values agree in all three cases for the same underlying denoiser.
    """

    def __init__(self, process: GaussianProcess, target: str = "epsilon",
                 weighting: str | WeightFn = "uniform", *, min_snr_gamma: float = 5.0,
                 time_sampling: str = "uniform", sigma_data: float = 0.5,
                 p_mean: float = -1.2, p_std: float = 1.2,
                 importance_fn: WeightFn | None = None, dim_reduction: str = "mean"):
        if target not in PREDICTION_TYPES:
            raise ValueError(f"unknown target {target!r}; expected one of {PREDICTION_TYPES}")
        if not callable(weighting) and weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {time_sampling!r}")
        if dim_reduction not in ("mean", "sum"):
            raise ValueError("dim_reduction must be 'mean' or 'sum'")
        self.process, self.target, self.weighting = process, target, weighting
        self.min_snr_gamma, self.sigma_data = float(min_snr_gamma), float(sigma_data)
        self.time_sampling, self.p_mean, self.p_std = time_sampling, p_mean, p_std
        self.importance_fn, self.dim_reduction = importance_fn, dim_reduction
        self._importance: TimeImportanceSampler | None = None

    # ------------------------------------------------------------------ weights
    def weight(self, t: Tensor) -> Tensor:
        """``w(t)`` on the x0-space squared error (float64)."""
        return loss_weight(self.process, t, self.weighting, self.target,
                           min_snr_gamma=self.min_snr_gamma, sigma_data=self.sigma_data)

    def weight_in(self, t: Tensor, kind: str) -> Tensor:
        """The same weighting on the squared error of a type-``kind`` prediction."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.weighting == "uniform" and kind == self.target:
            return torch.ones_like(t)
        return self.weight(t) / x0_error_scale(self.process, t, kind) ** 2

    def sample_time(self, batch: int, *, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``(t, importance_weight)`` by this loss's ``time_sampling``."""
        if self.time_sampling != "importance":
            return sample_time(self.process, batch, self.time_sampling, generator=generator,
                               device=device, p_mean=self.p_mean, p_std=self.p_std)
        if self._importance is None:
            fn = self.importance_fn or (lambda t: self.weight_in(t, self.target))
            self._importance = TimeImportanceSampler(self.process, fn)
        return self._importance.sample(batch, generator=generator, device=device)

    # ------------------------------------------------------------------ evaluation
    def _prediction(self, model: Any, x: Tensor, t: Tensor,
                    cond: Mapping[str, Any]) -> tuple[str, Tensor]:
        dtype = x.real.dtype if x.is_complex() else x.dtype
        if isinstance(model, ModelDenoiser):  # raw output, in its own parameterization
            t_in = model.time_input(t) if model.time_input is not None else t
            return model.prediction_type, model.model(x, t_in.to(dtype), **cond)
        if isinstance(model, Denoiser):
            return "sample", model.x0(x, t, **cond)
        return self.target, model(x, t.to(dtype), **cond)

    def per_sample(self, model: Any, x0: Tensor, *, cond: Mapping[str, Any] | None = None,
                   t: Tensor | float | None = None, eps: Tensor | None = None,
                   generator: torch.Generator | None = None, mask: Tensor | None = None
                   ) -> Tensor:
        """Per-sample losses ``(B,)`` (importance weights included). ``t`` (per sample or
        scalar) and ``eps`` are drawn when not given; ``cond`` holds the conditioning (and the
        centre ``y`` of mean-reverting processes). ``mask`` (broadcastable to ``x0``; 1 where
        an entry counts, 0 where it is missing) restricts the squared error to observed
        entries, as for series with missing values (Tashiro et al. 2021, CSDI): with
        ``dim_reduction="mean"`` the mean is over the observed entries of each sample (0 for
        a sample with none)."""
        cond = dict(cond or {})
        batch = x0.shape[0]
        if t is None:
            t, iw = self.sample_time(batch, generator=generator, device=x0.device)
        else:
            t, iw = as_time(t, batch, x0.device), None
        y = self.process.center(cond)
        x_t, eps = self.process.marginal(x0, t, eps=eps, y=y, generator=generator)
        kind, pred = self._prediction(model, x_t, t, cond)
        true = from_x0_eps(x0, eps, kind, x_t, t, self.process, y)
        w = self.weight_in(t, kind)
        if iw is not None:
            w = w * iw
        mse = _squared_error(pred - true, self.dim_reduction, mask)
        return append_dims(w, mse) * mse

    def __call__(self, model: Any, x0: Tensor, *, cond: Mapping[str, Any] | None = None,
                 t: Tensor | float | None = None, eps: Tensor | None = None,
                 generator: torch.Generator | None = None, reduction: str = "mean",
                 mask: Tensor | None = None) -> Tensor:
        """The loss, reduced over the batch by ``reduction`` (``"mean"``, ``"sum"`` or
        ``"none"``); ``mask`` as in :meth:`per_sample`."""
        losses = self.per_sample(model, x0, cond=cond, t=t, eps=eps, generator=generator,
                                 mask=mask)
        if reduction == "mean":
            return losses.mean()
        if reduction == "sum":
            return losses.sum()
        if reduction == "none":
            return losses
        raise ValueError(f"unknown reduction {reduction!r}")


def denoising_score_matching_loss(model: Any, x0: Tensor, process: GaussianProcess, *,
                                  cond: Mapping[str, Any] | None = None,
                                  t: Tensor | float | None = None, eps: Tensor | None = None,
                                  generator: torch.Generator | None = None,
                                  time_sampling: str = "uniform",
                                  reduction: str = "mean") -> Tensor:
    """Denoising score matching with ``lambda(t) = sigma^2`` (Song et al. 2021, eq. 7; the
    loss of SGMSE+, Richter et al. 2023): per sample
    ``1/2 sum |sigma s_theta(x_t, y, t) + eps|^2`` over the data dimensions.

    This is :class:`DiffusionLoss` with ``target="score"`` and ``weighting="snr"`` (``sigma^2``
    on the score-MSE is ``SNR`` on the x0-MSE), summed over dimensions and halved. ``model``
    is a score network ``model(x_t, t, **cond)`` or any polydiff denoiser."""
    loss = DiffusionLoss(process, target="score", weighting="snr", time_sampling=time_sampling,
                         dim_reduction="sum")
    per = 0.5 * loss.per_sample(model, x0, cond=cond, t=t, eps=eps, generator=generator)
    if reduction == "none":
        return per
    return per.mean() if reduction == "mean" else per.sum()

