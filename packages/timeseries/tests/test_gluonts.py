"""The gluonts adapter: TSDiffEstimator.train -> TSDiffPredictor -> gluonts evaluation;
serialize/deserialize; refinement of any gluonts forecasts; no side effects."""

import json
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("gluonts")
pytest.importorskip("lightning")

from gluonts.dataset.common import ListDataset  # noqa: E402
from gluonts.evaluation import Evaluator, make_evaluation_predictions  # noqa: E402
from gluonts.model.forecast import QuantileForecast, SampleForecast  # noqa: E402
from gluonts.model.predictor import Predictor  # noqa: E402
from gluonts.model.seasonal_naive import SeasonalNaivePredictor  # noqa: E402

from polydiff.timeseries.tsdiff.gluonts import (  # noqa: E402
    RefinedPredictor,
    TSDiffEstimator,
    TSDiffPredictor,
    config_for,
    make_predictor,
)
from polydiff.timeseries.tsdiff.model import TSDiffModel  # noqa: E402

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
    assert cfg.lags == (24, 48, 168) and cfg.context_length == 72 and cfg.hidden_dim == 32
    assert config_for("30min", 48, preset="tiny").lags == (48, 96, 336)
    with pytest.raises(ValueError, match="preset"):
        config_for("h", 24, preset="huge")


def _estimator(**kw):
    return TSDiffEstimator("h", H, context_length=24, lags=(12,), preset="tiny", batch_size=16,
                           num_batches_per_epoch=3, num_samples=8, sampling_steps=5,
                           train_steps=3, trainer_kwargs={"accelerator": "cpu"}, **kw)


def test_estimator_trains_and_gluonts_evaluates(tmp_path, monkeypatch, capsys, caplog):
    ds = sines()
    monkeypatch.chdir(tmp_path)  # the estimator must not write into the working directory
    est = _estimator()
    assert est.trainer_kwargs["max_epochs"] == 1
    predictor = est.train(ds)
    assert isinstance(predictor, TSDiffPredictor)
    assert os.listdir(tmp_path) == []  # no ./checkpoints, no lightning_logs
    out, err = capsys.readouterr()
    logged = " ".join(r.getMessage() for r in caplog.records)
    for text in (out, err, logged):
        assert "Tip" not in text and "litmodels" not in text and "GPU available" not in text
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


def test_serialize_round_trip(tmp_path):
    model = TSDiffModel(config_for("h", H, 24, (12,), "tiny"))
    pred = make_predictor(model, num_samples=4, sampler="ddim", steps=3, seed=3, scale=1.5)
    pred.serialize(tmp_path)
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["config.json", "gluonts-config.json", "model.safetensors",
                     "tsdiff-predictor.json"]  # no pickles
    assert json.loads((tmp_path / "tsdiff-predictor.json").read_text())["scale"] == 1.5
    for loaded in (TSDiffPredictor.deserialize(tmp_path), Predictor.deserialize(tmp_path)):
        assert isinstance(loaded, TSDiffPredictor)
        assert loaded.forecast_settings == pred.forecast_settings
        assert loaded.model.config == model.config
        a, b = list(pred.predict(sines(2))), list(loaded.predict(sines(2)))
        for fa, fb in zip(a, b, strict=True):
            np.testing.assert_array_equal(fa.samples, fb.samples)
            assert fa.start_date == fb.start_date


def _spread(samples: np.ndarray) -> float:
    q = np.quantile(samples, [0.1, 0.9], axis=0)
    return float(np.mean(q[1] - q[0]))


def test_refine_keeps_the_forecast_type_and_spread():
    model = TSDiffModel(config_for("h", H, 24, (12,), "tiny"))
    pred = make_predictor(model, num_samples=4, sampler="ddim", steps=3)
    ds = sines(3)
    rng = np.random.default_rng(0)
    start = next(iter(ds))["start"] + 120
    samples = [5 + rng.normal(size=(64, H)) for _ in range(3)]
    base = [SampleForecast(s, start, item_id=f"s{k}") for k, s in enumerate(samples)]
    refined = pred.refine(base, ds)
    for b, r in zip(base, refined, strict=True):
        assert isinstance(r, SampleForecast) and r.samples.shape == (64, H)
        assert r.item_id == b.item_id and r.start_date == b.start_date
        assert not np.allclose(r.samples, b.samples)
        assert 0.8 < _spread(r.samples) / _spread(b.samples) < 1.25
    # (that maximum-likelihood refinement would collapse it is shown on the exact Gaussian
    # of test_refine.py, where the model's density is known)

    keys = ["0.1", "0.5", "0.9", "mean"]
    arrays = [np.stack([np.full(H, v) for v in (4.0, 5.0, 6.0, 5.0)]) for _ in range(3)]
    qf = [QuantileForecast(a, start, keys, item_id=f"s{k}") for k, a in enumerate(arrays)]
    rq = pred.refine(qf, ds)
    for r in rq:
        assert isinstance(r, QuantileForecast) and r.forecast_keys == keys
        q = np.stack([r.quantile(k) for k in ("0.1", "0.5", "0.9")])
        assert (np.diff(q, axis=0) >= 0).all()  # still monotone
    with pytest.raises(ValueError, match="dataset entries"):
        pred.refine(base, list(ds)[:2])


def test_refined_predictor_wraps_any_gluonts_predictor():
    model = TSDiffModel(config_for("h", H, 24, (12,), "tiny"))
    sn = SeasonalNaivePredictor(prediction_length=H, season_length=12)
    ds = sines(2)
    base = list(sn.predict(ds))
    refined = list(RefinedPredictor(sn, model, steps=5).predict(ds))
    assert len(refined) == 2
    for b, r in zip(base, refined, strict=True):
        assert type(r) is type(b) and r.samples.shape == b.samples.shape
        assert r.start_date == b.start_date and np.isfinite(r.samples).all()
    with pytest.raises(ValueError, match="forecasts 6 steps"):
        RefinedPredictor(SeasonalNaivePredictor(prediction_length=3, season_length=12), model)
