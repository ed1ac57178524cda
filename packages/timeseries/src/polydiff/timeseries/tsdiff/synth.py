"""Synthesize: unconditional samples of a time-series diffusion model and the Linear Predictive
Score, Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for
Probabilistic Time Series Forecasting" (TSDiff), Sec. 5.3.

The Linear Predictive Score (LPS) judges synthetic windows by their use as training data: a
linear ridge regressor is fitted on the synthetic windows to predict the last ``H`` values
from the ``C`` before them, and its forecasts are scored on real test windows. The authors
fit scikit-learn's ``Ridge()`` (``alpha = 1``, unpenalised intercept) and report the CRPS
from gluonts' evaluator; for a point forecast that CRPS estimate (``mean_wQuantileLoss``,
quantiles 0.1..0.9) equals the normalised deviation ``ND = sum |y - y_hat| / sum |y|``
over all test horizons, which is what :func:`linear_predictive_score` returns (lower is
better). With ``scaling="mean"`` every window is divided by the mean absolute value of its
context, the regressor is fitted and applied in that space, and test forecasts are scaled back
(the authors' ``scaling_type="mean"`` scales the test windows only and takes the synthetic
ones, TSDiff samples in its mean-scaled space, as already scaled; scaling them again makes
the score invariant to the scale of each set and changes samples of that space little).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers.registry import get_sampler
from polydiff.timeseries.tsdiff.guidance import SAMPLERS, default_grid

__all__ = ["synthesize", "fit_ridge", "normalized_deviation", "linear_predictive_score"]


@torch.no_grad()
def synthesize(denoiser: Denoiser, n: int, length: int, *,
               sampler: str = "ddpm", steps: int | None = None,
               seed: int | None = 0, eta: float = 0.0, batch_size: int | None = None,
               cond: dict[str, Any] | None = None, channel_dim: bool = False,
               dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
               disable: bool | None = True) -> Tensor:
    """``n`` unconditional windows ``(n, length)`` from ``denoiser`` (TSDiff's "synthesize"),
    with core's DDPM ancestral sampler, DDIM or another sampler of core's registry
    (:data:`~.guidance.SAMPLERS`) on :func:`~.guidance.default_grid`.

    ``batch_size`` splits the draw into chunks (one generator runs through all of them, so the
    samples depend on the chunking); ``cond`` is passed as is to every chunk;
    ``channel_dim`` samples ``(B, 1, length)`` windows for denoisers that want them.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if n < 1 or length < 1:
        raise ValueError(f"need n >= 1 and length >= 1, got n={n}, length={length}")
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    gen = torch.Generator(device=device or "cpu")
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    ts = default_grid(denoiser.process, steps)
    out = []
    for start in range(0, n, bs):
        m = min(bs, n - start)
        shape = (m, 1, length) if channel_dim else (m, length)
        x = denoiser.process.prior_sample(shape, generator=gen, device=device, dtype=dtype)
        kw: dict[str, Any] = {"eta": eta} if sampler == "ddim" else {}
        z = get_sampler(sampler).run(denoiser, x, ts, cond=cond, generator=gen,
                                     disable=disable, **kw)
        out.append(z.reshape(m, length))
    return torch.cat(out)


def _as_windows(a: Any, name: str) -> np.ndarray:
    v = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    v = v.astype(np.float64)
    if v.ndim != 2:
        raise ValueError(f"{name} must be (N, L) windows, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept (scikit-learn's ``Ridge(alpha)``):
    ``W = (Xc^T Xc + alpha I)^{-1} Xc^T Yc`` on centred data, ``b = mean(y) - mean(x) W``.
    Returns ``(W (C, H), b (H,))``."""
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    w = np.linalg.lstsq(gram, xc.T @ yc, rcond=None)[0]
    return w, ym - xm @ w


def normalized_deviation(y: np.ndarray, y_hat: np.ndarray) -> float:
    """``ND = sum |y - y_hat| / sum |y|``: gluonts' ``ND``, and its ``mean_wQuantileLoss``
    (the CRPS estimate) of a point forecast."""
    denom = float(np.abs(y).sum())
    if denom == 0.0:
        raise ValueError("the test targets are all zero: the normalised deviation is undefined")
    return float(np.abs(y - y_hat).sum() / denom)


def linear_predictive_score(synthetic: Any, real_test: Any, context_length: int,
                            alpha: float = 1.0, *, prediction_length: int | None = None,
                            scaling: Literal["none", "mean"] = "none") -> float:
    """TSDiff's Linear Predictive Score (Sec. 5.3): fit :func:`fit_ridge` on ``synthetic``
    windows ``(N, L)`` (the last ``C + H`` values of each: ``C = context_length``; ``H =
    prediction_length``, default ``L - C``) and return its :func:`normalized_deviation` (the
    point-forecast CRPS) on the last ``C + H`` values of the ``real_test`` windows ``(M, L')``.
    ``alpha`` is the ridge penalty; ``scaling`` see the module docstring. Lower is better."""
    syn, real = _as_windows(synthetic, "synthetic"), _as_windows(real_test, "real_test")
    c = int(context_length)
    h = syn.shape[1] - c if prediction_length is None else int(prediction_length)
    if c < 1 or h < 1 or c + h > min(syn.shape[1], real.shape[1]):
        raise ValueError(f"context_length={c} and prediction_length={h} do not fit windows of "
                         f"length {syn.shape[1]} (synthetic) and {real.shape[1]} (real)")
    if scaling not in ("none", "mean"):
        raise ValueError(f"scaling must be 'none' or 'mean', got {scaling!r}")
    syn, real = syn[:, -(c + h):], real[:, -(c + h):]
    if scaling == "mean":
        syn = syn / _mean_scale(syn[:, :c])
    w, b = fit_ridge(syn[:, :c], syn[:, c:], alpha)
    ctx, target = real[:, :c], real[:, c:]
    scale = _mean_scale(ctx) if scaling == "mean" else np.ones((real.shape[0], 1))
    pred = ((ctx / scale) @ w + b) * scale
    return normalized_deviation(target, pred)


def _mean_scale(ctx: np.ndarray) -> np.ndarray:
    """``(N, 1)`` mean absolute context values (1 where a context is all zero)."""
    s = np.abs(ctx).mean(1, keepdims=True)
    return np.where(s > 0, s, 1.0)
