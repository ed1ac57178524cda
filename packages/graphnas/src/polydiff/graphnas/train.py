"""Training the diffusion model and the (meta-)predictors with core's
:class:`~polydiff.core.training.Trainer` (AdamW, EMA, exact resume, run directories).

Both write their run into ``out_dir`` (``config.json``, ``stats.jsonl``, ``log.txt``,
``checkpoints/``); ``resume=True`` continues from the latest checkpoint. At the end the EMA
weights are copied into the model, which is saved to ``out_dir / "model"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.training import TrainConfig, Trainer
from polydiff.graphnas.model import ArchDiffusion
from polydiff.graphnas.predictor import ArchPredictor

__all__ = ["train_diffusion", "train_predictor", "fit_predictor", "MODEL_DIR"]

MODEL_DIR = "model"


def _config(out_dir: Path, steps: int, batch_size: int, lr: float, seed: int, desc: str,
            progress: bool, meta: dict[str, Any], **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, run_dir=str(out_dir), desc=desc,
        progress=progress, ema_decay=0.995, ema_warmup="tf",
        log_every=max(1, min(50, steps // 20)), ckpt_every=max(0, steps // 4), grad_clip=1.0,
        device="cpu")
    base.update({k: v for k, v in overrides.items() if k != "extra"})
    base["extra"] = {**meta, **overrides.get("extra", {})}
    return TrainConfig(**base)


def train_diffusion(model: ArchDiffusion, archs: Sequence[Any], out_dir: str | Path, *,
                    steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                    resume: bool = True, progress: bool = False, **overrides: Any) -> Path:
    """Train the score network on clean states of ``archs`` (eps-prediction loss)."""
    out_dir = Path(out_dir)
    data = model.state_of(archs)
    if data.shape[0] == 0:
        raise ValueError("no training architectures")
    cfg = _config(out_dir, steps, batch_size, lr, seed, "diffusion", progress,
                  {"diffusion": asdict(model.config), "n_train": int(data.shape[0])},
                  **overrides)
    torch.manual_seed(seed)
    model.denoiser.train()
    trainer = Trainer(model.denoiser, model.loss(), data, cfg)
    trainer.fit(resume=resume)
    model.denoiser.eval()
    if trainer.ema is not None:
        trainer.ema.copy_to(model.denoiser)
    model.save(out_dir / MODEL_DIR)
    return out_dir


def _objective(model: ArchPredictor, clean_fraction: float):
    loss = model.loss(clean_fraction)
    return loss.objective()


def train_predictor(model: ArchPredictor, states: Tensor, targets: Tensor | np.ndarray,
                    out_dir: str | Path, *, tasks: Tensor | None = None,
                    weights: Tensor | None = None, steps: int = 1500, batch_size: int = 256,
                    lr: float = 1e-3, seed: int = 0, resume: bool = True,
                    progress: bool = False, clean_fraction: float = 0.25,
                    **overrides: Any) -> Path:
    """Train a noise-aware predictor on ``(states, targets[, tasks])`` in ``out_dir``."""
    out_dir = Path(out_dir)
    data = _predictor_data(model, states, targets, tasks, weights)
    cfg = _config(out_dir, steps, batch_size, lr, seed, "predictor", progress,
                  {"predictor": asdict(model.config), "n_train": int(states.shape[0])},
                  **overrides)
    torch.manual_seed(seed)
    model.net.train()
    trainer = Trainer(model.net, _objective(model, clean_fraction), data, cfg)
    trainer.fit(resume=resume)
    model.net.eval()
    if trainer.ema is not None:
        trainer.ema.copy_to(model.net)
    model.save(out_dir / MODEL_DIR)
    return out_dir


def _predictor_data(model: ArchPredictor, states: Tensor, targets: Tensor | np.ndarray,
                    tasks: Tensor | None, weights: Tensor | None) -> dict[str, Tensor]:
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    if y.shape != (states.shape[0],):
        raise ValueError("need one target per state")
    data = {"x0": states.float(), "y": y}
    if model.config.cond_dim:
        if tasks is None or tasks.shape != (states.shape[0], model.config.cond_dim):
            raise ValueError(f"a task-conditioned predictor needs tasks ({states.shape[0]}, "
                             f"{model.config.cond_dim})")
        data["cond"] = tasks.float()
    if weights is not None:
        data["weight"] = weights.float()
    return data


def fit_predictor(model: ArchPredictor, states: Tensor, targets: Tensor | np.ndarray, *,
                  tasks: Tensor | None = None, weights: Tensor | None = None, steps: int = 100,
                  batch_size: int = 128, lr: float = 3e-4, seed: int = 0,
                  clean_fraction: float = 0.25) -> ArchPredictor:
    """A few steps of the engine's Trainer on ``model`` in a throw-away run directory (no
    EMA): the few-shot update of the surrogate inside a search loop. Returns ``model``."""
    import tempfile

    data = _predictor_data(model, states, targets, tasks, weights)
    with tempfile.TemporaryDirectory(prefix="polydiff-fit-") as tmp:
        cfg = _config(Path(tmp), steps, min(batch_size, states.shape[0]), lr, seed, "fit",
                      False, {}, ema_decay=None, ckpt_every=0, log_every=steps)
        model.net.train()
        Trainer(model.net, _objective(model, clean_fraction), data, cfg).fit(resume=False)
        model.net.eval()
    return model
