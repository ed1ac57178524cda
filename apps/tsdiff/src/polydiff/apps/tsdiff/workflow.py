"""The pieces the ``tsdiff`` verbs, the tour demo and the benchmark share.

* data: :func:`load_data` (an offline dataset name, a gluonts benchmark name or a CSV/parquet
  file) and :func:`default_horizon`;
* models: :func:`make_config` (presets ``tiny``, ``small``, ``paper`` for any frequency),
  :func:`train_model`, :func:`load_model`, :func:`model_meta`;
* forecasts of held-out windows: :func:`tsdiff_samples`, :func:`seasonal_naive_samples`,
  :func:`linear_samples`, :func:`refine_samples` and :func:`score`;
* output: :func:`quantile_frame` (long table of forecast quantiles) and :func:`fan_charts`.

TSDiff is Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding Diffusion Models
for Probabilistic Time Series Forecasting"; the model, guidance and refinement live in
:mod:`polydiff.timeseries.tsdiff`, this module only wires them to files and baselines.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polydiff.core.cli import CLIError, atomic_write
from polydiff.timeseries.tsdiff.defaults import PRESETS as _PRESET_SIZES
from polydiff.timeseries.tsdiff.defaults import REFINE_DEFAULTS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from polydiff.timeseries.data import ForecastWindow, TimeSeriesDataset
    from polydiff.timeseries.tsdiff.model import TSDiffConfig, TSDiffModel

__all__ = ["PRESETS", "META_NAME", "QUANTILES", "default_horizon", "load_data", "make_config",
           "train_model", "load_model", "model_meta", "tsdiff_samples",
           "seasonal_naive_samples", "gluonts_seasonal_naive_samples", "linear_samples",
           "refine_samples", "score",
           "quantile_frame", "fan_charts", "windows_for", "stdout_to_stderr"]

PRESETS = tuple(_PRESET_SIZES)
META_NAME = "tsdiff.json"
QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """The engine echoes training log lines to stdout; keep stdout for results (``--json``)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# ----------------------------------------------------------------------------- data
def load_data(spec: str, *, freq: str | None = None, layout: str = "long",
              split: str = "train", id_col: str | None = None, time_col: str | None = None,
              target_col: str | None = None) -> TimeSeriesDataset:
    """A dataset from ``spec``: an offline name (``pedestrian``, ``vic_elec``,
    ``aus_livestock``, ``warsaw_air``), a gluonts benchmark name (downloaded or cached;
    ``split`` picks ``train`` or ``test``), or a CSV / parquet file: a long table whose
    columns are ``id_col``, ``time_col``, ``target_col`` (default: ``item_id, timestamp,
    target`` or ``unique_id, ds, y``, whichever the table has; no id column: one series), or
    ``layout="wide"`` (a time column and one column per series)."""
    from polydiff.timeseries.data import (
        GLUONTS_DATASETS,
        OFFLINE_DATASETS,
        DataError,
        load_gluonts,
        load_offline,
        load_table,
    )

    path = Path(spec)
    if spec in OFFLINE_DATASETS:
        return load_offline(spec)
    if spec in GLUONTS_DATASETS:
        g = load_gluonts(spec)
        return g.train if split == "train" else g.test
    if path.suffix.lower() in (".csv", ".parquet", ".pq") or path.exists():
        if path.is_dir():
            raise DataError(f"{path} is a directory, not a CSV or parquet file")
        if layout not in ("long", "wide"):
            raise DataError(f"layout must be 'long' or 'wide', got {layout!r}")
        cols = {k: v for k, v in (("item_id", id_col), ("timestamp", time_col),
                                  ("target", target_col)) if v is not None}
        return load_table(path, layout=layout, freq=freq, **cols)  # type: ignore[arg-type]
    names = ", ".join([*OFFLINE_DATASETS, *GLUONTS_DATASETS])
    raise DataError(f"unknown dataset {spec!r}: give a .csv or .parquet file or one of {names}")


def default_horizon(dataset: TimeSeriesDataset) -> int:
    """The prediction length a dataset asks for by default: the gluonts benchmark's own, else
    the defaults table's for its frequency (one day of sub-daily data, two weeks of daily
    data, a year of monthly data, ...)."""
    from polydiff.timeseries.data import GLUONTS_DATASETS
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    base = dataset.name.split("/")[0]
    if base in GLUONTS_DATASETS:
        return GLUONTS_DATASETS[base][1]
    return defaults_for(dataset.freq).prediction_length


# ----------------------------------------------------------------------------- models
def make_config(preset: str | None, freq: str, prediction_length: int | None = None,
                context_length: int | None = None, lags: Sequence[int] | None = None
                ) -> TSDiffConfig:
    """A :class:`~polydiff.timeseries.tsdiff.model.TSDiffConfig` from the defaults table
    (:func:`polydiff.timeseries.tsdiff.defaults.defaults_for`): the table's context and lags
    for ``freq`` unless given, network size ``preset`` (``tiny``, ``small``, ``paper``)."""
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    if preset is not None and preset not in PRESETS:
        raise CLIError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if prediction_length is not None and prediction_length < 1:
        raise CLIError(f"prediction length must be >= 1, got {prediction_length}")
    if context_length is not None and context_length < 1:
        raise CLIError(f"context length must be >= 1, got {context_length}")
    return defaults_for(freq).config(prediction_length, context_length, lags, preset)


def train_model(config: TSDiffConfig, series: Sequence[np.ndarray], run_dir: Path, *,
                steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                resume: bool = False, progress: bool = True, meta: dict[str, Any] | None = None,
                ckpt_every: int = 0) -> TSDiffModel:
    """Train a model built under ``seed`` (:func:`polydiff.core.training.seeded`) with the
    engine's Trainer (:func:`~polydiff.timeseries.tsdiff.train.train_tsdiff`) into ``run_dir``
    (``resume``: from its newest intact checkpoint; ``ckpt_every``: steps between checkpoints,
    0 only at the end) and write ``run_dir/tsdiff.json`` (``meta``)."""
    import torch

    from polydiff.core.training import seeded
    from polydiff.timeseries.tsdiff.model import TSDiffModel
    from polydiff.timeseries.tsdiff.train import train_tsdiff

    with seeded(seed):
        model = TSDiffModel(config)
    with stdout_to_stderr():
        train_tsdiff(model, series, run_dir, steps=steps, batch_size=batch_size, lr=lr,
                     seed=seed, device="cpu" if not torch.cuda.is_available() else "auto",
                     resume=resume, progress=progress, log_every=max(1, min(50, steps // 20)),
                     ckpt_every=ckpt_every)
    atomic_write(Path(run_dir) / META_NAME, json.dumps(meta or {}, indent=2) + "\n")
    return model


def _model_dir(path: Path) -> Path:
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    raise CLIError(f"{path} holds no trained TSDiff model (run 'tsdiff train -o {path}' first)")


def model_meta(path: str | Path) -> dict[str, Any]:
    """The run's ``tsdiff.json`` (frequency, dataset, ...), or ``{}`` if it has none."""
    p = Path(path)
    for cand in (p / META_NAME, p.parent / META_NAME):
        if cand.is_file():
            try:
                return dict(json.loads(cand.read_text()))
            except (json.JSONDecodeError, TypeError, ValueError):
                raise CLIError(f"{cand} is not valid JSON") from None
    return {}


def load_model(path: str | Path) -> TSDiffModel:
    """A trained model from a run directory (``tsdiff train -o``) or a model directory."""
    from polydiff.timeseries.tsdiff.model import TSDiffModel

    p = Path(path)
    if not p.exists():
        raise CLIError(f"no such model directory: {p}")
    d = _model_dir(p)
    try:
        return TSDiffModel.from_pretrained(d, map_location="cpu").eval()
    except (OSError, KeyError, TypeError) as exc:
        raise CLIError(f"cannot load the model in {d}: {' '.join(str(exc).split())}") from None


# ----------------------------------------------------------------------------- forecasts
def windows_for(dataset: TimeSeriesDataset, horizon: int, n_windows: int,
                stride: int | None = None) -> list[ForecastWindow]:
    """Rolling-origin windows (the last ``n_windows`` of every series)."""
    from polydiff.timeseries.data import rolling_origin_splits

    return rolling_origin_splits(dataset, horizon, n_windows, stride, min_context=2)


def tsdiff_samples(model: TSDiffModel, contexts: Sequence[np.ndarray], *, num_samples: int,
                   guidance: str = "quantile", scale: float = 2.0, sampler: str = "ddim",
                   steps: int | None = 20, seed: int = 0, batch_size: int = 4,
                   spread: float = 1.0) -> np.ndarray:
    """Self-guided TSDiff forecasts ``(N, S, H)`` of the series ending in ``contexts`` (the
    CLI passes the defaults table's settings for the model's frequency)."""
    from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster

    fc = TSDiffForecaster(model, num_samples=num_samples, batch_size=batch_size,
                          guidance=guidance, scale=scale, sampler=sampler, steps=steps,
                          seed=seed, spread=spread)
    return fc.predict(list(contexts))


def seasonal_naive_samples(contexts: Sequence[np.ndarray], horizon: int, season: int, *,
                           num_samples: int, seed: int = 0) -> np.ndarray:
    """Probabilistic seasonal-naive forecasts ``(N, S, H)``."""
    import numpy as np

    from polydiff.timeseries.baselines import seasonal_naive

    return np.stack([seasonal_naive(c, horizon, season, num_samples=num_samples, seed=seed + i)
                     for i, c in enumerate(contexts)])


def linear_samples(train: Sequence[np.ndarray], contexts: Sequence[np.ndarray], horizon: int,
                   freq: str, *, num_samples: int, seed: int = 0) -> np.ndarray:
    """The linear (ridge) baseline fitted globally on ``train``: ``(N, S, H)``. Window: 4
    horizons (TSDiff's choice), seasonal lags as extra features."""
    import numpy as np

    from polydiff.timeseries.baselines import LinearForecaster
    from polydiff.timeseries.data import default_lags

    longest = max(len(s) for s in train)
    window = max(1, min(4 * horizon, (longest - horizon) // 2))
    try:
        lf = LinearForecaster.fit(list(train), horizon, window, default_lags(freq), seed=seed)
    except ValueError as exc:
        raise CLIError(f"linear baseline: {exc}") from None
    return np.stack([lf.predict(c, num_samples=num_samples, seed=seed + i)
                     for i, c in enumerate(contexts)])


def refine_samples(model: TSDiffModel, contexts: Sequence[np.ndarray], base: np.ndarray, *,
                   method: str = REFINE_DEFAULTS.method, steps: int = REFINE_DEFAULTS.steps,
                   lr: float = REFINE_DEFAULTS.lr,
                   prox_weight: float = REFINE_DEFAULTS.prox_weight,
                   prior: str = REFINE_DEFAULTS.prior,
                   noise_scale: float = REFINE_DEFAULTS.noise_scale,
                   keep_spread: bool = REFINE_DEFAULTS.keep_spread, seed: int = 0,
                   batch_size: int = 4) -> np.ndarray:
    """Refine base forecasts ``(N, S, H)`` (or ``(N, H)``) with TSDiff's implicit density
    (Sec. 4.2): the model's context window, lag features and mean scaling are used
    (defaults: :data:`~polydiff.timeseries.tsdiff.defaults.REFINE_DEFAULTS`)."""
    from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster

    cfg = model.config
    if base.shape[-1] != cfg.prediction_length:
        raise CLIError(f"base forecasts have {base.shape[-1]} steps, the model forecasts "
                       f"{cfg.prediction_length}")
    fc = TSDiffForecaster(model, num_samples=1, batch_size=batch_size)
    return fc.refine(list(contexts), base, seed=seed, method=method, steps=steps, lr=lr,
                     prox_weight=prox_weight, prior=prior, noise_scale=noise_scale,
                     keep_spread=keep_spread and prior == "mse")


def gluonts_seasonal_naive_samples(contexts: Sequence[np.ndarray], starts: Sequence[Any],
                                   freq: str, horizon: int, season: int) -> np.ndarray:
    """gluonts' ``SeasonalNaivePredictor`` (the last season repeated, missing values filled
    with the last observation) on each context: point forecasts as ``(N, 1, H)`` samples."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():  # gluonts' hint about faster json modules
        warnings.filterwarnings("ignore", message="Using `json`-module", category=UserWarning)
        from gluonts.dataset.common import ListDataset
        from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    ds = ListDataset([{"start": st, "target": np.asarray(c, dtype=np.float32)}
                      for st, c in zip(starts, contexts, strict=True)], freq=freq)
    pred = SeasonalNaivePredictor(prediction_length=horizon, season_length=season)
    return np.stack([f.samples.astype(np.float64) for f in pred.predict(ds)])


def score(targets: Sequence[np.ndarray], samples: np.ndarray | Sequence[np.ndarray],
          contexts: Sequence[np.ndarray], season: int) -> dict[str, float]:
    """CRPS (gluonts' mean weighted quantile loss), MASE and 80% coverage."""
    from polydiff.timeseries.metrics import evaluate_forecasts

    m = evaluate_forecasts(list(targets), list(samples), list(contexts), season)
    return {"crps": m["CRPS"], "mase": m["MASE"], "coverage80": m["coverage_80"]}


# ----------------------------------------------------------------------------- output
def quantile_frame(item_ids: Sequence[str], starts: Sequence[Any], samples: np.ndarray,
                   freq: str) -> pd.DataFrame:
    """Long table ``item_id, timestamp, q0.1 ... q0.9, mean`` of forecast samples."""
    import numpy as np
    import pandas as pd

    from polydiff.timeseries.metrics import sample_quantiles

    rows = []
    for item, start, s in zip(item_ids, starts, samples, strict=True):
        q = sample_quantiles(s, QUANTILES)
        idx = pd.period_range(start, periods=s.shape[-1], freq=start.freq)
        frame = {"item_id": item, "timestamp": idx.to_timestamp(how="start")}
        frame.update({f"q{lv:g}": q[j] for j, lv in enumerate(QUANTILES)})
        frame["mean"] = np.mean(s, axis=0)
        rows.append(pd.DataFrame(frame))
    return pd.concat(rows, ignore_index=True)


def fan_charts(out_dir: Path, histories: Sequence[np.ndarray], samples: np.ndarray,
               names: Sequence[str], *, truths: Sequence[np.ndarray | None] | None = None,
               max_plots: int = 4, history: int | None = None, prefix: str = "fan",
               starts: Sequence[Any] | None = None, ylabel: str = "value") -> list[Path]:
    """One fan chart (``core.plots.fan_chart``) per series, the first ``max_plots``, written
    as ``<prefix>_<NN>_<name>.png``. ``starts`` (the ``pandas.Period`` of each forecast's
    first step) puts real dates on the time axis; without it the axis counts steps."""
    import numpy as np
    import pandas as pd

    from polydiff.core.plots import fan_chart
    from polydiff.timeseries.metrics import sample_quantiles

    paths = []
    for i, (hist, s, name) in enumerate(zip(histories, samples, names, strict=True)):
        if i >= max_plots:
            break
        h = np.asarray(hist, dtype=float)
        h = h[-(history or 3 * s.shape[-1]):]
        q = sample_quantiles(s, QUANTILES)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[:60]
        axes: dict[str, Any] = {}
        if starts is not None:
            start = starts[i]
            past = pd.period_range(end=start - 1, periods=len(h), freq=start.freq)
            future = pd.period_range(start, periods=s.shape[-1], freq=start.freq)
            axes = {"history_x": past.to_timestamp(how="start"),
                    "forecast_x": future.to_timestamp(how="start"), "xlabel": "date"}
        paths.append(fan_chart(
            Path(out_dir) / f"{prefix}_{i:02d}_{safe}.png", h,
            {lv: q[j] for j, lv in enumerate(QUANTILES)},
            truth=None if truths is None else truths[i], title=str(name), ylabel=ylabel,
            **axes))
    return paths
