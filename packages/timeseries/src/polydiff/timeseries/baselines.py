"""Probabilistic forecasting baselines (numpy only): seasonal naive and a ridge linear model.

Both return either ``num_samples`` sample paths ``(S, H)`` or the forecast quantiles
``(Q, H)`` at the levels ``quantiles``, so CRPS-type metrics apply to them directly. Contexts may
contain NaN (missing values); they are skipped when estimating residuals and filled with the
last observation when used as inputs.

* :func:`seasonal_naive`: repeat the last observed season (Hyndman & Athanasopoulos,
  *Forecasting: Principles and Practice*, 3rd ed., 2021, sec. 5.2), with the empirical
  distribution of the in-sample seasonal differences ``y[t] - y[t - m]`` as forecast error,
  widened by ``sqrt(k)`` in the ``k``-th season ahead (the seasonal random walk's error after
  ``k`` seasons is a sum of ``k`` independent seasonal differences; sec. 5.5, Table 5.2).
* :class:`LinearForecaster` / :func:`linear_forecast`: the "Linear" baseline of TSDiff
  (Kollovieh et al., 2023, "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for
  Probabilistic Time Series Forecasting"): a direct multi-output ridge regression from the last
  ``W`` mean-scaled values to the whole horizon, here with seasonal-naive blocks at extra
  ``lags`` as features, fit per series or globally, with Gaussian errors whose standard
  deviation per horizon step is estimated from the training residuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_STD_NORMAL = NormalDist()

__all__ = ["LinearForecaster", "linear_forecast", "seasonal_naive", "seasonal_naive_point"]


def _as_context(context: np.ndarray | Sequence[float]) -> np.ndarray:
    y = np.asarray(context, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"context must be 1-D, got shape {y.shape}")
    if not np.isfinite(y).any():
        raise ValueError("context has no observed (finite) value")
    return np.where(np.isfinite(y), y, np.nan)


def _ffill(y: np.ndarray) -> np.ndarray:
    """Fill NaN with the last observation (leading NaN with the first observation)."""
    ok = np.isfinite(y)
    idx = np.where(ok, np.arange(len(y)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = y[idx]
    first = y[np.argmax(ok)]
    return np.where(np.isfinite(out), out, first)


def _normal_ppf(q: np.ndarray) -> np.ndarray:
    """Standard normal quantile function (``statistics.NormalDist``, no scipy needed)."""
    return np.array([_STD_NORMAL.inv_cdf(float(v)) for v in np.ravel(q)]).reshape(np.shape(q))


def seasonal_naive_point(context: np.ndarray | Sequence[float], horizon: int,
                         season: int) -> np.ndarray:
    """Point forecast ``y[T + h] = y[T + h - m (floor(h / m) + 1)]`` (0-based ``h``): the last
    observed season repeated. A missing value is taken from an earlier season, else the last
    observation. ``season`` longer than the context falls back to 1 (naive)."""
    y = _as_context(context)
    if season < 1 or horizon < 1:
        raise ValueError(f"season and horizon must be >= 1, got {season}, {horizon}")
    m = season if season < len(y) else 1
    filled = y.copy()
    for t in range(m, len(y)):  # seasonal fill: a gap takes the value one season earlier
        if np.isnan(filled[t]):
            filled[t] = filled[t - m]
    filled = _ffill(filled)
    last = filled[len(y) - m:]
    return last[np.arange(horizon) % m]


def _quantile_levels(quantiles: Sequence[float]) -> np.ndarray:
    q = np.asarray(quantiles, dtype=np.float64).ravel()
    if q.size == 0 or np.any((q <= 0) | (q >= 1)):
        raise ValueError(f"quantile levels must lie in (0, 1), got {list(q)}")
    return q


def seasonal_naive(
    context: np.ndarray | Sequence[float], horizon: int, season: int, *,
    num_samples: int = 100, quantiles: Sequence[float] | None = None, seed: int | None = 0,
) -> np.ndarray:
    """Probabilistic seasonal naive forecast.

    The error distribution is the empirical distribution of the in-sample seasonal differences
    ``e_t = y[t] - y[t - m]`` (NaN skipped); the ``k``-th season ahead (``k = floor(h / m) + 1``)
    scales it by ``sqrt(k)``. Returns ``quantiles`` -> ``(Q, H)`` array ``point + sqrt(k) Q_e(q)``,
    otherwise ``(num_samples, H)`` samples ``point + sqrt(k) e*`` with ``e*`` drawn from the
    residuals (independently per step). Without any residual the spread is zero."""
    y = _as_context(context)
    point = seasonal_naive_point(y, horizon, season)
    m = season if season < len(y) else 1
    resid = y[m:] - y[:-m]
    resid = resid[np.isfinite(resid)]
    if resid.size == 0:
        resid = np.zeros(1)
    k = np.sqrt(np.arange(horizon) // m + 1.0)
    if quantiles is not None:
        q = _quantile_levels(quantiles)
        return point + k * np.quantile(resid, q)[:, None]
    rng = np.random.default_rng(seed)
    draws = resid[rng.integers(resid.size, size=(int(num_samples), horizon))]
    return point + k * draws


def _lag_block(filled: np.ndarray, t: int, lag: int, horizon: int) -> np.ndarray:
    """Seasonal-naive forecast with season ``lag`` made at origin ``t``."""
    return filled[t - lag + np.arange(horizon) % lag]


@dataclass
class LinearForecaster:
    """Direct multi-output ridge regression (TSDiff's "Linear" baseline, Kollovieh et al.,
    2023), with Gaussian predictive distributions.

    Features at origin ``t``: the last ``window`` values and, per lag ``L`` in ``lags``, the
    seasonal-naive forecast with season ``L`` (``H`` values), all divided by the mean absolute
    value of the window (mean scaling). Targets: the next ``horizon`` values, same scaling.
    ``coef`` maps centred features to centred targets (closed-form ridge, unpenalised
    intercept); ``sigma[h]`` is the residual standard deviation of step ``h`` (scaled units)."""

    horizon: int
    window: int
    lags: tuple[int, ...]
    alpha: float
    coef: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    sigma: np.ndarray

    @staticmethod
    def _features(filled: np.ndarray, t: int, window: int, lags: Sequence[int],
                  horizon: int) -> tuple[np.ndarray, float]:
        past = filled[t - window:t]
        scale = float(np.mean(np.abs(past)))
        scale = scale if scale > 1e-10 else 1.0
        parts = [past] + [_lag_block(filled, t, lag, horizon) for lag in lags]
        return np.concatenate(parts) / scale, scale

    @staticmethod
    def _design(y: np.ndarray, window: int, lags: Sequence[int], horizon: int,
                first: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled features and targets at every origin of ``y`` whose inputs and target
        window are all observed (vectorised :meth:`_features`)."""
        origins = np.arange(first, len(y) - horizon + 1)
        if origins.size == 0:
            return np.zeros((0, window + len(lags) * horizon)), np.zeros((0, horizon))
        ok, filled = np.isfinite(y), _ffill(y)
        idx = [origins[:, None] + np.arange(-window, 0)]
        idx += [origins[:, None] - lag + np.arange(horizon) % lag for lag in lags]
        cols = np.concatenate(idx, axis=1)
        tgt = origins[:, None] + np.arange(horizon)
        keep = ok[cols].all(1) & ok[tgt].all(1)
        x, target = filled[cols[keep]], y[tgt[keep]]
        scale = np.mean(np.abs(x[:, :window]), axis=1, keepdims=True)
        scale = np.where(scale > 1e-10, scale, 1.0)
        return x / scale, target / scale

    @classmethod
    def fit(cls, series: Sequence[np.ndarray | Sequence[float]], horizon: int, window: int,
            lags: Sequence[int] = (), alpha: float = 1.0, max_train: int = 10_000,
            seed: int | None = 0) -> LinearForecaster:
        """Fit on every origin ``t`` (with ``t >= max(window, lags)`` and ``t + horizon <= T``)
        of every series whose inputs and target window are all observed (a window spanning a
        gap would teach the model the gap filling); at most ``max_train`` origins (drawn at
        random with ``seed``). Lags longer than every series are dropped."""
        ys = [_as_context(s) for s in series]
        if not ys:
            raise ValueError("no series to fit the linear baseline on")
        if horizon < 1 or window < 1:
            raise ValueError(f"horizon and window must be >= 1, got {horizon}, {window}")
        longest = max(len(y) for y in ys)
        lags = tuple(sorted({int(lag) for lag in lags if 1 <= lag <= longest - horizon}))
        first = max((window, *lags))
        parts = [cls._design(y, window, lags, horizon, first) for y in ys]
        X = np.concatenate([p[0] for p in parts])
        Y = np.concatenate([p[1] for p in parts])
        if len(X) < 2:
            raise ValueError(f"too little data for the linear baseline: need at least "
                             f"{first + horizon + 1} observed steps (window {window}, "
                             f"horizon {horizon}, lags {list(lags)})")
        if len(X) > max_train:
            pick = np.sort(np.random.default_rng(seed).choice(len(X), max_train, replace=False))
            X, Y = X[pick], Y[pick]
        x_mean, y_mean = X.mean(0), Y.mean(0)
        Xc, Yc = X - x_mean, Y - y_mean
        gram = Xc.T @ Xc + alpha * np.eye(X.shape[1])
        coef = np.linalg.solve(gram, Xc.T @ Yc)
        resid = Yc - Xc @ coef
        dof = max(len(X) - min(X.shape[1], len(X) - 1) - 1, 1)
        sigma = np.sqrt(np.sum(resid**2, axis=0) / dof)
        return cls(horizon, window, lags, float(alpha), coef, x_mean, y_mean, sigma)

    def predict_mean(self, context: np.ndarray | Sequence[float]) -> tuple[np.ndarray, float]:
        """(point forecast ``(H,)``, scale) from a context (shorter contexts are padded at the
        front with their first observation)."""
        y = _ffill(_as_context(context))
        need = max((self.window, *self.lags))
        if len(y) < need:
            y = np.concatenate([np.full(need - len(y), y[0]), y])
        x, scale = self._features(y, len(y), self.window, self.lags, self.horizon)
        return ((x - self.x_mean) @ self.coef + self.y_mean) * scale, scale

    def predict(self, context: np.ndarray | Sequence[float], *, num_samples: int = 100,
                quantiles: Sequence[float] | None = None, seed: int | None = 0) -> np.ndarray:
        """Samples ``(num_samples, H)`` or quantiles ``(Q, H)`` of ``N(mean, (sigma scale)^2)``."""
        mean, scale = self.predict_mean(context)
        std = self.sigma * scale
        if quantiles is not None:
            return mean + std * _normal_ppf(_quantile_levels(quantiles))[:, None]
        rng = np.random.default_rng(seed)
        return mean + std * rng.standard_normal((int(num_samples), self.horizon))


def linear_forecast(
    context: np.ndarray | Sequence[float], horizon: int, *, window: int | None = None,
    lags: Sequence[int] = (), alpha: float = 1.0, train: Sequence[np.ndarray] | None = None,
    num_samples: int = 100, quantiles: Sequence[float] | None = None, seed: int | None = 0,
) -> np.ndarray:
    """Fit :class:`LinearForecaster` on ``train`` (a list of series; default: the context
    itself, i.e. per-series) and forecast from ``context``. ``window`` defaults to
    ``min(4 horizon, len(context) // 2)`` (TSDiff uses 4x the prediction length)."""
    y = _as_context(context)
    if window is None:
        window = max(1, min(4 * horizon, (len(y) - horizon) // 2))
    model = LinearForecaster.fit([y] if train is None else train, horizon, window, lags, alpha,
                                 seed=seed)
    return model.predict(y, num_samples=num_samples, quantiles=quantiles, seed=seed)
