"""TSDiff: self-guiding diffusion models for probabilistic time-series forecasting.

Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for
Probabilistic Time Series Forecasting". Modules:

* :mod:`~polydiff.timeseries.tsdiff.s4`: S4D diagonal state-space layers (Gu et al. 2022);
* :mod:`~polydiff.timeseries.tsdiff.model`: :class:`TSDiffConfig`, :class:`TSDiffBackbone`,
  :class:`TSDiffModel` (windows, lag features, mean scaling, denoiser, loss);
* :mod:`~polydiff.timeseries.tsdiff.train`: :class:`WindowSampler` and :func:`train_tsdiff`;
* :mod:`~polydiff.timeseries.tsdiff.forecaster`: :class:`TSDiffForecaster` (numpy series in,
  sample paths out, through the self-guided ``forecast`` of ``guidance.py``).

Importing this package is light: the names below load their module (and torch) on first use.
"""

from __future__ import annotations

from polydiff.core.lazy import lazy_exports

_EXPORTS = {
    "S4D": "s4", "S4DKernel": "s4",
    "TSDiffConfig": "model", "TSDiffBackbone": "model", "TSDiffModel": "model",
    "TSDiffWindow": "model", "lags_for_freq": "model", "make_window": "model",
    "mean_scale": "model", "HOURLY_LAGS": "model", "DAILY_LAGS": "model",
    "WindowSampler": "train", "train_tsdiff": "train", "TSDiffForecaster": "forecaster",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{mod}" for name, mod in _EXPORTS.items()})
