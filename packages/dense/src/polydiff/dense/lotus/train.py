"""Training Lotus with the engine: the image prior, then the dense predictor of one variant.

Both stages are runs of :class:`polydiff.core.training.Trainer` (AdamW, EMA, exact resume).
Every batch is drawn afresh from the step's generator, so a run is a function of its seed:

* ``prior``: an unconditional :class:`~.model.LotusNet` on core's
  :class:`~polydiff.core.losses.DiffusionLoss` (noise prediction, uniform times) over random
  crops of the bundled training photographs (random size, flips and a random colour tint;
  :class:`PhotoCrops`) -- the stand-in for a large text-to-image prior;
* ``predictor``: the adapted network (:func:`~.model.adapt_prior`; random weights for
  ``regression``) on rendered training scenes (:class:`SceneSource`) with the loss of its
  variant (:func:`variant_loss`): ``eps`` / ``x0`` are core's DiffusionLoss with the
  ``epsilon`` / ``sample`` target over all times; ``g`` is the ``sample`` target at the fixed
  time ``T``; ``d`` and ``regression`` the MSE of the prediction from a zero input at ``T``.
  With the detail preserver every batch is doubled: the annotation task (0) and the
  reconstruction of the input image (1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.losses import DiffusionLoss
from polydiff.core.training import TrainConfig, Trainer
from polydiff.dense.data import photo_tensors
from polydiff.dense.lotus.model import (
    TASKS,
    VARIANTS,
    LotusNet,
    LotusNetConfig,
    adapt_prior,
    depth_target,
    normal_target,
    process,
)
from polydiff.dense.lotus.scenes import SPLIT_SEEDS, render_batch, render_scene, split_textures

__all__ = ["LotusSettings", "PhotoCrops", "SceneSource", "variant_loss", "train_prior",
           "train_predictor", "target_of"]


@dataclass
class LotusSettings:
    """One training.

    Attributes:
        task: ``depth`` or ``normal``; variant: one of :data:`~.model.VARIANTS`;
        detail_preserver: add the reconstruction task (ignored for ``regression``).
        steps, batch_size, lr: the predictor's optimisation (AdamW, EMA ``ema_decay``).
        prior_steps, prior_batch_size, prior_lr: the image prior's.
        size: square training size (a multiple of 4); seed: the run's seed.
        net: the network's widths (the prior has the same, without the image channels).
    """

    task: str = "depth"
    variant: str = "d"
    detail_preserver: bool = True
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    prior_steps: int = 500
    prior_batch_size: int = 8
    prior_lr: float = 1e-3
    size: int = 64
    seed: int = 0
    ema_decay: float = 0.99
    net: LotusNetConfig = dataclasses.field(default_factory=LotusNetConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.size % 4 or self.size < 16:
            raise ValueError(f"size must be a multiple of 4 and >= 16, got {self.size}")
        if min(self.steps, self.batch_size, self.prior_batch_size) < 1 or self.prior_steps < 0:
            raise ValueError("steps and batch sizes must be >= 1 (prior_steps >= 0)")
        if isinstance(self.net, dict):
            self.net = LotusNetConfig(**self.net)

    @property
    def uses_prior(self) -> bool:
        return self.variant != "regression"

    @property
    def preserves_detail(self) -> bool:
        return self.detail_preserver and self.variant != "regression"

    def predictor_config(self) -> LotusNetConfig:
        return dataclasses.replace(self.net, image_channels=self.net.channels,
                                   tasks=2 if self.preserves_detail else 0)

    def prior_config(self) -> LotusNetConfig:
        return dataclasses.replace(self.net, image_channels=0, tasks=0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LotusSettings:
        return cls(**dict(d))


def _tint(gen: torch.Generator, b: int) -> Tensor:
    """Random per-image colours (RGB multipliers in about [0.4, 1])."""
    base = 0.55 + 0.45 * torch.rand(b, 1, 1, 1, generator=gen)
    return (base * (1 - 0.5 * torch.rand(b, 3, 1, 1, generator=gen))).clamp(0, 1)


class PhotoCrops:
    """Random crops of the training photographs as the engine reads them: a side of 1 to 3
    times ``size`` resized to ``size``, random flips and a colour tint; ``x0`` in [-1, 1]."""

    def __init__(self, size: int):
        self.photos = photo_tensors("train")
        self.size = size

    def get(self, positions: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=generator)))
        out = []
        for _ in range(len(positions)):
            img = self.photos[int(torch.randint(len(self.photos), (), generator=gen))]
            h, w = img.shape[-2:]
            side = int(torch.randint(self.size, min(h, w, 3 * self.size) + 1, (),
                                     generator=gen))
            y = int(torch.randint(h - side + 1, (), generator=gen))
            x = int(torch.randint(w - side + 1, (), generator=gen))
            crop = img[None, :, y:y + side, x:x + side]
            crop = F.interpolate(crop, size=(self.size, self.size), mode="area")
            if bool(torch.rand((), generator=gen) < 0.5):
                crop = crop.flip(-1)
            out.append(crop)
        grey = torch.cat(out)
        rgb = grey.expand(-1, 3, -1, -1) * _tint(gen, len(out))
        return {"x0": rgb * 2 - 1}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class SceneSource:
    """Rendered training scenes (training photographs as textures), a fresh batch per step
    from the step's generator: ``image`` in [-1, 1], ``depth``, ``normal``."""

    def __init__(self, size: int, split: str = "train"):
        self.textures = split_textures(split)
        self.size, self.offset = size, SPLIT_SEEDS[split]

    def get(self, positions: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        seeds = torch.randint(2**40, (len(positions),), generator=generator)
        scenes = [render_scene(self.offset + int(s), self.size, self.textures) for s in seeds]
        batch = render_batch(scenes)
        batch["image"] = batch["image"] * 2 - 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def target_of(batch: dict[str, Tensor], task: str) -> Tensor:
    """The 3-channel target in [-1, 1] of a rendered batch."""
    return depth_target(batch["depth"]) if task == "depth" else normal_target(batch["normal"])


def variant_loss(s: LotusSettings) -> Callable[[nn.Module, Any, torch.Generator], Tensor]:
    """The objective ``(net, batch, generator) -> loss`` of the settings' variant."""
    proc = process()
    kind = "epsilon" if s.variant == "eps" else "sample"
    loss = DiffusionLoss(proc, target=kind, weighting="uniform", time_sampling="uniform")
    big_t = float(proc.t_max)

    def objective(net: nn.Module, batch: Any, gen: torch.Generator) -> Tensor:
        image, target = batch["image"], target_of(batch, s.task)
        task = None
        if s.preserves_detail:
            b = image.shape[0]
            task = torch.cat([torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)]
                             ).to(image.device)
            image, target = torch.cat([image, image]), torch.cat([target, image])
        cond = {"image": image, "task": task}
        if s.variant in ("eps", "x0"):
            return loss(ModelDenoiser(net, proc, prediction_type=kind), target, cond=cond,
                        generator=gen)
        if s.variant == "g":
            return loss(ModelDenoiser(net, proc, prediction_type="sample"), target, cond=cond,
                        t=big_t, generator=gen)
        t = torch.full((target.shape[0],), big_t, device=target.device)
        pred = net(torch.zeros_like(target), t, **cond)
        return ((pred - target) ** 2).mean()

    return objective


def _config(steps: int, batch: int, lr: float, seed: int, run_dir: Path, desc: str,
            ema: float, extra: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=batch, lr=lr, lr_warmup=min(50, max(1, steps // 10)),
        grad_clip=1.0, ema_decay=ema, ema_warmup="power", ema_power=0.75, seed=seed,
        log_every=max(1, min(50, steps // 10)), ckpt_every=max(50, steps // 4), keep_last=1,
        run_dir=str(run_dir), desc=desc, progress=False,
        device="cpu" if not torch.cuda.is_available() else "auto", extra=extra)


def _fit(net: nn.Module, objective: Any, data: Any, config: TrainConfig, resume: bool
         ) -> dict[str, Any]:
    tic = time.perf_counter()
    cpu = time.process_time()
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(net, objective, data, config)
        summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to()
    net.eval()
    summary["seconds"] = time.perf_counter() - tic
    summary["cpu_seconds"] = time.process_time() - cpu
    return summary


def train_prior(s: LotusSettings, run_dir: Path, *, resume: bool = True
                ) -> tuple[LotusNet, dict[str, Any]]:
    """Train the unconditional image prior into ``run_dir``; returns it (EMA weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        net = LotusNet(s.prior_config())
    proc = process()
    loss = DiffusionLoss(proc, target="epsilon", weighting="uniform", time_sampling="uniform")

    def objective(model: nn.Module, batch: Any, gen: torch.Generator) -> Tensor:
        return loss(ModelDenoiser(model, proc, prediction_type="epsilon"), batch["x0"],
                    generator=gen)

    config = _config(s.prior_steps, s.prior_batch_size, s.prior_lr, s.seed, run_dir,
                     "lotus-prior", 0.995, {"stage": "prior", "settings": s.to_dict()})
    summary = _fit(net, objective, PhotoCrops(s.size), config, resume)
    return net.cpu(), summary


def train_predictor(s: LotusSettings, run_dir: Path, prior: LotusNet | None, *,
                    resume: bool = True) -> tuple[LotusNet, dict[str, Any]]:
    """Train the dense predictor of ``s`` into ``run_dir`` from ``prior`` (``None`` only for
    ``regression``); returns it (EMA weights) and a summary."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed + 1)
        if s.uses_prior:
            if prior is None:
                raise ValueError(f"variant {s.variant!r} starts from the image prior")
            net = adapt_prior(prior, s.predictor_config())
        else:
            net = LotusNet(s.predictor_config())
    config = _config(s.steps, s.batch_size, s.lr, s.seed + 7, run_dir,
                     f"lotus-{s.task}-{s.variant}", s.ema_decay,
                     {"stage": "predictor", "settings": s.to_dict()})
    summary = _fit(net, variant_loss(s), SceneSource(s.size), config, resume)
    return net.cpu(), summary
