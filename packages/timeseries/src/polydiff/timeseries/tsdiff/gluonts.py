"""TSDiff as a gluonts model: :class:`TSDiffEstimator` (``estimator.train(dataset)``), its
:class:`TSDiffPredictor` (``SampleForecast``s from self-guided sampling; ``serialize`` /
``deserialize``; ``refine`` of any gluonts forecasts) and :class:`RefinedPredictor` (any
gluonts predictor, its forecasts refined by a TSDiff model).

TSDiff is Kollovieh et al. (2023), "Predict, Refine, Synthesize: Self-Guiding Diffusion Models
for Probabilistic Time Series Forecasting"; the authors built it on gluonts, and this adapter
lets gluonts users train and evaluate it like any gluonts torch model
(``make_evaluation_predictions`` + ``Evaluator``, backtests, ...).

* Defaults: every setting left out comes from the defaults table for the frequency
  (:func:`polydiff.timeseries.tsdiff.defaults.defaults_for`), the same table the ``tsdiff``
  command uses: context, lags, network size, training steps and batch, guided DDIM with 20
  steps, 100 samples, the guidance scale.
* Training (:class:`TSDiffLightningModule`): gluonts' ``InstanceSplitter`` cuts windows of
  ``max(lags) + context_length`` past and ``prediction_length`` future points (padding marked
  unobserved); ``training_step`` turns them into a model window
  (:meth:`~polydiff.timeseries.tsdiff.model.TSDiffModel.make_window`: mean scaling over the
  context, lag features, gaps interpolated) and returns the model's own DDPM loss
  (:meth:`~polydiff.timeseries.tsdiff.model.TSDiffModel.loss`). Lightning drives the
  optimisation (Adam, the paper's learning rate 1e-3 and gradient clipping 0.5); process,
  network and loss are polydiff's. Lightning's checkpoints go to a temporary folder (nothing
  is written to the working directory) and its info lines are silenced.
* Prediction: the module's ``forward(past_target, past_observed_values)`` returns ``(B, S, H)``
  samples of :class:`~polydiff.timeseries.tsdiff.forecaster.TSDiffForecaster` (observation
  self-guidance, ``guidance.py``); gluonts' ``SampleForecastGenerator`` wraps them.
* :func:`make_predictor` wraps an already trained :class:`TSDiffModel` (e.g. from
  ``tsdiff train``) as a :class:`TSDiffPredictor`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic
from gluonts.model.forecast import Forecast, QuantileForecast, SampleForecast
from gluonts.model.forecast_generator import SampleForecastGenerator
from gluonts.model.predictor import Predictor
from gluonts.torch.model.estimator import PyTorchLightningEstimator, TrainOutput
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

from polydiff.timeseries.tsdiff.defaults import PRESETS, defaults_for
from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster
from polydiff.timeseries.tsdiff.model import TSDiffConfig, TSDiffModel

__all__ = ["TSDiffEstimator", "TSDiffLightningModule", "TSDiffPredictor", "RefinedPredictor",
           "make_predictor", "config_for", "quiet_lightning", "PRESETS",
           "PREDICTION_INPUT_NAMES", "TRAINING_INPUT_NAMES"]

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                      "lightning_fabric")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines (tips, accelerator summary, checkpoint messages) and its
    hints about data loaders off for the block; real warnings and errors still show."""
    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*defined a `validation_step`.*")
            warnings.filterwarnings("ignore", message=".*`max_epochs` was not set.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def config_for(freq: str, prediction_length: int | None = None,
               context_length: int | None = None, lags: Iterable[int] | None = None,
               preset: str = "small") -> TSDiffConfig:
    """A :class:`TSDiffConfig` for ``freq`` from the defaults table
    (:func:`~polydiff.timeseries.tsdiff.defaults.defaults_for`): its horizon, context (at least
    two horizons) and lags unless given, network size ``preset``."""
    return defaults_for(freq).config(prediction_length, context_length,
                                     None if lags is None else tuple(lags), preset)


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
                              batch_size=max(1, min(self.forecast_batch, 4)),
                              **self.forecast_kwargs)
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


class TSDiffPredictor(PyTorchPredictor):
    """A gluonts predictor of self-guided TSDiff sample forecasts (build it with
    :func:`make_predictor` or :meth:`TSDiffEstimator.train`).

    Besides gluonts' ``predict``: :attr:`model` (the :class:`TSDiffModel`), :meth:`refine`
    (refine any gluonts forecasts with the model's implicit density), and
    :meth:`serialize` / :meth:`deserialize`, which store the configuration, the forecast
    settings and safetensors weights (no pickles), so ``Predictor.deserialize(path)`` works
    too."""

    @property
    def model(self) -> TSDiffModel:
        return self.prediction_net.model

    @property
    def forecast_settings(self) -> dict[str, Any]:
        """``num_samples``, ``batch_size`` and the self-guided forecast's keyword arguments."""
        net = self.prediction_net
        return {"num_samples": net.num_samples, "batch_size": net.forecast_batch,
                **net.forecast_kwargs}

    def refine(self, forecasts: Iterable[Forecast], dataset: Iterable[dict[str, Any]], *,
               seed: int | None = 0, **refine_kwargs: Any) -> list[Forecast]:
        """Refine gluonts forecasts of ``dataset`` (its entries in the forecasts' order; the
        context of each is its target before the forecast's start) with this model's
        implicit density (TSDiff Sec. 4.2; defaults: Langevin refinement tied to each base
        sample, which keeps the forecast's spread; ``refine_kwargs`` as
        :func:`~polydiff.timeseries.tsdiff.refine.refine`).

        ``SampleForecast`` -> ``SampleForecast`` (the same number of samples);
        ``QuantileForecast`` -> ``QuantileForecast`` (the same keys; each row refined like a
        sample, then the quantile rows sorted so they stay monotone); any other forecast with
        ``to_sample_forecast`` (e.g. gluonts' ``DistributionForecast``) -> ``SampleForecast``
        of ``num_samples`` draws."""
        forecasts, entries = list(forecasts), list(dataset)
        if len(forecasts) != len(entries):
            raise ValueError(f"{len(forecasts)} forecasts for {len(entries)} dataset entries")
        h = self.model.config.prediction_length
        contexts, bases, kinds = [], [], []
        for i, (f, e) in enumerate(zip(forecasts, entries, strict=True)):
            if isinstance(f, QuantileForecast):
                arr, kind = np.asarray(f.forecast_array, dtype=np.float64), "quantile"
            elif isinstance(f, SampleForecast):
                arr, kind = np.asarray(f.samples, dtype=np.float64), "sample"
            elif hasattr(f, "to_sample_forecast"):
                f = forecasts[i] = f.to_sample_forecast(self.prediction_net.num_samples)
                arr, kind = np.asarray(f.samples, dtype=np.float64), "sample"
            else:
                raise TypeError(f"cannot refine a {type(f).__name__}")
            if arr.ndim != 2 or arr.shape[-1] != h:
                raise ValueError(f"forecast {i} has shape {arr.shape}; this model refines "
                                 f"univariate forecasts of {h} steps")
            contexts.append(_context_before(e, f.start_date))
            bases.append(arr)
            kinds.append(kind)
        fc = TSDiffForecaster(self.model, num_samples=1, batch_size=4)
        out: list[Forecast] = []
        # forecasts with the same number of rows are refined together
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(bases):
            groups.setdefault(len(b), []).append(i)
        refined: dict[int, np.ndarray] = {}
        for idx in groups.values():
            res = fc.refine([contexts[i] for i in idx], np.stack([bases[i] for i in idx]),
                            seed=seed, **refine_kwargs)
            refined.update(zip(idx, res, strict=True))
        for i, f in enumerate(forecasts):
            r = refined[i]
            if kinds[i] == "quantile":
                keys = list(f.forecast_keys)
                numeric = [j for j, k in enumerate(keys) if _is_level(k)]
                order = sorted(numeric, key=lambda j: float(keys[j]))
                r = r.copy()
                r[order] = np.sort(r[order], axis=0)  # monotone rearrangement
                out.append(QuantileForecast(r.astype(np.float32), f.start_date, keys,
                                            item_id=f.item_id, info=f.info))
            else:
                out.append(SampleForecast(r.astype(np.float32), f.start_date,
                                          item_id=f.item_id, info=f.info))
        return out

    def serialize(self, path: Path) -> None:
        """Write ``gluonts-config.json`` (the type, for ``Predictor.deserialize``),
        ``tsdiff-predictor.json`` (forecast settings) and ``model/`` (config + safetensors)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        Predictor.serialize(self, path)
        settings = {**self.forecast_settings, "device": str(self.device)}
        (path / "tsdiff-predictor.json").write_text(json.dumps(settings, indent=2) + "\n")
        self.model.save_pretrained(path / "model")

    @classmethod
    def deserialize(cls, path: Path, device: str | torch.device | None = None
                    ) -> TSDiffPredictor:  # type: ignore[override]
        """The predictor :meth:`serialize` wrote (``device`` overrides the stored one)."""
        path = Path(path)
        settings = json.loads((path / "tsdiff-predictor.json").read_text())
        stored = settings.pop("device", "cpu")
        dev = str(device) if device is not None else stored
        model = TSDiffModel.from_pretrained(path / "model", map_location="cpu")
        return make_predictor(model, device=dev if dev != "auto" else "cpu", **settings)


def _is_level(key: str) -> bool:
    try:
        return 0.0 < float(key) < 1.0
    except ValueError:
        return False


def _context_before(entry: dict[str, Any], start: Any) -> np.ndarray:
    """The entry's target before ``start`` (all of it when ``start`` is at or after its
    end)."""
    target = np.asarray(entry[FieldName.TARGET], dtype=np.float64)
    if target.ndim != 1:
        raise ValueError(f"only univariate series can be refined, got a target of shape "
                         f"{target.shape}")
    entry_start = entry[FieldName.START]
    try:
        offset = (start - entry_start).n
    except (AttributeError, TypeError, ValueError):
        offset = len(target)
    if offset <= 0:
        raise ValueError(f"the forecast starting at {start} begins before its series "
                         f"({entry_start})")
    return target[: min(offset, len(target))]


class RefinedPredictor(Predictor):
    """Any gluonts predictor whose forecasts are refined by a TSDiff model (TSDiff Sec. 4.2):
    ``RefinedPredictor(base_predictor, tsdiff).predict(dataset)`` yields the base predictor's
    forecasts after :meth:`TSDiffPredictor.refine` (same forecast types).

    Args:
        base: the gluonts predictor whose forecasts are refined.
        tsdiff: a :class:`TSDiffPredictor` or a trained :class:`TSDiffModel` (with the same
            prediction length as ``base``).
        seed, refine_kwargs: passed to :meth:`TSDiffPredictor.refine`.
    """

    def __init__(self, base: Predictor, tsdiff: TSDiffPredictor | TSDiffModel, *,
                 seed: int | None = 0, **refine_kwargs: Any) -> None:
        pred = tsdiff if isinstance(tsdiff, TSDiffPredictor) else make_predictor(tsdiff)
        if pred.prediction_length != base.prediction_length:
            raise ValueError(f"the TSDiff model forecasts {pred.prediction_length} steps, the "
                             f"base predictor {base.prediction_length}")
        super().__init__(base.prediction_length, lead_time=getattr(base, "lead_time", 0))
        self.base, self.tsdiff, self.seed = base, pred, seed
        self.refine_kwargs = refine_kwargs

    def predict(self, dataset: Dataset, **kwargs: Any) -> Iterator[Forecast]:
        entries = list(dataset)
        forecasts = list(self.base.predict(entries, **kwargs))
        yield from self.tsdiff.refine(forecasts, entries, seed=self.seed, **self.refine_kwargs)


def make_predictor(model: TSDiffModel | TSDiffLightningModule, *, num_samples: int = 100,
                   batch_size: int = 32, device: str = "cpu", freq: str | None = None,
                   **forecast_kwargs: Any) -> TSDiffPredictor:
    """A :class:`TSDiffPredictor` for a trained model (``forecast_kwargs``: ``guidance``,
    ``scale``, ``spread``, ``sampler``, ``steps``, ``seed``, ... of the self-guided forecast;
    those not given come from the defaults table for ``freq``, default its hourly row)."""
    table = defaults_for(freq or "h").forecast_kwargs()
    if forecast_kwargs.get("sampler", table["sampler"]) != "ddim":
        table["steps"] = None
    forecast_kwargs = {**table, **forecast_kwargs}
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
    return TSDiffPredictor(
        input_transform=_transformation() + _splitter(cfg, "test"),
        input_names=PREDICTION_INPUT_NAMES, prediction_net=module,
        forecast_generator=SampleForecastGenerator(), batch_size=batch_size,
        prediction_length=cfg.prediction_length, device=device)


class TSDiffEstimator(PyTorchLightningEstimator):
    """Train TSDiff the gluonts way: ``TSDiffEstimator(freq, prediction_length).train(data)``
    returns a :class:`TSDiffPredictor` of self-guided sample forecasts.

    Every argument left at ``None`` comes from the defaults table for ``freq``
    (:func:`~polydiff.timeseries.tsdiff.defaults.defaults_for`; the ``tsdiff`` command reads
    the same table).

    Args:
        freq: the data's pandas frequency.
        prediction_length: forecast horizon ``H`` (default: the table's, e.g. 24 hourly).
        context_length: context ``C`` (default: the table's, at least ``2 H``).
        lags: seasonal lags (default: the table's, e.g. 1, 2 and 7 days for hourly data).
        preset: network size, ``"tiny"``, ``"small"`` (default) or ``"paper"``; ``config``
            overrides everything above with a full :class:`TSDiffConfig`.
        lr: Adam learning rate; batch_size: training windows per step;
        train_steps: optimizer steps (default: the table's), run as
            ``ceil(train_steps / num_batches_per_epoch)`` Lightning epochs.
        trainer_kwargs: for ``lightning.Trainer`` (defaults: those epochs,
            ``gradient_clip_val=0.5``, CPU/GPU auto, no logger, no progress bar, checkpoints in a
            temporary folder unless ``default_root_dir`` is given).
        num_samples, guidance, scale, spread, sampler, sampling_steps, seed: the self-guided
            forecast (defaults: 100 samples, quantile guidance, the table's scale and spread
            recalibration, guided DDIM, 20 steps).
        train_sampler, validation_sampler: gluonts instance samplers.
    """

    trainer_kwargs: dict[str, Any]  # set by gluonts' __init__

    def __init__(self, freq: str, prediction_length: int | None = None,
                 context_length: int | None = None, lags: Iterable[int] | None = None,
                 preset: str | None = None, config: TSDiffConfig | None = None,
                 lr: float | None = None, batch_size: int | None = None,
                 num_batches_per_epoch: int = 50, train_steps: int | None = None,
                 trainer_kwargs: dict[str, Any] | None = None, num_samples: int | None = None,
                 guidance: str | None = None, scale: float | None = None,
                 spread: float | None = None, sampler: str | None = None,
                 sampling_steps: int | None = None, seed: int = 0,
                 forecast_batch_size: int = 32, train_sampler: Any = None,
                 validation_sampler: Any = None) -> None:
        d = defaults_for(freq)
        self.defaults = d
        self.config = config if config is not None else d.config(
            prediction_length, context_length, None if lags is None else tuple(lags), preset)
        if prediction_length is not None and self.config.prediction_length != prediction_length:
            raise ValueError(f"config.prediction_length={self.config.prediction_length} != "
                             f"prediction_length={prediction_length}")
        self.train_steps = int(train_steps or d.train_steps)
        self.num_batches_per_epoch = int(num_batches_per_epoch)
        kwargs = {"max_epochs": math.ceil(self.train_steps / self.num_batches_per_epoch),
                  "gradient_clip_val": 0.5, "enable_progress_bar": False,
                  "enable_model_summary": False, "logger": False}
        kwargs.update(trainer_kwargs or {})
        super().__init__(trainer_kwargs=kwargs)
        self.freq = freq
        self.prediction_length = self.config.prediction_length
        self.lr = float(lr if lr is not None else d.lr)
        self.batch_size = int(batch_size or d.batch_size)
        self.num_samples = int(num_samples or d.num_samples)
        self.forecast_batch_size = int(forecast_batch_size)
        self.forecast_kwargs: dict[str, Any] = dict(
            guidance=guidance or d.guidance, scale=float(scale if scale is not None else d.scale),
            spread=float(spread if spread is not None else d.spread),
            sampler=sampler or d.sampler,
            steps=sampling_steps if sampling_steps is not None else (
                d.sampling_steps if (sampler or d.sampler) == "ddim" else None),
            seed=seed)
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
                         module: TSDiffLightningModule) -> TSDiffPredictor:
        return make_predictor(module, num_samples=self.num_samples,
                              batch_size=self.forecast_batch_size, **self.forecast_kwargs)

    def train_model(self, *args: Any, **kwargs: Any) -> TrainOutput:
        """gluonts' training, without side effects: Lightning's checkpoints go to a temporary
        folder (removed afterwards) unless ``trainer_kwargs["default_root_dir"]`` is given,
        and Lightning's info lines are off."""
        saved = dict(self.trainer_kwargs)
        with contextlib.ExitStack() as stack:
            if "default_root_dir" not in self.trainer_kwargs:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tsdiff-"))
                self.trainer_kwargs["default_root_dir"] = tmp
            stack.enter_context(quiet_lightning())
            try:
                return super().train_model(*args, **kwargs)
            finally:
                self.trainer_kwargs = saved  # gluonts pops the callbacks from it
