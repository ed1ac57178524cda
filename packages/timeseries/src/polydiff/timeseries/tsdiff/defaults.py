"""TSDiff's defaults per frequency: the one table that the gluonts estimator, the ``tsdiff``
command and the benchmark read.

A row gives, for one base frequency, the window (horizon, context and lags in *seasons* of
that frequency, so ``30min`` and ``15min`` data get the same number of days), the training
budget and the forecast settings. :func:`defaults_for` resolves the row of a pandas
frequency into steps; :func:`defaults_table` renders the resolved table that the package
README shows (a test checks that the README and this module agree).

How the values were chosen (``tools/bench/tsdiff.py``, CPU, see ``tools/bench/README.md``):
the window and the training budget by what fits a CPU budget of minutes; the guidance scale
and the spread together, as the pair with the lowest CRPS among scales 1, 2, 4 x spreads
0.5 ... 1.5 on *validation* windows (the windows just before the benchmark's test period,
never the test windows) of one real dataset per frequency, with the benchmark's model of
that dataset (the table's settings, 1000 steps): ``pedestrian`` (hourly), ``vic_elec``
(half-hourly, also used for ``s``), ``warsaw_air`` (daily) and ``aus_livestock`` (monthly).
On ``warsaw_air`` the best spread was at the grid's
edge (1.5), so spreads up to 5 were scored there too (validation only; 2 won).
Frequencies without a benchmark dataset take the values of the nearest measured one:
``B`` the daily row's, ``W``, ``Q`` and ``Y`` the monthly row's. The spread is a property
of the trained model as much as of the data (a model trained for fewer steps or sampled
with fewer paths can want another): ``tsdiff evaluate --spread`` and the estimator's
``spread=`` override it.
The sampler is guided DDIM (Song et al. 2021 with the self-guidance of Kollovieh et al.
2023): 20 steps instead of the paper's 100 DDPM steps, five times faster; on the
benchmark's vic_elec validation windows DDPM 100 is 8% better in CRPS (0.0267 vs 0.0289).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["FrequencyRow", "TSDiffDefaults", "FREQUENCY_TABLE", "PRESETS", "REFINE_DEFAULTS",
           "RefineDefaults", "defaults_for", "defaults_table", "frequency_key"]

#: network sizes: ``tiny`` (seconds on a CPU), ``small`` (the default), ``paper`` (the
#: reference configuration ``diffusion_small_config`` of the authors)
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_dim=16, num_blocks=2, state_dim=16, time_embed_dim=16),
    "small": dict(hidden_dim=32, num_blocks=3, state_dim=32, time_embed_dim=32),
    "paper": dict(hidden_dim=64, num_blocks=3, state_dim=128, time_embed_dim=128),
}


@dataclass(frozen=True)
class FrequencyRow:
    """One row of :data:`FREQUENCY_TABLE` (lengths in seasons of the frequency)."""

    horizon_seasons: float
    context_seasons: float
    lag_seasons: tuple[float, ...]
    train_steps: int
    scale: float
    spread: float = 1.0
    batch_size: int = 32


#: the table, keyed by base frequency unit (``min`` covers every sub-hourly frequency,
#: ``s`` seconds); seasons: a day for sub-daily data, a week for daily, a year for weekly
#: and coarser data (:func:`polydiff.timeseries.data.seasonal_period`)
FREQUENCY_TABLE: dict[str, FrequencyRow] = {
    "s": FrequencyRow(1, 2, (1, 2, 7), 1000, 2.0, 0.5),
    "min": FrequencyRow(1, 2, (1, 2, 7), 1000, 2.0, 0.5),  # vic_elec
    "h": FrequencyRow(1, 3, (1, 2, 7), 1000, 1.0, 1.5),  # pedestrian
    "D": FrequencyRow(2, 8, (1, 2, 4, 52), 1000, 4.0, 2.0),  # warsaw_air
    "B": FrequencyRow(2, 8, (1, 2, 4, 52), 1000, 4.0, 2.0),
    "W": FrequencyRow(0.25, 1, (1,), 1000, 4.0, 0.7),
    "M": FrequencyRow(1, 3, (1, 2), 1000, 4.0, 0.7),  # aus_livestock
    "Q": FrequencyRow(2, 4, (1, 2), 1000, 4.0, 0.7),
    "Y": FrequencyRow(4, 12, (), 1000, 4.0, 0.7),
}


@dataclass(frozen=True)
class RefineDefaults:
    """Refinement of another model's forecast (TSDiff Sec. 4.2; ``refine.py``): Langevin
    sampling (``gamma = 1``) in which the samples' mean is tied to the base forecast's with
    weight ``prox_weight`` and each sample's offset to its base offset by a kernel of the base
    forecast's density estimate (``keep_spread``): the ensemble moves towards the model's
    density and keeps the base forecast's spread (maximum-likelihood refinement with the plain
    tie pulls every sample to the same mode and collapses the intervals)."""

    method: str = "langevin"
    steps: int = 20
    lr: float = 0.1
    prox_weight: float = 1.0
    keep_spread: bool = True
    noise_scale: float = 1.0
    prior: str = "mse"


REFINE_DEFAULTS = RefineDefaults()


@dataclass(frozen=True)
class TSDiffDefaults:
    """The resolved defaults for one frequency (:func:`defaults_for`).

    Attributes:
        freq: the canonical pandas period alias they were resolved for.
        season: its seasonal period in steps.
        prediction_length, context_length, lags: the model's window (steps).
        preset: network size (:data:`PRESETS`).
        train_steps, batch_size, lr: the training budget (Adam, gradient clipping 0.5).
        sampler, sampling_steps, num_samples, guidance, scale: self-guided forecasting.
        spread: recalibration factor of the samples' spread around their median
            (:func:`~polydiff.timeseries.tsdiff.forecaster.rescale_spread`), chosen with the
            scale on validation windows.
        refine: the refinement settings.
    """

    freq: str
    season: int
    prediction_length: int
    context_length: int
    lags: tuple[int, ...]
    preset: str = "small"
    train_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    sampler: str = "ddim"
    sampling_steps: int = 20
    num_samples: int = 100
    guidance: str = "quantile"
    scale: float = 2.0
    spread: float = 1.0
    refine: RefineDefaults = REFINE_DEFAULTS

    def context_for(self, prediction_length: int) -> int:
        """The context for another horizon: the table's, at least two horizons."""
        return max(self.context_length, 2 * int(prediction_length))

    def config(self, prediction_length: int | None = None, context_length: int | None = None,
               lags: Any = None, preset: str | None = None, **overrides: Any) -> Any:
        """A :class:`~polydiff.timeseries.tsdiff.model.TSDiffConfig` from these defaults
        (any argument given replaces the table's value)."""
        from polydiff.timeseries.tsdiff.model import TSDiffConfig

        preset = preset or self.preset
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        h = int(prediction_length) if prediction_length else self.prediction_length
        ctx = int(context_length) if context_length else self.context_for(h)
        lag_t = tuple(int(v) for v in lags) if lags is not None else self.lags
        return TSDiffConfig(context_length=ctx, prediction_length=h, lags=lag_t,
                            **{**PRESETS[preset], **overrides})

    def forecast_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the self-guided forecast
        (:class:`~polydiff.timeseries.tsdiff.forecaster.TSDiffForecaster`)."""
        return {"guidance": self.guidance, "scale": self.scale, "sampler": self.sampler,
                "steps": self.sampling_steps, "spread": self.spread}

    def replace(self, **changes: Any) -> TSDiffDefaults:
        return dataclasses.replace(self, **changes)


def frequency_key(freq: str) -> str:
    """The :data:`FREQUENCY_TABLE` key of a pandas frequency (``"30min"`` -> ``"min"``)."""
    from polydiff.timeseries.data import _unit

    unit, _ = _unit(freq)
    if unit not in FREQUENCY_TABLE:  # pragma: no cover - every period unit has a row
        raise ValueError(f"no TSDiff defaults for frequency {freq!r}")
    return unit


def defaults_for(freq: str) -> TSDiffDefaults:
    """The defaults of :data:`FREQUENCY_TABLE` for the pandas frequency ``freq``, in steps.
    Raises :class:`~polydiff.timeseries.data.UnsupportedFrequencyError` for unknown ones."""
    from polydiff.timeseries.data import normalize_freq, seasonal_period

    canon = normalize_freq(freq)
    row = FREQUENCY_TABLE[frequency_key(canon)]
    m = seasonal_period(canon)

    def steps(seasons: float) -> int:
        return max(1, round(seasons * m))

    lags = tuple(dict.fromkeys(steps(v) for v in row.lag_seasons if steps(v) >= 1))
    return TSDiffDefaults(freq=canon, season=m, prediction_length=steps(row.horizon_seasons),
                          context_length=steps(row.context_seasons), lags=lags,
                          train_steps=row.train_steps, batch_size=row.batch_size,
                          scale=row.scale, spread=row.spread)


#: the frequencies the README's table lists
TABLE_FREQUENCIES = ("30min", "h", "D", "B", "W", "M", "Q", "Y")


def defaults_table(freqs: tuple[str, ...] = TABLE_FREQUENCIES) -> str:
    """The resolved table as Markdown (the package README shows exactly this)."""
    head = ("| frequency | season | horizon | context | lags | training steps x batch | "
            "guidance scale | spread |")
    lines = [head, "|" + "---|" * 8]
    for f in freqs:
        d = defaults_for(f)
        lags = ", ".join(map(str, d.lags)) or "none"
        lines.append(f"| `{f}` | {d.season} | {d.prediction_length} | {d.context_length} | "
                     f"{lags} | {d.train_steps} x {d.batch_size} | {d.scale:g} | "
                     f"{d.spread:g} |")
    return "\n".join(lines)
