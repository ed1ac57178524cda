"""The gluonts adapter: TSDiffEstimator.train -> PyTorchPredictor -> gluonts evaluation."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("gluonts")
pytest.importorskip("lightning")

from gluonts.dataset.common import ListDataset  # noqa: E402
from gluonts.evaluation import Evaluator, make_evaluation_predictions  # noqa: E402
from gluonts.model.forecast import SampleForecast  # noqa: E402

from polydiff.timeseries.tsdiff.gluonts import (  # noqa: E402
    TSDiffEstimator,
    config_for,
    make_predictor,
)
from polydiff.timeseries.tsdiff.model import HOURLY_LAGS, TSDiffModel  # noqa: E402

H = 6


def sines(n_series: int = 3, length: int = 120) -> ListDataset:
    rng = np.random.default_rng(0)
    entries = []
    for k in range(n_series):
        t = np.arange(length)
        y = 5 + np.sin(2 * np.pi * t / 12 + k) + 0.05 * rng.normal(size=length)
        if k == 1:
            y[40:43] = np.nan  # gaps are marked unobserved, not fed as values
        entries.append({"start": pd.Period("2024-01-01 00:00", freq="h"), "target": y,
                        "item_id": f"s{k}"})
    return ListDataset(entries, freq="h")


def test_config_for_defaults():
    cfg = config_for("h", 24)
    assert cfg.lags == HOURLY_LAGS and cfg.context_length == 96 and cfg.hidden_dim == 32
    assert config_for("30min", 48, preset="tiny").lags == (48, 96, 336)
    with pytest.raises(ValueError, match="preset"):
        config_for("h", 24, preset="huge")


def test_estimator_trains_and_gluonts_evaluates(tmp_path):
    ds = sines()
    est = TSDiffEstimator("h", H, context_length=24, lags=(12,), preset="tiny", batch_size=16,
                          num_batches_per_epoch=3, num_samples=8, sampler="ddim",
                          sampling_steps=5,
                          trainer_kwargs={"max_epochs": 1, "accelerator": "cpu",
                                          "default_root_dir": str(tmp_path)})
    predictor = est.train(ds)
    assert predictor.prediction_length == H
    forecast_it, ts_it = make_evaluation_predictions(ds, predictor=predictor, num_samples=8)
    forecasts, tss = list(forecast_it), list(ts_it)
    assert len(forecasts) == 3
    for f, entry in zip(forecasts, ds, strict=True):
        assert isinstance(f, SampleForecast)
        assert f.samples.shape == (8, H) and np.isfinite(f.samples).all()
        # the evaluation split forecasts the last H steps of each series
        assert f.start_date == entry["start"] + (len(entry["target"]) - H)
        assert f.item_id == entry["item_id"]
    agg, _ = Evaluator(num_workers=0)(tss, forecasts)
    for key in ("mean_wQuantileLoss", "MASE", "ND"):
        assert np.isfinite(agg[key]), key


def test_make_predictor_wraps_a_trained_model():
    model = TSDiffModel(config_for("h", H, 24, (12,), "tiny"))
    pred = make_predictor(model, num_samples=4, sampler="ddim", steps=3, seed=1)
    ds = sines(2)
    fs = list(pred.predict(ds))
    assert [f.samples.shape for f in fs] == [(4, H), (4, H)]
    assert fs[0].start_date == pd.Period("2024-01-01 00:00", freq="h") + 120
    again = list(make_predictor(model, num_samples=4, sampler="ddim", steps=3,
                                seed=1).predict(ds))
    np.testing.assert_array_equal(fs[0].samples, again[0].samples)  # seeded
