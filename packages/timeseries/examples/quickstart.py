"""Train a tiny TSDiff on hourly pedestrian counts and compare its self-guided forecast of the
last day with seasonal naive (CRPS, MASE, 80% coverage)."""

import sys
from pathlib import Path

import numpy as np

from polydiff.timeseries.baselines import seasonal_naive
from polydiff.timeseries.data import load_offline
from polydiff.timeseries.metrics import evaluate_forecasts
from polydiff.timeseries.tsdiff import TSDiffConfig, TSDiffForecaster, TSDiffModel, train_tsdiff

work = Path(sys.argv[1] if len(sys.argv) > 1 else "tsdiff-quickstart")
data = load_offline("pedestrian")  # 4 sensors, hourly, NaN where a sensor was down
series = [s.target[-24 * 60:] for s in data.series]  # the last 60 days of each sensor
history, future = [s[:-24] for s in series], np.stack([s[-24:] for s in series])

config = TSDiffConfig.tiny(context_length=72, prediction_length=24, lags=(24,))
model = TSDiffModel(config)
train_tsdiff(model, history, work / "run", steps=300, batch_size=32, progress=False)

tsdiff = TSDiffForecaster(model, num_samples=32, guidance="quantile", scale=4.0,
                          sampler="ddim", steps=20).predict(history, seed=0)  # (4, 32, 24)
naive = np.stack([seasonal_naive(h, 24, season=24, num_samples=32) for h in history])
for name, samples in (("tsdiff", tsdiff), ("seasonal naive", naive)):
    m = evaluate_forecasts(future, samples, history, season=24)
    print(f"{name:>15}: CRPS {m['CRPS']:.3f}  MASE {m['MASE']:.3f}  "
          f"coverage80 {m['coverage_80']:.2f}")
