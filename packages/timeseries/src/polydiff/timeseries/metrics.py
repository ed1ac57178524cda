"""Probabilistic forecast metrics (numpy only), matching gluonts' ``Evaluator`` definitions.

Two CRPS estimates:

* :func:`crps_samples`: the exact CRPS of the empirical distribution of ``S`` samples, in the
  energy form ``E|X - y| - 1/2 E|X - X'|`` (Gneiting & Raftery, 2007, "Strictly Proper Scoring
  Rules, Prediction, and Estimation", eq. 21), with ``E|X - X'|`` from the sorted samples in
  ``O(S log S)``: ``2 / S^2 sum_i (2 i - S - 1) x_(i)``. ``fair=True`` divides by ``S (S - 1)``
  instead (the unbiased estimate of the CRPS of the distribution the samples come from).
* :func:`mean_weighted_quantile_loss`: gluonts' ``mean_wQuantileLoss``: for each level ``q``,
  the quantile loss ``2 sum |(y - x_q)(1{y <= x_q} - q)|`` summed over all series and steps,
  divided by ``sum |y|``, then averaged over the levels (0.1, ..., 0.9 by default). This
  approximates the CRPS normalised like ND and is the "CRPS" that TSDiff (Kollovieh et al., 2023)
  and most forecasting papers report. **The benchmark reports this number** (key ``"CRPS"`` of
  :func:`evaluate_forecasts`); the exact sample CRPS, normalised the same way, is reported
  beside it as ``"CRPS_samples"``.

Quantiles of samples follow gluonts' ``SampleForecast.quantile``: the sorted sample at index
``round((S - 1) q)``. Point metrics use the median (ND, MASE) or the sample mean (MSE, NRMSE).
MASE divides by the in-sample seasonal-naive MAE of the context (Hyndman & Koehler, 2006).
NaN targets are ignored everywhere (as gluonts' masked arrays do).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_QUANTILES", "crps_samples", "evaluate_forecasts", "evaluate_quantile_forecasts",
    "interval_coverage", "mase", "mean_weighted_quantile_loss", "quantile_loss",
    "sample_quantiles", "seasonal_error",
]

#: gluonts' default evaluation quantiles (used by TSDiff's evaluation)
DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def crps_samples(samples: np.ndarray, target: np.ndarray, *, fair: bool = False) -> np.ndarray:
    """CRPS of the sample distribution at each target point.

    ``samples``: ``(..., S, H)``; ``target``: ``(..., H)``. Returns ``(..., H)`` (NaN where the
    target is NaN). Exact for the empirical distribution (``fair=False``)."""
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=-2)
    y = np.asarray(target, dtype=np.float64)
    s = x.shape[-2]
    if s < 1 or (fair and s < 2):
        raise ValueError(f"need at least {2 if fair else 1} samples, got {s}")
    if x.shape[:-2] + x.shape[-1:] != y.shape:
        raise ValueError(f"samples {x.shape} do not match target {y.shape} (want (..., S, H))")
    abs_err = np.mean(np.abs(x - y[..., None, :]), axis=-2)
    w = (2 * np.arange(1, s + 1) - s - 1).astype(np.float64)
    spread = 2 * np.einsum("s,...sh->...h", w, x) / (s * (s - 1) if fair else s * s)
    return abs_err - 0.5 * spread


def sample_quantiles(samples: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles of samples ``(..., S, H)`` -> ``(..., Q, H)``, as gluonts' ``SampleForecast``
    (the sorted sample at index ``round((S - 1) q)``)."""
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=-2)
    idx = np.round((x.shape[-2] - 1) * np.asarray(levels, dtype=np.float64)).astype(int)
    return np.take(x, idx, axis=-2)


def quantile_loss(target: np.ndarray, forecast: np.ndarray, q: float) -> float:
    """gluonts' quantile loss ``2 sum |(x_q - y)(1{y <= x_q} - q)|`` over non-NaN targets."""
    y, f = np.asarray(target, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    loss = 2 * np.abs((f - y) * ((y <= f) - q))
    return float(np.sum(loss[np.isfinite(y)]))


def seasonal_error(context: np.ndarray, season: int) -> float:
    """Mean absolute seasonal difference ``mean |y[t] - y[t - m]|`` of the context (NaN pairs
    skipped; ``m`` falls back to 1 when it is not shorter than the context), as gluonts."""
    y = np.asarray(context, dtype=np.float64)
    m = season if season < len(y) else 1
    d = np.abs(y[m:] - y[:-m])
    d = d[np.isfinite(d)]
    return float(np.mean(d)) if d.size else float("nan")


def mase(target: np.ndarray, point: np.ndarray, context: np.ndarray, season: int) -> float:
    """Mean absolute scaled error: ``mean |y - point| / seasonal_error(context, season)``."""
    y, f = np.asarray(target, dtype=np.float64), np.asarray(point, dtype=np.float64)
    ok = np.isfinite(y)
    if not ok.any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(np.mean(np.abs(y[ok] - f[ok]))) / seasonal_error(context, season))


def interval_coverage(target: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of (non-NaN) targets inside ``[lower, upper]``."""
    y = np.asarray(target, dtype=np.float64)
    ok = np.isfinite(y)
    inside = (y >= np.asarray(lower)) & (y <= np.asarray(upper))
    return float(np.mean(inside[ok])) if ok.any() else float("nan")


def _mean(values: np.ndarray | Sequence[float]) -> float:
    """Mean over the non-NaN entries (``inf`` kept, as gluonts' aggregation); NaN if none."""
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[~np.isnan(a)]
    return float(np.mean(a)) if a.size else float("nan")


def _stack(arrays: Sequence[np.ndarray] | np.ndarray, name: str) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def mean_weighted_quantile_loss(
    targets: Sequence[np.ndarray] | np.ndarray, quantile_forecasts: Sequence[np.ndarray],
    levels: Sequence[float] = DEFAULT_QUANTILES,
) -> float:
    """gluonts' ``mean_wQuantileLoss`` (the "CRPS" of TSDiff's tables): ``targets`` are
    ``(H,)`` arrays, ``quantile_forecasts`` ``(Q, H)`` arrays at ``levels``."""
    ys, qs = _stack(targets, "targets"), _stack(quantile_forecasts, "quantile_forecasts")
    denom = sum(float(np.nansum(np.abs(y))) for y in ys)
    return float(np.mean([sum(quantile_loss(y, qf[j], q) for y, qf in zip(ys, qs, strict=True))
                          / denom for j, q in enumerate(levels)]))


def evaluate_quantile_forecasts(
    targets: Sequence[np.ndarray], quantile_forecasts: Sequence[np.ndarray],
    levels: Sequence[float], contexts: Sequence[np.ndarray], season: int, *,
    interval: float = 0.8, mean_forecasts: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Aggregate metrics of quantile forecasts ``(Q, H)`` (one per series) at ``levels``.

    Keys: ``CRPS`` (= ``mean_wQuantileLoss``), ``wQuantileLoss[q]`` per level, ``ND`` and
    ``MASE`` (median; need level 0.5), ``coverage_<interval%>`` (needs the levels
    ``(1 -+ interval) / 2``), ``MSE``/``RMSE``/``NRMSE`` (with ``mean_forecasts``),
    ``num_series``, ``num_points``. Aggregation as gluonts: sums over all points for the
    weighted losses and ND, means over series for MASE, MSE and coverage."""
    ys, qs = _stack(targets, "targets"), _stack(quantile_forecasts, "quantile_forecasts")
    ctx = _stack(contexts, "contexts")
    if not len(ys) == len(qs) == len(ctx):
        raise ValueError(f"{len(ys)} targets, {len(qs)} forecasts and {len(ctx)} contexts")
    levels = [float(q) for q in levels]
    for y, qf in zip(ys, qs, strict=True):
        if qf.shape != (len(levels), len(y)):
            raise ValueError(f"quantile forecast of shape {qf.shape}, want "
                             f"({len(levels)}, {len(y)})")
    denom = sum(float(np.nansum(np.abs(y))) for y in ys)
    out: dict[str, float] = {}
    wql = []
    for j, q in enumerate(levels):
        loss = sum(quantile_loss(y, qf[j], q) for y, qf in zip(ys, qs, strict=True))
        out[f"wQuantileLoss[{q}]"] = loss / denom
        wql.append(loss / denom)
    out["mean_wQuantileLoss"] = float(np.mean(wql))
    out["CRPS"] = out["mean_wQuantileLoss"]

    def _level(q: float) -> int | None:
        hits = [j for j, v in enumerate(levels) if abs(v - q) < 1e-9]
        return hits[0] if hits else None

    mid = _level(0.5)
    if mid is not None:
        abs_err = sum(float(np.nansum(np.abs(y - qf[mid]))) for y, qf in zip(ys, qs, strict=True))
        out["ND"] = abs_err / denom
        out["MASE"] = _mean([mase(y, qf[mid], c, season)
                             for y, qf, c in zip(ys, qs, ctx, strict=True)])
    lo, hi = _level((1 - interval) / 2), _level((1 + interval) / 2)
    if lo is not None and hi is not None:
        cov = [interval_coverage(y, qf[lo], qf[hi]) for y, qf in zip(ys, qs, strict=True)]
        out[f"coverage_{round(100 * interval)}"] = _mean(cov)
    if mean_forecasts is not None:
        means = _stack(mean_forecasts, "mean_forecasts")
        out["MSE"] = _mean([_mean((y - m) ** 2) for y, m in zip(ys, means, strict=True)])
        out["RMSE"] = float(np.sqrt(out["MSE"]))
        out["NRMSE"] = out["RMSE"] / _mean([_mean(np.abs(y)) for y in ys])
    out["num_series"] = float(len(ys))
    out["num_points"] = float(sum(int(np.isfinite(y).sum()) for y in ys))
    return out


def evaluate_forecasts(
    targets: Sequence[np.ndarray], samples: Sequence[np.ndarray], contexts: Sequence[np.ndarray],
    season: int, *, quantiles: Sequence[float] = DEFAULT_QUANTILES, interval: float = 0.8,
) -> dict[str, float]:
    """Aggregate metrics of sample forecasts ``(S, H)`` (one per series) against targets
    ``(H,)``, with each series' context for MASE. The keys of
    :func:`evaluate_quantile_forecasts` (quantiles taken from the samples as gluonts does; the
    interval's end levels are added if missing), plus ``CRPS_samples``: the exact sample CRPS
    summed over all points, divided by ``sum |y|``."""
    xs = _stack(samples, "samples")
    ys = _stack(targets, "targets")
    levels = [float(q) for q in quantiles]
    extra = [q for q in ((1 - interval) / 2, (1 + interval) / 2, 0.5)
             if all(abs(q - v) > 1e-9 for v in levels)]
    all_levels = levels + extra
    qfs = [sample_quantiles(x, all_levels) for x in xs]
    out = evaluate_quantile_forecasts(ys, [qf[:len(levels)] for qf in qfs], levels, contexts,
                                      season, interval=interval,
                                      mean_forecasts=[x.mean(axis=0) for x in xs])
    if extra:  # median and interval computed from the extra levels
        full = evaluate_quantile_forecasts(ys, qfs, all_levels, contexts, season,
                                           interval=interval)
        for key in ("ND", "MASE", f"coverage_{round(100 * interval)}"):
            out[key] = full[key]
    denom = sum(float(np.nansum(np.abs(y))) for y in ys)
    out["CRPS_samples"] = sum(float(np.nansum(crps_samples(x, y)))
                              for x, y in zip(xs, ys, strict=True)) / denom
    return out
