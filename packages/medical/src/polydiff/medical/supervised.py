"""The supervised baseline: a U-Net trained end to end on the same training slices to map the
zero-filled (MRI) or filtered back-projection (CT) image to the ground truth (residual
learning, as in Jin et al. 2017, "Deep Convolutional Neural Network for Inverse Problems in
Imaging", and the fastMRI U-Net baseline, Zbontar et al. 2018).

It is core's U-Net (the prior's architecture, time input fixed at 0) trained with core's
Trainer on augmented slices whose acquisitions are simulated on the fly: for MRI a fresh random
line mask of one of the ``settings`` accelerations per batch, for CT one of the ``settings``
view counts. One network per modality serves every setting it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.core.nn.unet import UNet
from polydiff.medical.prior import PriorConfig

__all__ = ["SupervisedConfig", "train_supervised", "supervised_reconstruct", "load_supervised"]


@dataclass
class SupervisedConfig:
    """Training settings of the supervised baseline."""

    modality: str = "mri"
    settings: tuple[float, ...] = (4.0, 8.0)
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    arch: PriorConfig = field(default_factory=PriorConfig)


def _inputs(cfg: SupervisedConfig, x: Tensor, g: torch.Generator) -> Tensor:
    from polydiff.medical.recon import acquisition_for, simulate, zero_filled

    k = int(torch.randint(len(cfg.settings), (1,), generator=g, device=g.device))
    seed = int(torch.randint(2**31 - 1, (1,), generator=g, device=g.device))
    acq = acquisition_for(cfg.modality, cfg.settings[k], x.shape[-1],
                          **({"seed": seed} if cfg.modality == "mri" else {}))
    acq.op.to(x.device)
    return zero_filled(acq, simulate(acq, x.cpu(), seed=seed).to(x.device))


def supervised_reconstruct(net: UNet, z: Tensor) -> Tensor:
    """The network's reconstruction of zero-filled / FBP images ``z`` in [0, 1]."""
    t = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
    return (z + net(2 * z - 1, t) * 0.5).clamp(0, 1)


def train_supervised(run_dir: str | Path, cfg: SupervisedConfig, *, resume: bool = True,
                     progress: bool = False, data: Tensor | None = None) -> UNet:
    """Train the baseline into ``run_dir`` (core's Trainer; resumable) and export the network
    to ``run_dir/model``."""
    from polydiff.core.training import TrainConfig, Trainer, export_network
    from polydiff.medical.data import augment, split_indices, template_slices

    if data is None:
        data = template_slices(split_indices("train"), cfg.arch.size)

    def loss_fn(model: Any, batch: Tensor, g: torch.Generator) -> Tensor:
        x = augment(batch, g)
        z = _inputs(cfg, x, g)
        return ((supervised_reconstruct(model, z) - x) ** 2).mean()

    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_warmup=50,
                       ema_decay=0.99, seed=cfg.seed, device=cfg.device,
                       log_every=max(1, cfg.steps // 20), ckpt_every=max(1, cfg.steps // 4),
                       keep_last=1, run_dir=str(run_dir), desc=f"supervised-{cfg.modality}",
                       progress=progress)
    trainer = Trainer(lambda: UNet(cfg.arch.unet()), loss_fn, data, tcfg)
    trainer.fit(resume=resume)
    export_network(run_dir, Path(run_dir) / "model")
    return load_supervised(Path(run_dir) / "model")


def load_supervised(directory: str | Path) -> UNet:
    """A trained baseline network (``save_pretrained`` folder)."""
    net = UNet.from_pretrained(directory)
    return net.eval().requires_grad_(False)
