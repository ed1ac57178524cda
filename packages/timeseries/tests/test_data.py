"""Data: long-table validation, frequencies, tables, offline real data, gluonts, windows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from polydiff.timeseries import data as D
from polydiff.timeseries.data import (
    AllMissingError,
    DatasetUnavailableError,
    DuplicateTimestampError,
    IrregularTimestampsError,
    MissingColumnError,
    NonNumericTargetError,
    SeriesTooShortError,
    TimeSeries,
    TimeSeriesDataset,
    UnsupportedFrequencyError,
    from_long_frame,
    rolling_origin_splits,
    train_test_split,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `json`-module:UserWarning")


def _long(n: int = 30, freq: str = "h", items=("a", "b"), start="2021-03-01") -> pd.DataFrame:
    rows = []
    for k, item in enumerate(items):
        ts = pd.date_range(start, periods=n + k, freq=freq)
        rows.append(pd.DataFrame({"item_id": item, "timestamp": ts,
                                  "target": np.arange(n + k, dtype=float) + 100 * k,
                                  "temp": np.sin(np.arange(n + k))}))
    return pd.concat(rows, ignore_index=True)


def _error(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def test_from_long_frame_builds_series_and_infers_frequency():
    ds = from_long_frame(_long(), covariates=["temp"])
    assert ds.freq == "h" and ds.item_ids == ["a", "b"]
    a, b = ds
    assert a.start == pd.Period("2021-03-01 00:00", freq="h") and len(a) == 30 and len(b) == 31
    np.testing.assert_array_equal(b.target, np.arange(31.0) + 100)
    np.testing.assert_allclose(a.covariates["temp"], np.sin(np.arange(30)))
    assert ds.notes == []


@pytest.mark.filterwarnings("ignore:Period with BDay freq:FutureWarning")
@pytest.mark.parametrize(("freq", "expected"), [
    ("30min", "30min"), ("D", "D"), ("W-SUN", "W-SUN"), ("MS", "M"), ("ME", "M"),
    ("QS", "Q-DEC"), ("B", "B"), ("YS", "Y-DEC"),
])
def test_frequency_inference(freq, expected):
    ds = from_long_frame(_long(12, freq))
    assert ds.freq == expected
    assert ds[0].index[-1] == pd.Period(pd.date_range("2021-03-01", periods=12, freq=freq)[-1],
                                        freq=expected)


def test_missing_timestamps_become_nan_and_are_noted():
    df = _long(40, "MS", items=("a",))
    df = df.drop(index=[5, 6, 20]).reset_index(drop=True)  # month gaps: infer_freq alone fails
    df.loc[10, "target"] = np.nan
    ds = from_long_frame(df)
    assert ds.freq == "M" and len(ds[0]) == 40
    assert np.isnan(ds[0].target[[5, 6, 20]]).all() and np.isnan(ds[0].target).sum() == 4
    assert ds[0].observed.sum() == 36
    assert "filled 3 missing timestamps" in ds.notes[0] and "2 gaps" in ds.notes[0]


def test_validation_errors_are_one_line_and_name_the_problem():
    df = _long()
    bad = df.copy()
    bad["target"] = bad["target"].astype(object)
    bad.loc[33, "target"] = "12,5"
    msg = _error(NonNumericTargetError, from_long_frame, bad)
    assert "'b'" in msg and "'12,5'" in msg

    dup = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    msg = _error(DuplicateTimestampError, from_long_frame, dup)
    assert "'a'" in msg and "2021-03-01 03:00:00" in msg
    merged = from_long_frame(dup, on_duplicate="mean")
    assert len(merged[0]) == 30 and "merged 1" in merged.notes[0]

    irregular = df.drop(index=[35, 36]).reset_index(drop=True)  # a legitimate gap first
    irregular.loc[45, "timestamp"] += pd.Timedelta("17min")
    msg = _error(IrregularTimestampsError, from_long_frame, irregular)
    assert "'b'" in msg and "off the 'h' grid" in msg and "2021-03-01 17:17:00 is off" in msg

    chaos = pd.DataFrame({"item_id": "x", "target": 1.0, "timestamp": pd.to_datetime(
        ["2021-01-01 00:00", "2021-01-01 00:07", "2021-01-01 01:00", "2021-01-01 01:31"])})
    msg = _error(IrregularTimestampsError, from_long_frame, chaos)
    assert "cannot infer a frequency" in msg and "'x'" in msg

    msg = _error(SeriesTooShortError, from_long_frame, df, min_length=31)
    assert "'a'" in msg and "31" in msg

    empty = df.copy()
    empty.loc[empty.item_id == "b", "target"] = np.nan
    assert "'b'" in _error(AllMissingError, from_long_frame, empty)

    assert "'fortnightly'" in _error(UnsupportedFrequencyError, from_long_frame, df,
                                     freq="fortnightly")
    assert "'value'" in _error(MissingColumnError, from_long_frame, df, target="value")
    when = df.astype({"timestamp": object})
    when.loc[2, "timestamp"] = "yesterday-ish"
    assert "'timestamp'" in _error(D.DataError, from_long_frame, when)
    # hourly data declared daily: several timestamps fall in one day
    assert "'D' grid" in _error(IrregularTimestampsError, from_long_frame, df, freq="D")
    # every error is a ValueError (CLIs turn DataError into one line and exit code 2)
    assert issubclass(D.DataError, ValueError)


def test_timezone_aware_timestamps_keep_wall_clock():
    df = _long(10, items=("a",))
    df["timestamp"] = df["timestamp"].dt.tz_localize("Australia/Melbourne")
    assert from_long_frame(df)[0].start == pd.Period("2021-03-01 00:00", freq="h")


def test_frequency_helpers():
    assert [D.seasonal_period(f) for f in ("h", "H", "30min", "15min", "D", "B", "W", "M",
                                           "Q", "Y", "2h", "5h")] == \
        [24, 24, 48, 96, 7, 5, 52, 12, 4, 1, 12, 1]
    assert D.default_lags("h") == [24, 168] and D.default_lags("30min") == [48, 336]
    assert D.default_lags("D") == [7, 28] and D.default_lags("M") == [12]
    assert D.default_lags("Y") == []
    assert D.normalize_freq("H") == "h" and D.normalize_freq("30T") == "30min"
    assert D.normalize_freq("W") == "W-SUN"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    ds = from_long_frame(_long(), covariates=["temp"])
    ds.series[0].target[4] = np.nan  # a missing value survives the round trip
    path = D.write_table(ds, tmp_path / f"data{suffix}")
    back = D.load_table(path, covariates=["temp"])
    assert back.freq == ds.freq and back.item_ids == ds.item_ids
    for s, t in zip(ds, back, strict=True):
        assert s.start == t.start
        np.testing.assert_array_equal(s.target, t.target)
        np.testing.assert_allclose(s.covariates["temp"], t.covariates["temp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"data{suffix}"]


def test_weekly_round_trip_keeps_the_anchor(tmp_path):
    ds = from_long_frame(_long(8, "W"))
    back = D.load_table(D.write_table(ds, tmp_path / "w.csv"))
    assert back.freq == "W-SUN" and back[0].start == ds[0].start


def test_wide_layout(tmp_path):
    wide = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=20, freq="D"),
                         "north": np.arange(20.0), "south": np.arange(20.0) * 2})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    ds = D.load_table(tmp_path / "wide.csv", layout="wide")
    assert ds.item_ids == ["north", "south"] and ds.freq == "D"
    np.testing.assert_array_equal(ds[1].target, np.arange(20.0) * 2)


def test_write_table_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def boom(self, path, **kwargs):
        with open(path, "w") as fh:
            fh.write("partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        D.write_table(_long(), target)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert "unsupported table format" in _error(D.DataError, D.write_table, _long(),
                                                tmp_path / "x.xlsx")
    assert "no such file" in _error(D.DataError, D.read_table, tmp_path / "missing.csv")


def test_gluonts_round_trip():
    from gluonts.dataset.field_names import FieldName

    ds = from_long_frame(_long(), covariates=["temp"])
    gl = D.to_gluonts(ds)
    entries = list(gl)
    assert entries[1][FieldName.ITEM_ID] == "b"
    assert entries[1][FieldName.START] == pd.Period("2021-03-01 00:00", freq="h")
    assert entries[1][FieldName.FEAT_DYNAMIC_REAL].shape == (1, 31)
    back = D.from_gluonts(gl, "h", covariate_names=["temp"])
    assert back.item_ids == ["a", "b"] and back.freq == "h"
    np.testing.assert_allclose(back[1].target, ds[1].target)
    np.testing.assert_allclose(back[0].covariates["temp"], ds[0].covariates["temp"], rtol=1e-6)


def test_gluonts_names_are_checked_without_network():
    assert set(D.GLUONTS_DATASETS) >= {"solar_nips", "electricity_nips", "traffic_nips",
                                       "exchange_rate_nips", "m4_hourly", "uber_tlc_hourly",
                                       "kdd_cup_2018_without_missing", "wiki2000_nips"}
    assert "solar_nips" in _error(DatasetUnavailableError, D.load_gluonts, "solar")
    assert "pedestrian" in _error(DatasetUnavailableError, D.load_offline, "nope")


def test_rolling_origin_windows():
    y = np.arange(50.0)
    ds = TimeSeriesDataset([TimeSeries("a", pd.Period("2020-01-01", freq="D"), y,
                                       {"c": -y})], "D")
    windows = rolling_origin_splits(ds, 7, n_windows=3, stride=5)
    assert [len(w.context) for w in windows] == [33, 38, 43]
    for w in windows:
        np.testing.assert_array_equal(w.target, y[len(w.context):len(w.context) + 7])
        np.testing.assert_array_equal(w.context.covariates["c"], -w.context.target)
        assert w.forecast_start == ds[0].start + len(w.context)
    assert windows[-1].target[-1] == 49.0
    train, test = train_test_split(ds, 7, n_windows=3, stride=5)
    assert len(train[0]) == 33 and train[0].target.max() < test[0].target.min()
    msg = _error(SeriesTooShortError, rolling_origin_splits, ds, 20, n_windows=3)
    assert "'a'" in msg


def test_package_import_is_light():
    code = ("import sys, polydiff.timeseries as t; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def pedestrian():
    pytest.importorskip("tsdata")
    return D.load_offline("pedestrian")


def test_offline_pedestrian(pedestrian):
    ds = pedestrian
    assert ds.freq == "h" and len(ds) == 4
    assert ds.item_ids == ["Birrarung Marr", "Bourke Street Mall (North)",
                           "QV Market-Elizabeth St (West)", "Southern Cross Station"]
    lengths = [len(s) for s in ds]
    assert lengths == [17544, 16416, 17544, 17544]  # 2015-2016, one value per local hour
    assert [int(s.observed.sum()) for s in ds] == [14566, 16414, 17518, 17539]  # raw rows
    assert ds[0].start == pd.Period("2015-01-01 00:00", freq="h")
    # the spring daylight-saving hour does not exist locally: a NaN on 2015-10-04 02:00
    bourke = ds[1]
    assert np.isnan(bourke.target[bourke.index.get_loc(pd.Period("2015-10-04 02:00", "h"))])
    assert any("Birrarung Marr" in n and "2978 missing" in n for n in ds.notes)


def test_offline_vic_elec():
    pytest.importorskip("tsdata")
    local = D.load_offline("vic_elec")
    assert local.freq == "30min" and local.item_ids == ["vic_elec"]
    s = local[0]
    assert set(s.covariates) == {"temperature", "holiday"} and len(s) == 52608
    assert np.isnan(s.target).sum() == 6  # 3 spring DST changes x 2 half-hours
    assert any("merged 6 duplicated" in n for n in local.notes)  # 3 autumn changes
    utc = D.load_offline("vic_elec", clock="utc")[0]
    assert not np.isnan(utc.target).any() and len(utc) == 52608
    assert 2000 < np.nanmin(s.target) and np.nanmax(s.target) < 10000  # MWh per half hour


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_irregular_message_states_gaps_in_any_resolution(unit):
    """pandas 3 (and pandas 2 for non-nanosecond columns) stores timestamps in seconds or
    microseconds: the gaps must still read as the real durations (``asi8`` counts in the
    index's own unit; reading it as nanoseconds showed 62 minutes as 3.72 microseconds)."""
    steps = [62, 67, 55, 63, 60, 58, 70, 61, 66, 52, 59, 64]
    ts = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.cumsum([0, *steps]), unit="min")
    df = pd.DataFrame({"item_id": "x", "timestamp": ts.astype(f"datetime64[{unit}]"),
                       "target": np.arange(len(ts), dtype=float)})
    assert str(df["timestamp"].dtype) == f"datetime64[{unit}]"
    msg = _error(IrregularTimestampsError, from_long_frame, df)
    assert "steps of 0 days 01:02:00 and 0 days 01:07:00" in msg, msg


def test_column_layouts_and_names():
    df = _long()
    nixtla = df.rename(columns={"item_id": "unique_id", "timestamp": "ds", "target": "y"})
    a, b = from_long_frame(df), from_long_frame(nixtla)
    assert a.item_ids == b.item_ids and a.freq == b.freq
    np.testing.assert_array_equal(a[1].target, b[1].target)
    # named columns, and a table without an id column is one series
    custom = df.rename(columns={"item_id": "sensor", "timestamp": "when", "target": "count"})
    c = from_long_frame(custom, item_id="sensor", timestamp="when", target="count")
    assert c.item_ids == ["a", "b"]
    one = from_long_frame(nixtla[nixtla.unique_id == "a"].drop(columns="unique_id"), name="one")
    assert one.item_ids == ["one"] and len(one[0]) == 30
    # both layouts present: ambiguous, one line naming the options
    both = pd.concat([df, nixtla[["unique_id", "ds", "y"]]], axis=1)
    msg = _error(MissingColumnError, from_long_frame, both)
    assert "--id-col" in msg and "unique_id, ds, y" in msg
    assert from_long_frame(both, item_id="unique_id", timestamp="ds", target="y").item_ids == \
        ["a", "b"]
    msg = _error(MissingColumnError, from_long_frame, df.rename(columns={"target": "value"}))
    assert "'target' not found" in msg and "--target-col" in msg
    assert D.resolve_columns(["unique_id", "ds", "sales"], target="sales") == (
        "unique_id", "ds", "sales")


def test_load_table_with_columns(tmp_path):
    df = _long().rename(columns={"item_id": "unique_id", "timestamp": "ds", "target": "y"})
    path = tmp_path / "nixtla.csv"
    df.to_csv(path, index=False)
    assert D.load_table(path).item_ids == ["a", "b"]
    df.rename(columns={"y": "sales"}).to_csv(path, index=False)
    assert len(D.load_table(path, target="sales")) == 2
    wide = pd.DataFrame({"ds": pd.date_range("2021-01-01", periods=20, freq="D"),
                         "x": np.arange(20.0), "y2": np.ones(20)})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    w = D.load_table(tmp_path / "wide.csv", layout="wide")
    assert w.item_ids == ["x", "y2"] and w.freq == "D"


def test_offline_monthly_and_daily():
    pytest.importorskip("tsdata")
    live = D.load_offline("aus_livestock")
    assert live.freq == "M" and len(live) == 54
    assert all(s.item_id.count("/") == 1 for s in live)
    assert not any(np.isnan(s.target).any() for s in live)
    air = D.load_offline("warsaw_air")
    assert air.freq == "D" and air.item_ids == ["pm25", "pm10", "no2"]
    assert all(3000 < len(s) < 4200 and np.isnan(s.target).mean() < 0.1 for s in air)
    assert air[0].index[-1] >= pd.Period("2025-05-01", freq="D")
