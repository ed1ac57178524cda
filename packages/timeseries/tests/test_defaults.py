"""The defaults table is the one source of TSDiff's settings per frequency: the README shows
it, the gluonts estimator and ``config_for`` read it (the app and the benchmark are checked
in the app's tests)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from polydiff.timeseries.data import UnsupportedFrequencyError
from polydiff.timeseries.tsdiff.defaults import (
    FREQUENCY_TABLE,
    PRESETS,
    REFINE_DEFAULTS,
    defaults_for,
    defaults_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(("freq", "horizon", "context", "lags"), [
    ("h", 24, 72, (24, 48, 168)),
    ("30min", 48, 96, (48, 96, 336)),
    ("15min", 96, 192, (96, 192, 672)),
    ("D", 14, 56, (7, 14, 28, 364)),
    ("MS", 12, 36, (12, 24)),
    ("Y", 4, 12, ()),
])
def test_rows_resolve_to_steps(freq, horizon, context, lags):
    d = defaults_for(freq)
    assert (d.prediction_length, d.context_length, d.lags) == (horizon, context, lags)
    cfg = d.config()
    assert (cfg.prediction_length, cfg.context_length, cfg.lags) == (horizon, context, lags)
    assert cfg.hidden_dim == PRESETS["small"]["hidden_dim"]
    assert d.sampler == "ddim" and d.sampling_steps == 20 and d.num_samples == 100
    # another horizon keeps the table's context unless it needs two horizons
    assert d.config(prediction_length=3 * context).context_length == 6 * context


def test_every_row_is_complete_and_unknown_frequencies_fail():
    for key, row in FREQUENCY_TABLE.items():
        assert row.train_steps > 0 and row.batch_size > 0 and row.scale > 0, key
        assert row.horizon_seasons > 0 and row.context_seasons > 0, key
    with pytest.raises(UnsupportedFrequencyError):
        defaults_for("fortnightly")
    assert REFINE_DEFAULTS.method == "langevin" and REFINE_DEFAULTS.keep_spread


def test_readme_shows_the_table():
    text = README.read_text()
    assert defaults_table() in text, "regenerate the README table from defaults_table()"


def test_estimator_and_config_for_read_the_table():
    pytest.importorskip("gluonts")
    pytest.importorskip("lightning")
    from polydiff.timeseries.tsdiff.gluonts import TSDiffEstimator, config_for

    for freq in ("h", "30min", "D", "M"):
        d = defaults_for(freq)
        assert config_for(freq) == d.config()
        est = TSDiffEstimator(freq)
        assert est.config == d.config() and est.prediction_length == d.prediction_length
        assert est.train_steps == d.train_steps and est.batch_size == d.batch_size
        assert est.trainer_kwargs["max_epochs"] == math.ceil(d.train_steps / 50)
        assert est.lr == d.lr and est.num_samples == d.num_samples
        kw = est.forecast_kwargs
        assert (kw["guidance"], kw["scale"], kw["sampler"], kw["steps"]) == (
            d.guidance, d.scale, d.sampler, d.sampling_steps)
    # explicit settings win over the table
    est = TSDiffEstimator("h", 12, context_length=30, lags=(24,), scale=7.0, sampler="ddpm")
    assert (est.config.context_length, est.config.lags) == (30, (24,))
    assert est.forecast_kwargs["scale"] == 7.0 and est.forecast_kwargs["steps"] is None
