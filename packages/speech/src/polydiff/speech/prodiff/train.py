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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.losses import DiffusionLoss
from polydiff.speech.prodiff.data import Corpus, PaddedBatches
from polydiff.speech.prodiff.model import DiffVocoder, ProDiffAcoustic

__all__ = ["TEACHER_TIMES", "DistillSettings", "TrainSettings", "acoustic_objective",
           "distill_students", "teacher_grid", "train_acoustic", "train_vocoder",
           "vocoder_objective"]

#: How the teacher draws its training times: ``uniform`` on ``(0, 1]`` (a model for any grid,
#: the 50-step DDPM baseline included) or ``grid``, only the times ``i / 4`` of the 4-step
#: grid it samples on (ProDiff trains its teacher as a 4-step diffusion model).
TEACHER_TIMES = ("uniform", "grid")


@dataclass
class TrainSettings:
    """The budget and bookkeeping of one training run (the engine's
    :class:`~polydiff.core.training.TrainConfig` is made from it): optimizer ``steps``,
    ``batch_size``, ``lr`` (linear warm-up over ``min(200, steps / 10)`` steps), EMA decay
    (``None``: none), ``seed``, ``device``, logging and checkpoint periods, a progress bar,
    and ``segment_frames``: the decoder trains on random windows of that many frames
    (``None``: whole utterances; the vocoder's crop length, default 32 there)."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    ema: float | None = 0.995
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    ckpt_every: int = 500
    progress: bool = True
    segment_frames: int | None = None

    def train_config(self, run_dir: str | os.PathLike[str], desc: str, *,
                     warmup: bool = True) -> Any:
        from polydiff.core.training import TrainConfig

        return TrainConfig(run_dir=str(run_dir), steps=self.steps, batch_size=self.batch_size,
                           lr=self.lr, ema_decay=self.ema, seed=self.seed, device=self.device,
                           log_every=self.log_every, ckpt_every=self.ckpt_every,
                           lr_warmup=min(200, self.steps // 10) if warmup else 0,
                           grad_clip=1.0, progress=self.progress, desc=desc)


@dataclass
class DistillSettings(TrainSettings):
    """:class:`TrainSettings` of each distillation round (``steps`` per round) plus the
    rounds: the teacher's ``teacher_steps`` grid halved down to ``target_steps``, and the
    weighting of core's :class:`~polydiff.core.distill.ProgressiveDistillationLoss`."""

    steps: int = 1000
    lr: float = 2e-4
    teacher_steps: int = 4
    target_steps: int = 1
    weighting: str = "x0"


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


def _grid_times(n: int, steps: int, generator: torch.Generator | None, device: torch.device
                ) -> Tensor:
    """``n`` training times drawn uniformly from ``{1/steps, ..., 1}`` (float64)."""
    i = torch.randint(1, steps + 1, (n,), generator=generator, device=device)
    return i.double() / steps


def acoustic_objective(model: ProDiffAcoustic, segment_frames: int | None = None,
                       times: str = "uniform") -> Any:
    """``objective(model, batch, generator)`` of the teacher or the regression model; the
    decoder sees random windows of ``segment_frames`` frames (``None``: whole utterances)
    at training times drawn by ``times`` (:data:`TEACHER_TIMES`)."""
    if times not in TEACHER_TIMES:
        raise ValueError(f"unknown teacher times {times!r}; choose from {TEACHER_TIMES}")
    diff_loss = DiffusionLoss(model.process, target="sample", weighting="uniform")

    def fn(m: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        m = cast(ProDiffAcoustic, m)
        out = m(batch["ids"], batch["stress"], batch["word_start"], batch["mask"],
                durations=batch["durations"], pitch=batch["pitch"], energy=batch["energy"])
        loss = variance_loss(out, batch)
        cond, mel, fmask = crop_frames(out["cond"], batch["mel"], batch["frame_mask"],
                                       segment_frames, generator)
        fmask = fmask[:, None]
        if m.config.decoder == "regression":
            return loss + _masked_mse(m.regress(cond), mel, fmask.expand_as(mel))
        t = _grid_times(len(mel), 4, generator, mel.device) if times == "grid" else None
        mel_loss = diff_loss(m.denoiser(), mel, cond={"cond": cond}, mask=fmask, t=t,
                             generator=generator)
        return loss + mel_loss

    return fn


def train_acoustic(model: ProDiffAcoustic, corpus: Corpus, run_dir: str | os.PathLike[str],
                   settings: TrainSettings | None = None, *, resume: bool = True,
                   times: str = "uniform") -> dict[str, Any]:
    """Train the teacher (or the regression model) with the engine's Trainer (``times``: the
    teacher's training times, :data:`TEACHER_TIMES`); the model ends with its EMA weights.
    Returns the Trainer's summary."""
    from polydiff.core.training import Trainer

    st = settings or TrainSettings()
    cfg = st.train_config(run_dir, f"prodiff-{model.config.decoder}")
    trainer = Trainer(model, acoustic_objective(model, st.segment_frames, times),
                      PaddedBatches(corpus, seed=st.seed), cfg)
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
                     settings: DistillSettings | None = None, *, resume: bool = True
                     ) -> dict[int, nn.Module]:
    """Progressive distillation of the teacher's decoder, ``settings.teacher_steps`` -> ...
    -> ``settings.target_steps`` (core's :func:`~polydiff.core.distill.distill`); returns
    ``{steps: student WaveNet}`` (e.g. ``{2: ..., 1: ...}``). The teacher is left
    unchanged."""
    from polydiff.core.distill import distill

    st = settings or DistillSettings()
    frozen = _FrozenFrontEnd(copy.deepcopy(model))
    teacher = ModelDenoiser(frozen.model.net, frozen.model.process, prediction_type="sample")

    def objective(loss: Any) -> Any:
        def fn(student: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
               ) -> Tensor:
            cond, mel, fmask = crop_frames(frozen(batch), batch["mel"], batch["frame_mask"],
                                           st.segment_frames, generator)
            return loss(student, mel, cond={"cond": cond}, mask=fmask[:, None],
                        generator=generator)
        return fn

    cfg = st.train_config(run_dir, "prodiff-distill", warmup=False)
    students = distill(teacher, PaddedBatches(corpus, seed=st.seed),
                       teacher_grid(st.teacher_steps), target_steps=st.target_steps, config=cfg,
                       weighting=st.weighting, run_dir=Path(run_dir), resume=resume,
                       objective=objective)
    out: dict[int, nn.Module] = {}
    for k, s in enumerate(students, 1):  # each round halves the steps
        net = s.model if isinstance(s, ModelDenoiser) else None
        if not isinstance(net, nn.Module):
            raise TypeError("a student of the teacher's ModelDenoiser wraps a network")
        out[st.teacher_steps >> k] = net.eval()
    return out


class _Crops:
    """Random aligned (wave, mel) crops of the corpus for the vocoder (Trainer source); with
    ``gl`` (a function of a ``(1, frames, n_mels)`` log-mel), also the crops of the
    Griffin-Lim wave of each utterance's mel, computed once here."""

    def __init__(self, corpus: Corpus, frames: int, hop: int, seed: int = 0,
                 gl: Any = None):
        from polydiff.core.training import IndexedData

        self.items = [it for it in corpus.items if it["mel"].shape[0] > frames]
        if not self.items:
            raise ValueError(f"no utterance is longer than {frames} frames")
        self.frames, self.hop = frames, hop
        self.gl = None if gl is None else [gl(it["mel"][None])[0] for it in self.items]
        self._index = IndexedData(torch.arange(len(self.items)), seed=seed)

    def get(self, positions: Tensor, generator: torch.Generator | None = None
            ) -> dict[str, Tensor]:
        waves, mels, gls = [], [], []
        span = self.frames * self.hop
        for i in self._index.get(positions).tolist():
            it = self.items[i]
            n = min(it["mel"].shape[0], it["wave"].numel() // self.hop) - self.frames
            k = int(torch.randint(0, max(n, 1), (1,), generator=generator))
            waves.append(it["wave"][k * self.hop:k * self.hop + span])
            mels.append(it["mel"][k:k + self.frames])
            if self.gl is not None:
                gls.append(self.gl[i][k * self.hop:k * self.hop + span])
        out = {"wave": torch.stack(waves), "logmel": torch.stack(mels)}
        if gls:
            out["gl"] = torch.stack(gls)
        return out

    def state_dict(self) -> dict[str, Any]:
        return self._index.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._index.load_state_dict(state)


def vocoder_objective(vocoder: DiffVocoder) -> Any:
    """``objective(vocoder, batch, generator)``: core's DiffusionLoss on the folded wave."""
    loss = DiffusionLoss(vocoder.process, target=vocoder.config.prediction,
                         weighting="uniform")

    def fn(v: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        v = cast(DiffVocoder, v)
        return loss(v.denoiser(), v.fold(batch["wave"]),
                    cond={"cond": v.cond(batch["logmel"], batch.get("gl"))},
                    generator=generator)

    return fn


def train_vocoder(vocoder: DiffVocoder, corpus: Corpus, run_dir: str | os.PathLike[str],
                  settings: TrainSettings | None = None, *, resume: bool = True
                  ) -> dict[str, Any]:
    """Train the diffusion vocoder on the corpus's waves (needs ``item["wave"]``), on random
    crops of ``settings.segment_frames`` frames (default 32)."""
    from polydiff.core.training import Trainer

    st = settings or TrainSettings()
    frames = st.segment_frames or 32
    cfg = st.train_config(run_dir, "prodiff-vocoder")
    gl = vocoder.griffin_lim if vocoder.config.condition == "mel+gl" else None
    data = _Crops(corpus, frames, vocoder.config.hop_length, st.seed, gl)
    trainer = Trainer(vocoder, vocoder_objective(vocoder), data, cfg)
    summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to(vocoder)
    vocoder.eval()
    return summary


def run_path(run_dir: str | os.PathLike[str], part: str) -> Path:
    """``run_dir/part`` (the sub-run of one model of a voice)."""
    return Path(run_dir) / part
