"""Training ProDiff with the engine: the teacher, the regression baseline, the distilled
students and the diffusion vocoder, each through :class:`polydiff.core.training.Trainer`
(EMA, checkpoints, exact resume) and core's losses.

* :func:`acoustic_objective`: FastSpeech 2's variance losses (MSE of ``log(d + 1)``, of the
  per-token pitch and energy) plus, for the diffusion decoder, core's
  :class:`~polydiff.core.losses.DiffusionLoss` (x0 target, plain MSE, uniform ``t`` on
  ProDiff's VP process) over the padded mel frames; for the regression decoder the mel MSE.
  Durations, pitch and energy are teacher-forced.
* :func:`distill_students`: core's :func:`~polydiff.core.distill.distill` from the teacher's
  4-step DDIM grid ``t_i = i / 4`` down to 2 and 1 steps; the encoder and variance adaptor are
  the teacher's, frozen; only the decoder network is distilled (x0 error, as ProDiff).
* :func:`train_vocoder`: core's ``DiffusionLoss`` on random crops of the waves, the mel of the
  same frames as condition.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.losses import DiffusionLoss
from polydiff.speech.prodiff.data import Corpus, PaddedBatches
from polydiff.speech.prodiff.model import DiffVocoder, ProDiffAcoustic

__all__ = ["acoustic_objective", "distill_students", "teacher_grid", "train_acoustic",
           "train_vocoder", "vocoder_objective"]


def teacher_grid(steps: int = 4, device: torch.device | str | None = None) -> Tensor:
    """ProDiff's grid ``t_i = i / N`` from ``t = 1`` down to ``t = 0`` (``sigma = 0``)."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(pred.dtype)
    return ((pred - target).square() * m).sum() / m.sum().clamp_min(1.0)


def variance_loss(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    """FastSpeech 2's duration, pitch and energy losses (token-masked MSE)."""
    mask = batch["mask"]
    dur = _masked_mse(out["log_dur"], torch.log1p(batch["durations"].float()), mask)
    return dur + _masked_mse(out["pitch"], batch["pitch"], mask) + \
        _masked_mse(out["energy"], batch["energy"], mask)


def crop_frames(cond: Tensor, mel: Tensor, frame_mask: Tensor, frames: int | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A random window of ``frames`` frames per sample (inside its valid length) of the
    frame states ``(B, C, T)``, the mel ``(B, n_mels, T)`` and the mask ``(B, T)``: the
    decoder is convolutional, so it trains on windows (``None``: everything)."""
    t = mel.shape[-1]
    if frames is None or t <= frames:
        return cond, mel, frame_mask
    lengths = frame_mask.sum(1)
    room = (lengths - frames).clamp_min(0)
    u = torch.rand(len(lengths), generator=generator, device=mel.device)
    start = torch.floor(u * (room + 1).to(u.dtype)).long().clamp(max=t - frames)
    idx = start[:, None] + torch.arange(frames, device=mel.device)[None]
    mask = idx < lengths[:, None]

    def take(x: Tensor) -> Tensor:
        return torch.gather(x, 2, idx[:, None].expand(-1, x.shape[1], -1))

    return take(cond), take(mel), mask


def acoustic_objective(model: ProDiffAcoustic, segment_frames: int | None = None) -> Any:
    """``objective(model, batch, generator)`` of the teacher or the regression model; the
    decoder sees random windows of ``segment_frames`` frames (``None``: whole utterances)."""
    diff_loss = DiffusionLoss(model.process, target="sample", weighting="uniform")

    def fn(m: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        out = m(batch["ids"], batch["stress"], batch["word_start"], batch["mask"],
                durations=batch["durations"], pitch=batch["pitch"], energy=batch["energy"])
        loss = variance_loss(out, batch)
        cond, mel, fmask = crop_frames(out["cond"], batch["mel"], batch["frame_mask"],
                                       segment_frames, generator)
        fmask = fmask[:, None]
        if m.config.decoder == "regression":
            return loss + _masked_mse(m.regress(cond), mel, fmask.expand_as(mel))
        mel_loss = diff_loss(m.denoiser(), mel, cond={"cond": cond}, mask=fmask,
                             generator=generator)
        return loss + mel_loss

    return fn


def _config(run_dir: str | os.PathLike[str], **kw: Any) -> Any:
    from polydiff.core.training import TrainConfig

    return TrainConfig(run_dir=str(run_dir), **kw)


def train_acoustic(model: ProDiffAcoustic, corpus: Corpus, run_dir: str | os.PathLike[str], *,
                   steps: int = 2000, batch_size: int = 16, lr: float = 1e-3,
                   ema: float | None = 0.995, seed: int = 0, device: str = "cpu",
                   resume: bool = True, log_every: int = 50, ckpt_every: int = 500,
                   progress: bool = True, segment_frames: int | None = None
                   ) -> dict[str, Any]:
    """Train the teacher (or the regression model) with the engine's Trainer; the model ends
    with its EMA weights. Returns the Trainer's summary."""
    from polydiff.core.training import Trainer

    cfg = _config(run_dir, steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema,
                  seed=seed, device=device, log_every=log_every, ckpt_every=ckpt_every,
                  lr_warmup=min(200, steps // 10), grad_clip=1.0, progress=progress,
                  desc=f"prodiff-{model.config.decoder}")
    trainer = Trainer(model, acoustic_objective(model, segment_frames),
                      PaddedBatches(corpus, seed=seed), cfg)
    summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to(model)
    model.eval()
    return summary


class _FrozenFrontEnd:
    """The teacher's encoder and variance adaptor, frozen: frame states for a batch."""

    def __init__(self, model: ProDiffAcoustic):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        dev = batch["ids"].device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        out = self.model(batch["ids"], batch["stress"], batch["word_start"], batch["mask"],
                         durations=batch["durations"], pitch=batch["pitch"],
                         energy=batch["energy"])
        return out["cond"]


def distill_students(model: ProDiffAcoustic, corpus: Corpus, run_dir: str | os.PathLike[str],
                     *, teacher_steps: int = 4, target_steps: int = 1, steps: int = 1000,
                     batch_size: int = 16, lr: float = 2e-4, ema: float | None = 0.995,
                     seed: int = 0, device: str = "cpu", resume: bool = True,
                     log_every: int = 50, ckpt_every: int = 500, progress: bool = True,
                     segment_frames: int | None = None) -> dict[int, nn.Module]:
    """Progressive distillation of the teacher's decoder, ``teacher_steps`` -> ... ->
    ``target_steps`` (core's :func:`~polydiff.core.distill.distill`); returns ``{steps:
    student WaveNet}`` (e.g. ``{2: ..., 1: ...}``). The teacher is left unchanged."""
    from polydiff.core.distill import distill

    frozen = _FrozenFrontEnd(copy.deepcopy(model))
    teacher = ModelDenoiser(frozen.model.net, frozen.model.process, prediction_type="sample")

    def objective(loss: Any) -> Any:
        def fn(student: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
               ) -> Tensor:
            cond, mel, fmask = crop_frames(frozen(batch), batch["mel"], batch["frame_mask"],
                                           segment_frames, generator)
            return loss(student, mel, cond={"cond": cond}, mask=fmask[:, None],
                        generator=generator)
        return fn

    cfg = _config(run_dir, steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema,
                  seed=seed, device=device, log_every=log_every, ckpt_every=ckpt_every,
                  grad_clip=1.0, progress=progress)
    students = distill(teacher, PaddedBatches(corpus, seed=seed), teacher_grid(teacher_steps),
                       target_steps=target_steps, config=cfg, weighting="x0",
                       run_dir=run_dir, resume=resume, objective=objective)
    return {int(s.sampling_grid.numel() - 1): s.model.eval() for s in students}


class _Crops:
    """Random aligned (wave, mel) crops of the corpus for the vocoder (Trainer source)."""

    def __init__(self, corpus: Corpus, frames: int, hop: int, seed: int = 0):
        from polydiff.core.training import IndexedData

        self.items = [it for it in corpus.items if it["mel"].shape[0] > frames]
        if not self.items:
            raise ValueError(f"no utterance is longer than {frames} frames")
        self.frames, self.hop = frames, hop
        self._index = IndexedData(torch.arange(len(self.items)), seed=seed)

    def get(self, positions: Tensor, generator: torch.Generator | None = None
            ) -> dict[str, Tensor]:
        waves, mels = [], []
        for i in self._index.get(positions).tolist():
            it = self.items[i]
            n = min(it["mel"].shape[0], it["wave"].numel() // self.hop) - self.frames
            k = int(torch.randint(0, max(n, 1), (1,), generator=generator))
            waves.append(it["wave"][k * self.hop:(k + self.frames) * self.hop])
            mels.append(it["mel"][k:k + self.frames])
        return {"wave": torch.stack(waves), "logmel": torch.stack(mels)}

    def state_dict(self) -> dict[str, Any]:
        return self._index.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._index.load_state_dict(state)


def vocoder_objective(vocoder: DiffVocoder) -> Any:
    """``objective(vocoder, batch, generator)``: core's DiffusionLoss on the folded wave."""
    loss = DiffusionLoss(vocoder.process, target=vocoder.config.prediction,
                         weighting="uniform")

    def fn(v: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        return loss(v.denoiser(), v.fold(batch["wave"]),
                    cond={"cond": v.cond(batch["logmel"])}, generator=generator)

    return fn


def train_vocoder(vocoder: DiffVocoder, corpus: Corpus, run_dir: str | os.PathLike[str], *,
                  steps: int = 2000, batch_size: int = 16, segment_frames: int = 32,
                  lr: float = 1e-3, ema: float | None = 0.995, seed: int = 0,
                  device: str = "cpu", resume: bool = True, log_every: int = 50,
                  ckpt_every: int = 500, progress: bool = True) -> dict[str, Any]:
    """Train the diffusion vocoder on the corpus's waves (needs ``item["wave"]``)."""
    from polydiff.core.training import Trainer

    cfg = _config(run_dir, steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema,
                  seed=seed, device=device, log_every=log_every, ckpt_every=ckpt_every,
                  lr_warmup=min(200, steps // 10), grad_clip=1.0, progress=progress,
                  desc="prodiff-vocoder")
    data = _Crops(corpus, segment_frames, vocoder.config.hop_length, seed)
    trainer = Trainer(vocoder, vocoder_objective(vocoder), data, cfg)
    summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to(vocoder)
    vocoder.eval()
    return summary


def run_path(run_dir: str | os.PathLike[str], part: str) -> Path:
    """``run_dir/part`` (the sub-run of one model of a voice)."""
    return Path(run_dir) / part
