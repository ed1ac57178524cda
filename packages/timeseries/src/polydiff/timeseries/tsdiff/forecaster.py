"""Forecast (and refine forecasts of) plain numpy series with a trained TSDiff model.

Kollovieh et al. (2023), "Predict, Refine, Synthesize", Sec. 4.1: the unconditional model
over ``[context, horizon]`` windows is guided towards the observed context (see
:func:`polydiff.timeseries.tsdiff.guidance.forecast`); Sec. 4.2: another model's forecast is
refined with the model's implicit density (:func:`polydiff.timeseries.tsdiff.refine.refine`).
This module only prepares the inputs: the last ``context_length`` points of every series
(left-padded with missing values when shorter), their history for the lag features, the mean
scaling, batching over series, and the descaling of the results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from polydiff.timeseries.tsdiff.model import TSDiffModel

__all__ = ["TSDiffForecaster", "rescale_spread"]


def rescale_spread(samples: np.ndarray, factor: float) -> np.ndarray:
    """Recalibrate sample paths ``(..., S, H)``: each sample's deviation from the per-step
    median times ``factor`` (< 1 narrows, > 1 widens the intervals; the median and the order
    of the samples are kept). A one-parameter version of the recalibration of Kuleshov, Fenner
    & Ermon (2018), "Accurate Uncertainties for Deep Learning Using Calibrated Regression",
    with ``factor`` chosen on validation windows."""
    if not factor > 0:
        raise ValueError(f"the spread factor must be > 0, got {factor}")
    if factor == 1.0:
        return samples
    med = np.median(samples, axis=-2, keepdims=True)
    return med + factor * (samples - med)


class TSDiffForecaster:
    """Probabilistic forecasts of a list of 1-D series from a :class:`TSDiffModel`.

    Args:
        model: the trained model (its ``prediction_length`` is the horizon).
        num_samples: sample paths per series (default: the defaults table's, 100).
        batch_size: series sampled together (``batch_size * num_samples`` windows at once;
            a few hundred windows per batch run fastest on a CPU).
        freq: the data's frequency: the guidance scale, spread and sampler settings not given
            come from the defaults table for it (:mod:`~polydiff.timeseries.tsdiff.defaults`;
            without it, the table's hourly row).
        spread: recalibration factor of the samples' spread (:func:`rescale_spread`).
        **forecast_kwargs: passed to :func:`~polydiff.timeseries.tsdiff.guidance.forecast`
            (``guidance``, ``scale``, ``sampler``, ``steps``, ``quantiles``, ``eta``, ``seed``).
    """

    def __init__(self, model: TSDiffModel, *, num_samples: int | None = None,
                 batch_size: int = 4, freq: str | None = None, **forecast_kwargs: Any):
        from polydiff.timeseries.tsdiff.defaults import defaults_for

        d = defaults_for(freq or "h")
        num_samples = d.num_samples if num_samples is None else num_samples
        if num_samples < 1 or batch_size < 1:
            raise ValueError("num_samples and batch_size must be >= 1")
        self.model = model.eval()
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        kw = d.forecast_kwargs()
        if forecast_kwargs.get("sampler", kw["sampler"]) != "ddim":
            kw["steps"] = None  # DDPM runs the model's own timesteps unless told otherwise
        self.forecast_kwargs = {**kw, **forecast_kwargs}
        self.spread = float(self.forecast_kwargs.pop("spread", d.spread))
        rescale_spread(np.zeros((1, 1)), self.spread)  # validate

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *,
                        map_location: str | torch.device = "cpu",
                        **kwargs: Any) -> TSDiffForecaster:
        """A forecaster around ``TSDiffModel.from_pretrained(directory)``."""
        return cls(TSDiffModel.from_pretrained(directory, map_location=map_location), **kwargs)

    @property
    def prediction_length(self) -> int:
        return self.model.config.prediction_length

    def past_matrix(self, series: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, max_lag + context_length)``: the end of every series, NaN-padded on the
        left (missing history and context values are marked missing, not invented)."""
        cfg = self.model.config
        width = cfg.max_lag + cfg.context_length
        out = np.full((len(series), width), np.nan)
        for i, s in enumerate(series):
            a = np.asarray(s, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"series {i} is not 1-D (shape {a.shape})")
            a = a[-width:]
            if len(a):
                out[i, width - len(a):] = a
        return out

    def _windows(self, series: Sequence[np.ndarray]) -> Any:
        """``(batch start, window, observed context (B, C))`` per batch of series."""
        cfg = self.model.config
        past = self.past_matrix(series)
        for lo in range(0, len(past), self.batch_size):
            w = self.model.forecast_window(past[lo: lo + self.batch_size])
            ctx = torch.where(w.observed, w.x, torch.full_like(w.x, float("nan")))
            yield lo, w, ctx[:, 0, : cfg.context_length]

    def refine(self, series: Sequence[np.ndarray], base: np.ndarray, *,
               seed: int | None = 0, **refine_kwargs: Any) -> np.ndarray:
        """Refine base forecasts of the horizon after each series: ``base`` is ``(N, S, H)``
        sample (or quantile) paths or ``(N, H)`` point forecasts (original units); returns
        the same shape. ``refine_kwargs`` go to
        :func:`~polydiff.timeseries.tsdiff.refine.refine` (default: the Langevin settings of
        :data:`~polydiff.timeseries.tsdiff.defaults.REFINE_DEFAULTS`, which keep the spread
        of a sample forecast). Batch ``k`` uses seed ``seed + k``."""
        from dataclasses import asdict

        from polydiff.timeseries.tsdiff.defaults import REFINE_DEFAULTS
        from polydiff.timeseries.tsdiff.refine import refine

        cfg = self.model.config
        base = np.asarray(base, dtype=np.float64)
        if base.ndim not in (2, 3) or len(base) != len(series) or \
                base.shape[-1] != cfg.prediction_length:
            raise ValueError(f"base forecasts must be (N, H) or (N, S, H) with N = "
                             f"{len(series)} series and H = {cfg.prediction_length}, got "
                             f"{base.shape}")
        if not np.isfinite(base).all():
            raise ValueError("base forecasts must be finite")
        kwargs = {**asdict(REFINE_DEFAULTS), **refine_kwargs}
        denoiser = self.model.denoiser()
        outs = []
        for k, (lo, w, ctx) in enumerate(self._windows(series)):
            scale = w.scale.double()[:, 0].cpu().numpy()
            shape = (-1,) + (1,) * (base.ndim - 1)
            b = base[lo: lo + self.batch_size] / scale.reshape(shape)
            out = refine(denoiser, ctx.double(), b, seed=None if seed is None else seed + k,
                         cond=w.cond, channel_dim=True, dtype=w.x.dtype, **kwargs)
            outs.append(out.double().cpu().numpy() * scale.reshape(shape))
        return np.concatenate(outs) if outs else np.zeros_like(base)

    def predict(self, series: Sequence[np.ndarray], seed: int | None = None) -> np.ndarray:
        """Sample paths ``(N, num_samples, prediction_length)`` (float64, original units)
        following the end of each series, their spread recalibrated by :attr:`spread`.
        ``seed`` overrides the forecast seed (batch ``k`` uses ``seed + k``)."""
        from polydiff.timeseries.tsdiff.guidance import forecast

        cfg = self.model.config
        kwargs = dict(self.forecast_kwargs)
        base = kwargs.pop("seed", 0) if seed is None else seed
        denoiser = self.model.denoiser()
        outs = []
        for k, (_, w, ctx) in enumerate(self._windows(series)):
            samples = forecast(denoiser, ctx, cfg.prediction_length,
                               num_samples=self.num_samples,
                               cond=w.cond, channel_dim=True, scaling="none",
                               dtype=w.x.dtype, seed=None if base is None else base + k,
                               **kwargs)
            outs.append((samples.double() * w.scale.double()[:, :, None]).cpu().numpy())
        if not outs:
            return np.zeros((0, self.num_samples, cfg.prediction_length))
        return rescale_spread(np.concatenate(outs, axis=0), self.spread)
