"""TSDiff as a gluonts model: :class:`TSDiffEstimator` (``estimator.train(dataset)``) and a
``PyTorchPredictor`` whose forecasts are ``SampleForecast`` objects from self-guided sampling.

TSDiff is Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding Diffusion Models
for Probabilistic Time Series Forecasting"; the authors built it on gluonts, and this adapter
lets gluonts users train and evaluate it like any gluonts torch model
(``make_evaluation_predictions`` + ``Evaluator``, backtests, ...).

* Training (:class:`TSDiffLightningModule`): gluonts' ``InstanceSplitter`` cuts windows of
  ``max(lags) + context_length`` past and ``prediction_length`` future points (padding marked
  unobserved); ``training_step`` turns them into a model window
  (:meth:`~polydiff.timeseries.tsdiff.model.TSDiffModel.make_window`: mean scaling over the
  context, lag features, gaps interpolated) and returns the model's own DDPM loss
  (:meth:`~polydiff.timeseries.tsdiff.model.TSDiffModel.loss`). Lightning drives the
  optimisation (Adam, the paper's learning rate 1e-3 and gradient clipping 0.5); process,
  network and loss are polydiff's.
* Prediction: the module's ``forward(past_target, past_observed_values)`` returns ``(B, S, H)``
  samples of :class:`~polydiff.timeseries.tsdiff.forecaster.TSDiffForecaster` (observation
  self-guidance, ``guidance.py``); gluonts' ``SampleForecastGenerator`` wraps them.
* :func:`make_predictor` wraps an already trained :class:`TSDiffModel` (e.g. from
  ``tsdiff train``) as a gluonts predictor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic
from gluonts.model.forecast_generator import SampleForecastGenerator
from gluonts.torch.model.estimator import PyTorchLightningEstimator
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.transform import (
    AddObservedValuesIndicator,
    ExpectedNumInstanceSampler,
    InstanceSplitter,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
)

from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster
from polydiff.timeseries.tsdiff.model import TSDiffConfig, TSDiffModel, lags_for_freq

__all__ = ["TSDiffEstimator", "TSDiffLightningModule", "make_predictor", "config_for",
           "PRESETS", "PREDICTION_INPUT_NAMES", "TRAINING_INPUT_NAMES"]

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]

#: network sizes: ``tiny`` (seconds on a CPU), ``small``, ``paper`` (the reference config)
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_dim=16, num_blocks=2, state_dim=16, time_embed_dim=16),
    "small": dict(hidden_dim=32, num_blocks=3, state_dim=32, time_embed_dim=32),
    "paper": dict(hidden_dim=64, num_blocks=3, state_dim=128, time_embed_dim=128),
}


def _default_lags(freq: str) -> tuple[int, ...]:
    try:
        return lags_for_freq(freq)
    except ValueError:
        from polydiff.timeseries.data import seasonal_period

        m = seasonal_period(freq)
        return (m, 2 * m, 7 * m) if m > 1 else ()


def config_for(freq: str, prediction_length: int, context_length: int | None = None,
               lags: Iterable[int] | None = None, preset: str = "small") -> TSDiffConfig:
    """A :class:`TSDiffConfig` for ``freq``: the paper's lags for hourly/daily data (else one,
    two and seven seasons), context ``context_length`` (default ``4 * prediction_length``;
    gluonts models default to a multiple of the horizon), network size ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    ctx = int(context_length) if context_length else 4 * int(prediction_length)
    lag_t = tuple(lags) if lags is not None else _default_lags(freq)
    return TSDiffConfig(context_length=ctx, prediction_length=int(prediction_length),
                        lags=lag_t, **PRESETS[preset])


class TSDiffLightningModule(pl.LightningModule):
    """A ``LightningModule`` around :class:`TSDiffModel`: ``training_step`` returns the
    model's DDPM loss on gluonts training batches; ``forward`` forecasts ``(B, S, H)``."""

    def __init__(self, config: TSDiffConfig, *, lr: float = 1e-3, num_samples: int = 100,
                 batch_size: int = 32, forecast_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.model = TSDiffModel(config)
        self.lr = float(lr)
        self.num_samples = int(num_samples)
        self.forecast_batch = int(batch_size)
        self.forecast_kwargs = dict(forecast_kwargs or {})

    @property
    def config(self) -> TSDiffConfig:
        return self.model.config

    def _window(self, batch: dict[str, torch.Tensor]) -> Any:
        series = torch.cat([batch["past_target"], batch["future_target"]], dim=-1)
        observed = torch.cat([batch["past_observed_values"], batch["future_observed_values"]],
                             dim=-1)
        return self.model.make_window(series, observed=observed, fill="interpolate")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(self._window(batch).batch())
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True,
                 batch_size=batch["past_target"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        gen = torch.Generator(device=batch["past_target"].device).manual_seed(batch_idx)
        loss = self.model.loss(self._window(batch).batch(), gen)
        self.log("val_loss", loss, on_epoch=True, on_step=False, prog_bar=True,
                 batch_size=batch["past_target"].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def forward(self, past_target: torch.Tensor,
                past_observed_values: torch.Tensor) -> torch.Tensor:
        """Self-guided forecasts ``(B, num_samples, prediction_length)`` (original units)."""
        past = torch.where(past_observed_values > 0, past_target.double(),
                           torch.full_like(past_target, float("nan"), dtype=torch.float64))
        fc = TSDiffForecaster(self.model, num_samples=self.num_samples,
                              batch_size=self.forecast_batch, **self.forecast_kwargs)
        samples = fc.predict(list(past.cpu().numpy()))
        return torch.from_numpy(samples.astype(np.float32)).to(past_target.device)


def _splitter(config: TSDiffConfig, mode: str, sampler: Any | None = None) -> InstanceSplitter:
    instance_sampler = sampler if sampler is not None else {
        "training": ExpectedNumInstanceSampler(num_instances=1.0,
                                               min_future=config.prediction_length),
        "validation": ValidationSplitSampler(min_future=config.prediction_length),
        "test": TestSplitSampler(),
    }[mode]
    return InstanceSplitter(
        target_field=FieldName.TARGET, is_pad_field=FieldName.IS_PAD,
        start_field=FieldName.START, forecast_start_field=FieldName.FORECAST_START,
        instance_sampler=instance_sampler,
        past_length=config.max_lag + config.context_length,
        future_length=config.prediction_length,
        time_series_fields=[FieldName.OBSERVED_VALUES], dummy_value=0.0)


def _transformation() -> Transformation:
    return SelectFields([FieldName.ITEM_ID, FieldName.INFO, FieldName.START, FieldName.TARGET],
                        allow_missing=True) + \
        AddObservedValuesIndicator(target_field=FieldName.TARGET,
                                   output_field=FieldName.OBSERVED_VALUES)


def make_predictor(model: TSDiffModel | TSDiffLightningModule, *, num_samples: int = 100,
                   batch_size: int = 32, device: str = "cpu",
                   **forecast_kwargs: Any) -> PyTorchPredictor:
    """A gluonts ``PyTorchPredictor`` for a trained model (``forecast_kwargs``: ``guidance``,
    ``scale``, ``sampler``, ``steps``, ``seed``, ... of the self-guided forecast)."""
    if isinstance(model, TSDiffModel):
        module = TSDiffLightningModule(model.config, num_samples=num_samples,
                                       batch_size=batch_size, forecast_kwargs=forecast_kwargs)
        module.model.load_state_dict(model.state_dict())
    else:
        module = model
        module.num_samples, module.forecast_batch = int(num_samples), int(batch_size)
        module.forecast_kwargs = dict(forecast_kwargs)
    module.eval()
    cfg = module.config
    return PyTorchPredictor(
        input_transform=_transformation() + _splitter(cfg, "test"),
        input_names=PREDICTION_INPUT_NAMES, prediction_net=module,
        forecast_generator=SampleForecastGenerator(), batch_size=batch_size,
        prediction_length=cfg.prediction_length, device=device)


class TSDiffEstimator(PyTorchLightningEstimator):
    """Train TSDiff the gluonts way: ``TSDiffEstimator(freq, prediction_length).train(data)``
    returns a ``PyTorchPredictor`` of self-guided sample forecasts.

    Args:
        freq: the data's pandas frequency (picks the default lags).
        prediction_length: forecast horizon ``H``.
        context_length: context ``C`` (default ``4 H``).
        lags: seasonal lags (default: the paper's for hourly/daily data, else 1, 2 and 7
            seasons).
        preset: network size, ``"tiny"``, ``"small"`` or ``"paper"``; ``config`` overrides
            everything above with a full :class:`TSDiffConfig`.
        lr: Adam learning rate; batch_size: training windows per step;
        num_batches_per_epoch: steps per Lightning epoch.
        trainer_kwargs: for ``lightning.Trainer`` (defaults: ``max_epochs=100``,
            ``gradient_clip_val=0.5``, no progress bar).
        num_samples: sample paths per forecast; guidance, scale, sampler, sampling_steps,
            seed: the self-guided forecast (``quantile``/``mse``, ``s``, ``ddpm``/``ddim``).
        train_sampler, validation_sampler: gluonts instance samplers.
    """

    def __init__(self, freq: str, prediction_length: int, context_length: int | None = None,
                 lags: Iterable[int] | None = None, preset: str = "small",
                 config: TSDiffConfig | None = None, lr: float = 1e-3, batch_size: int = 64,
                 num_batches_per_epoch: int = 50,
                 trainer_kwargs: dict[str, Any] | None = None, num_samples: int = 100,
                 guidance: str = "quantile", scale: float = 4.0, sampler: str = "ddpm",
                 sampling_steps: int | None = None, seed: int = 0,
                 forecast_batch_size: int = 32, train_sampler: Any = None,
                 validation_sampler: Any = None) -> None:
        kwargs = {"max_epochs": 100, "gradient_clip_val": 0.5, "enable_progress_bar": False,
                  "enable_model_summary": False, "logger": False}
        kwargs.update(trainer_kwargs or {})
        super().__init__(trainer_kwargs=kwargs)
        self.freq = freq
        self.config = config if config is not None else config_for(
            freq, prediction_length, context_length, lags, preset)
        if self.config.prediction_length != prediction_length:
            raise ValueError(f"config.prediction_length={self.config.prediction_length} != "
                             f"prediction_length={prediction_length}")
        self.prediction_length = int(prediction_length)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.num_batches_per_epoch = int(num_batches_per_epoch)
        self.num_samples, self.forecast_batch_size = int(num_samples), int(forecast_batch_size)
        self.forecast_kwargs = dict(guidance=guidance, scale=float(scale), sampler=sampler,
                                    steps=sampling_steps, seed=seed)
        self.train_sampler, self.validation_sampler = train_sampler, validation_sampler

    def create_transformation(self) -> Transformation:
        return _transformation()

    def create_lightning_module(self) -> TSDiffLightningModule:
        return TSDiffLightningModule(self.config, lr=self.lr, num_samples=self.num_samples,
                                     batch_size=self.forecast_batch_size,
                                     forecast_kwargs=self.forecast_kwargs)

    def create_training_data_loader(self, data: Dataset, module: TSDiffLightningModule,
                                    shuffle_buffer_length: int | None = None,
                                    **kwargs: Any) -> Iterable:
        instances = _splitter(self.config, "training", self.train_sampler).apply(
            Cyclic(data).stream(), is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size,
                                  shuffle_buffer_length=shuffle_buffer_length,
                                  field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor,
                                  num_batches_per_epoch=self.num_batches_per_epoch)

    def create_validation_data_loader(self, data: Dataset, module: TSDiffLightningModule,
                                      **kwargs: Any) -> Iterable:
        instances = _splitter(self.config, "validation", self.validation_sampler).apply(
            data, is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size,
                                  field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor)

    def create_predictor(self, transformation: Transformation,
                         module: TSDiffLightningModule) -> PyTorchPredictor:
        return make_predictor(module, num_samples=self.num_samples,
                              batch_size=self.forecast_batch_size, **self.forecast_kwargs)
