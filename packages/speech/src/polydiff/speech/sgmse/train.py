"""Training SGMSE+ and its predictive baseline with polydiff-core's training loop.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+), Sec. V-B: Adam at learning rate 1e-4, an
exponential moving average of the weights with decay 0.999, batches of 2.04 s segments (256
STFT frames) normalised by the noisy peak, ``t ~ U[t_eps, T]`` per example.

The loop is core's :class:`~polydiff.core.training.Trainer` (AdamW with zero weight decay is
Adam; EMA with core's power warm-up, capped at ``ema``; clipping at global norm 1 by
default; exact resume from ``<out_dir>/checkpoints``); data come from
:class:`~polydiff.speech.data.PairedAudioDataset` through its ``sample(positions)`` method, so
every epoch visits each pair once with fresh crops and the order is a function of the seed.
The objective is the model's own :meth:`~.model.SGMSE.wave_loss`. At the end the EMA weights
are exported with core's hub to ``<out_dir>/model`` (``config.json`` + ``model.safetensors``),
ready for ``SGMSE.from_pretrained``.

``data_root`` may also be a real-speech corpus (:mod:`polydiff.speech.realcorpus`): its
training pairs are then mixed on the fly on the training device
(:class:`~polydiff.speech.realcorpus.MixingSource`).

``time_budget`` (seconds) stops a run at a wall-clock deadline (the run's start, compile
warm-up included, plus the budget): the step reached is checkpointed, logged and returned in
the summary (``stopped_early``, ``step``); ``resume`` continues it towards ``steps``.
``compile`` runs the U-Net backbone through :func:`polydiff.gpu.maybe_compile` (eager
fallback; the complex spectrogram code around it stays eager; weights and checkpoints are
unchanged).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.core.nn.hub import config_to_dict, save_pretrained
from polydiff.core.training import SampledData, TrainConfig, Trainer
from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive

__all__ = ["DeadlineStop", "TrainResult", "wave_objective", "make_trainer", "train_sgmse",
           "train_predictive", "export_weights"]

MODEL_DIR = "model"


@dataclass
class TrainResult:
    """Where a training run left its results."""

    run_dir: Path           #: the run directory (config.json, stats.jsonl, log.txt, checkpoints/)
    weights: Path           #: the exported (EMA) model directory, for ``from_pretrained``
    summary: dict[str, Any]  #: the Trainer's summary (final step, loss, skipped steps)


def wave_objective(model: SGMSE | SGMSEPredictive, batch: Any,
                   generator: torch.Generator) -> Tensor:
    """Core-Trainer objective: ``batch`` is ``(clean, noisy)`` waves ``(B, T)`` (a tuple or
    list, or a mapping with ``"clean"`` and ``"noisy"``)."""
    if isinstance(batch, Mapping):
        clean, noisy = batch["clean"], batch["noisy"]
    else:
        clean, noisy = batch
    return model.wave_loss(clean, noisy, generator=generator)


class DeadlineStop:
    """Trainer callback: end the run once ``time.perf_counter()`` passes ``deadline`` (the
    step just taken is the last; it is logged to ``stats.jsonl`` and checkpointed)."""

    def __init__(self, deadline: float):
        self.deadline = float(deadline)
        self.stopped_at: int | None = None

    def __call__(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.stopped_at is not None or time.perf_counter() < self.deadline:
            return
        if trainer.step >= trainer.config.steps:
            return
        self.stopped_at = trainer.step
        trainer.config.steps = trainer.step  # the loop ends after this step
        if trainer.run is not None:
            trainer.run.append_stats({"step": trainer.step, "lr": record.get("lr"),
                                      "skipped": int(bool(record.get("skipped"))),
                                      "skipped_total": trainer.skipped,
                                      "loss": record.get("loss"),
                                      "grad_norm": record.get("grad_norm"),
                                      "note": "time budget reached"})
            trainer.run.log(f"time budget reached at step {trainer.step}")
        trainer.save_checkpoint()


def export_weights(trainer: Trainer, directory: str | os.PathLike[str]) -> Path:
    """Save the trained model (its EMA weights where the run keeps an EMA) with core's hub."""
    model = trainer.model
    out = copy.deepcopy(model)
    if trainer.ema is not None:
        trainer.ema.copy_to(out)
    return save_pretrained(out.cpu(), directory)


def make_trainer(model: SGMSE | SGMSEPredictive, data: Any, out_dir: str | os.PathLike[str],
                 *, steps: int, batch_size: int = 8, lr: float = 1e-4,
                 ema: float | None = 0.999, device: str = "auto", seed: int = 0,
                 progress: bool = True, log_every: int = 50, ckpt_every: int = 500,
                 grad_clip: float | None = 1.0, precision: str = "fp32",
                 callbacks: Sequence[Callable[..., None]] = (),
                 extra: dict[str, Any] | None = None) -> Trainer:
    """A core :class:`~polydiff.core.training.Trainer` for ``model`` on ``data`` (any
    Trainer data source yielding ``(clean, noisy)`` wave batches) writing to ``out_dir``."""
    if not isinstance(model, SGMSE | SGMSEPredictive):
        raise TypeError(f"expected an SGMSE or SGMSEPredictive model, got {type(model).__name__}")
    desc = "sgmse" if isinstance(model, SGMSE) else "sgmse-predictive"
    cfg = TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0, grad_clip=grad_clip,
        ema_decay=ema or None, seed=seed, device=device, precision=precision,
        log_every=log_every, ckpt_every=ckpt_every, run_dir=str(out_dir), desc=desc,
        progress=progress,
        extra={"model_class": type(model).__name__, "model": config_to_dict(model.config),
               **(extra or {})})
    return Trainer(model, wave_objective, data, cfg, callbacks=callbacks)


def training_data(model: SGMSE | SGMSEPredictive, data_root: str | os.PathLike[str], *,
                  split: str = "train", layout: str = "auto", segment_frames: int = 256,
                  seed: int = 0, cache: bool = True) -> tuple[Any, dict[str, Any]]:
    """The training data source of ``data_root`` for ``model`` (paired folders, or a
    real-speech corpus mixed on the fly) and a description for the run's config."""
    from polydiff.speech.realcorpus import MixingSource, is_real_corpus

    spec = model.representation.config
    if is_real_corpus(data_root):
        if split != "train":
            raise ValueError(f"a real-speech corpus trains on its 'train' speakers; got split "
                             f"{split!r}")
        src = MixingSource(data_root, segment_length=(segment_frames - 1) * spec.hop_length,
                           sample_rate=spec.sample_rate, seed=seed)
        return SampledData(src.sample), {"data_root": str(data_root), "split": split,
                                         "data": repr(src), "segment_frames": segment_frames}
    from polydiff.speech.data import PairedAudioDataset

    ds = PairedAudioDataset(data_root, split, layout=layout, sample_rate=spec.sample_rate,
                            segment_frames=segment_frames, hop_length=spec.hop_length,
                            seed=seed, cache=cache)
    return SampledData(ds.sample), {"data_root": str(data_root), "split": split,
                                    "pairs": len(ds), "segment_frames": segment_frames}


def _train(model: SGMSE | SGMSEPredictive, data_root: str | os.PathLike[str],
           out_dir: str | os.PathLike[str], *, steps: int, batch_size: int, lr: float,
           ema: float | None, device: str, resume: bool, progress: bool, seed: int,
           split: str, layout: str, segment_frames: int, cache: bool,
           time_budget: float | None = None, compile: bool = False,
           **trainer_kw: Any) -> TrainResult:
    start = time.perf_counter()
    predictive = trainer_kw.pop("predictive", None)
    if isinstance(model, SGMSE) and model.config.center == "predictive":
        if predictive is None and model.predictive is None:
            raise ValueError("a center='predictive' SGMSE model trains on a predictive "
                             "model's estimates: pass predictive=...")
        if predictive is not None:
            model.attach_predictive(predictive)
    data, extra = training_data(model, data_root, split=split, layout=layout,
                                segment_frames=segment_frames, seed=seed, cache=cache)
    callbacks = list(trainer_kw.pop("callbacks", ()))
    stop = None
    if time_budget is not None:
        if not time_budget > 0:
            raise ValueError(f"time_budget must be positive seconds, got {time_budget}")
        stop = DeadlineStop(start + float(time_budget))
        callbacks.append(stop)
        extra["time_budget"] = float(time_budget)
    trainer = make_trainer(model, data, out_dir, steps=steps, batch_size=batch_size, lr=lr,
                           ema=ema, device=device, seed=seed, progress=progress, extra=extra,
                           callbacks=callbacks, **trainer_kw)
    if compile:
        model.net.compile_backbone()
    try:
        summary = trainer.fit(resume=resume)
    finally:
        model.net.compile_backbone(False)
        if stop is not None and stop.stopped_at is not None:
            trainer.config.steps = steps  # a resumed run continues towards ``steps``
    summary["stopped_early"] = stop is not None and stop.stopped_at is not None
    summary["seconds"] = round(time.perf_counter() - start, 3)
    weights = export_weights(trainer, Path(out_dir) / MODEL_DIR)
    return TrainResult(run_dir=Path(trainer.run_dir), weights=weights, summary=summary)


def train_sgmse(model: SGMSE, data_root: str | os.PathLike[str],
                out_dir: str | os.PathLike[str], *, steps: int, batch_size: int = 8,
                lr: float = 1e-4, ema: float | None = 0.999, device: str = "auto",
                resume: bool = True, progress: bool = True, seed: int = 0,
                split: str = "train", layout: str = "auto", segment_frames: int = 256,
                cache: bool = True, **trainer_kw: Any) -> TrainResult:
    """Train an :class:`~.model.SGMSE` on the paired folders under ``data_root`` (see
    :mod:`polydiff.speech.data` for the layouts) for ``steps`` optimizer steps, writing
    the run to ``out_dir`` (resumed from its latest checkpoint with ``resume``).

    ``trainer_kw``: ``log_every``, ``ckpt_every``, ``grad_clip``, ``precision``,
    ``callbacks`` (see :func:`make_trainer`), ``time_budget`` (seconds), ``compile``,
    ``predictive`` (the frozen predictive model of a ``center="predictive"`` model).
    Returns a :class:`TrainResult`; the model passed in holds the final (non-EMA) weights.
    """
    if not isinstance(model, SGMSE):
        raise TypeError(f"train_sgmse needs an SGMSE model, got {type(model).__name__}")
    return _train(model, data_root, out_dir, steps=steps, batch_size=batch_size, lr=lr,
                  ema=ema, device=device, resume=resume, progress=progress, seed=seed,
                  split=split, layout=layout, segment_frames=segment_frames, cache=cache,
                  **trainer_kw)


def train_predictive(model: SGMSEPredictive, data_root: str | os.PathLike[str],
                     out_dir: str | os.PathLike[str], *, steps: int, batch_size: int = 8,
                     lr: float = 1e-4, ema: float | None = 0.999, device: str = "auto",
                     resume: bool = True, progress: bool = True, seed: int = 0,
                     split: str = "train", layout: str = "auto", segment_frames: int = 256,
                     cache: bool = True, **trainer_kw: Any) -> TrainResult:
    """Train the predictive baseline (:class:`~.model.SGMSEPredictive`); as
    :func:`train_sgmse`."""
    if not isinstance(model, SGMSEPredictive):
        raise TypeError(f"train_predictive needs an SGMSEPredictive model, got "
                        f"{type(model).__name__}")
    return _train(model, data_root, out_dir, steps=steps, batch_size=batch_size, lr=lr,
                  ema=ema, device=device, resume=resume, progress=progress, seed=seed,
                  split=split, layout=layout, segment_frames=segment_frames, cache=cache,
                  **trainer_kw)
