"""Metrics against gluonts' Evaluator (reference implementation) and closed forms."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from polydiff.timeseries.metrics import (
    DEFAULT_QUANTILES,
    crps_samples,
    evaluate_forecasts,
    evaluate_quantile_forecasts,
    mase,
    mean_weighted_quantile_loss,
    sample_quantiles,
    seasonal_error,
)

SEASON = 6
pytestmark = pytest.mark.filterwarnings("ignore:Using `json`-module:UserWarning")


def _gaussian_crps(mu: np.ndarray, sigma: float, y: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of N(mu, sigma^2) (Gneiting & Raftery, 2007, eq. 5 / Gneiting et al.
    2005): sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]."""
    z = (y - mu) / sigma
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def _problem(seed: int = 0, n: int = 5, t: int = 60, h: int = 12, s: int = 101):
    """Series with a seasonal pattern, a few NaN targets, biased noisy sample forecasts."""
    rng = np.random.default_rng(seed)
    targets, contexts, samples = [], [], []
    for i in range(n):
        signal = 10 + 3 * np.sin(np.arange(t + h) * 2 * np.pi / SEASON) + i
        y = signal + rng.normal(size=t + h)
        if i == 2:
            y[5], y[t + 3] = np.nan, np.nan
        mu = signal[t:] + 0.4
        samples.append(mu + rng.normal(scale=1.3, size=(s, h)))
        targets.append(y[t:])
        contexts.append(y[:t])
    return targets, contexts, samples


def _gluonts_metrics(targets, contexts, forecasts) -> dict:
    from gluonts.evaluation import Evaluator

    start = pd.Period("2021-03-01", freq="h")
    tss = []
    for y, c in zip(targets, contexts, strict=True):
        full = np.concatenate([c, y])
        tss.append(pd.Series(full, index=pd.period_range(start, periods=len(full), freq="h")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg, _ = Evaluator(seasonality=SEASON, num_workers=0)(
            tss, forecasts(start + len(contexts[0])))
    return agg


def test_sample_metrics_match_gluonts_evaluator():
    from gluonts.model.forecast import SampleForecast

    targets, contexts, samples = _problem()
    ref = _gluonts_metrics(targets, contexts, lambda st: [
        SampleForecast(x, start_date=st, item_id=str(i)) for i, x in enumerate(samples)])
    ours = evaluate_forecasts(targets, samples, contexts, SEASON)
    for key in ["mean_wQuantileLoss", "ND", "MASE", "MSE", "RMSE", "NRMSE",
                *(f"wQuantileLoss[{q}]" for q in DEFAULT_QUANTILES)]:
        assert ours[key] == pytest.approx(ref[key], rel=1e-10), key
    assert ours["CRPS"] == ours["mean_wQuantileLoss"]
    # central 80% interval = P(y <= q90) - P(y <= q10) without ties
    assert ours["coverage_80"] == pytest.approx(ref["Coverage[0.9]"] - ref["Coverage[0.1]"])
    assert 0.3 < ours["coverage_80"] < 1.0  # a non-trivial case


def test_quantile_metrics_match_gluonts_evaluator():
    from gluonts.model.forecast import QuantileForecast

    targets, contexts, samples = _problem(seed=1)
    levels = [0.1, 0.5, 0.9]
    qfs = [sample_quantiles(x, levels) + 0.05 * np.arange(3)[:, None] for x in samples]
    ref = _gluonts_metrics(targets, contexts, lambda st: [
        QuantileForecast(qf, start_date=st, forecast_keys=[str(q) for q in levels])
        for qf in qfs])
    ours = evaluate_quantile_forecasts(targets, qfs, levels, contexts, SEASON)
    for key in ["ND", "MASE", "wQuantileLoss[0.1]", "wQuantileLoss[0.5]", "wQuantileLoss[0.9]"]:
        assert ours[key] == pytest.approx(ref[key], rel=1e-10), key
    # gluonts averages over its default nine levels, interpolating the missing ones; compare
    # our mean over the three given levels with the same three of gluonts
    three = np.mean([ref[f"wQuantileLoss[{q}]"] for q in levels])
    assert ours["mean_wQuantileLoss"] == pytest.approx(three, rel=1e-10)
    assert mean_weighted_quantile_loss(targets, qfs, levels) == pytest.approx(three, rel=1e-10)


def test_sample_quantiles_follow_gluonts_rule():
    from gluonts.model.forecast import SampleForecast

    x = np.random.default_rng(2).normal(size=(37, 4))
    fc = SampleForecast(x, start_date=pd.Period("2020-01-01", freq="D"))
    ours = sample_quantiles(x, [0.05, 0.5, 0.93])
    for j, q in enumerate([0.05, 0.5, 0.93]):
        np.testing.assert_array_equal(ours[j], fc.quantile(q))


def test_crps_sorted_formula_is_exact_energy_form():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 25, 7)), rng.normal(size=(3, 7))
    brute = (np.abs(x - y[:, None]).mean(1)
             - 0.5 * np.abs(x[:, :, None] - x[:, None, :]).mean((1, 2)))
    np.testing.assert_allclose(crps_samples(x, y), brute, rtol=1e-12, atol=1e-12)
    fair = (np.abs(x - y[:, None]).mean(1)
            - 0.5 * np.abs(x[:, :, None] - x[:, None, :]).sum((1, 2)) / (25 * 24))
    np.testing.assert_allclose(crps_samples(x, y, fair=True), fair, rtol=1e-12, atol=1e-12)


def test_crps_of_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(4)
    mu, sigma = np.array([0.0, 1.0, -2.0, 5.0]), 1.7
    y = np.array([0.3, -1.5, -2.0, 9.0])
    x = mu + sigma * rng.standard_normal((20000, 4))
    exact = _gaussian_crps(mu, sigma, y)
    np.testing.assert_allclose(crps_samples(x, y), exact, rtol=0.02)
    np.testing.assert_allclose(crps_samples(x, y, fair=True), exact, rtol=0.02)
    # the weighted quantile loss over many levels approximates the CRPS (2 * integral of QL)
    levels = np.linspace(0.01, 0.99, 99)
    qf = mu + sigma * np.quantile(rng.standard_normal(200000), levels)[:, None]
    wql = mean_weighted_quantile_loss([y], [qf], levels)
    assert wql == pytest.approx(exact.sum() / np.abs(y).sum(), rel=0.03)


def test_perfect_forecast_scores_zero():
    targets, contexts, _ = _problem(seed=5)
    perfect = [np.repeat(np.nan_to_num(y)[None], 50, axis=0) for y in targets]
    out = evaluate_forecasts(targets, perfect, contexts, SEASON)
    for key in ("CRPS", "CRPS_samples", "ND", "MASE", "MSE"):
        assert out[key] == pytest.approx(0.0, abs=1e-12), key
    assert out["coverage_80"] == 1.0
    assert np.allclose(crps_samples(perfect[0], np.nan_to_num(targets[0])), 0.0)


def test_calibrated_gaussian_coverage_is_80_percent():
    rng = np.random.default_rng(6)
    n, h, s = 300, 24, 500
    mu = rng.normal(10, 2, size=(n, h))
    targets = list(mu + rng.standard_normal((n, h)))
    samples = [m + rng.standard_normal((s, h)) for m in mu]
    contexts = [rng.normal(10, 2, size=48) for _ in range(n)]
    out = evaluate_forecasts(targets, samples, contexts, season=24)
    # gluonts' quantiles are order statistics 51 and 450 of 500: expected coverage 399 / 501
    assert out["coverage_80"] == pytest.approx(0.8, abs=0.02)
    # a forecast that is too narrow covers less and scores worse
    narrow = [m + 0.3 * rng.standard_normal((s, h)) for m in mu]
    bad = evaluate_forecasts(targets, narrow, contexts, season=24)
    assert bad["coverage_80"] < 0.4 and bad["CRPS"] > out["CRPS"]


def test_mase_and_seasonal_error():
    ctx = np.array([1.0, 2.0, 4.0, 1.0, 2.0, 5.0, np.nan, 2.0])
    # y[t] - y[t - 3]: 0, 0, 1, (NaN: skipped), 0
    assert seasonal_error(ctx, 3) == pytest.approx(0.25)
    assert seasonal_error(ctx[:3], 3) == pytest.approx(1.5)  # m >= len -> m = 1
    assert mase([3.0, 5.0], [2.0, 5.0], ctx, 3) == pytest.approx(0.5 / 0.25)
    assert np.isnan(mase([np.nan], [1.0], ctx, 3))


def test_shape_errors_are_one_line():
    with pytest.raises(ValueError, match="do not match"):
        crps_samples(np.zeros((10, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="quantile forecast of shape"):
        evaluate_quantile_forecasts([np.zeros(4)], [np.zeros((2, 4))], [0.1, 0.5, 0.9],
                                    [np.zeros(10)], 2)
