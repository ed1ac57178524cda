"""The 2-D diffusion prior: core's U-Net on a VP cosine process, trained by core's Trainer on
augmented MNI152 template slices.

Images live in [0, 1] (0 = background); the network sees ``u = 2 x - 1`` in [-1, 1]
(:meth:`DiffusionPrior.to_model`). The prior is a :class:`~polydiff.core.denoiser.ModelDenoiser`
(``v``-prediction, Salimans & Ho 2022; x0 estimates clamped to [-1, 1]), so every core sampler
and guidance transform takes it unchanged.

A trained prior is a folder: ``model/`` (the U-Net, ``save_pretrained`` format) and
``prior.json`` (:class:`PriorConfig`); :meth:`DiffusionPrior.from_pretrained` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.nn.unet import UNet, UNetConfig
from polydiff.core.processes import VPCosine
from polydiff.core.utils import atomic_write

__all__ = ["PriorConfig", "PriorTrainSettings", "DiffusionPrior", "train_prior",
           "held_out_loss", "PRIOR_FILE"]

PRIOR_FILE = "prior.json"


@dataclass
class PriorConfig:
    """Architecture and process of a prior (saved as ``prior.json``)."""

    size: int = 64
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    mid_attention: bool = True
    num_heads: int = 4
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        if self.size % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError(f"image size {self.size} must be divisible by "
                             f"{2 ** (len(self.channel_mults) - 1)}")

    def unet(self) -> UNetConfig:
        return UNetConfig(dims=2, in_channels=1, base_channels=self.base_channels,
                          channel_mults=self.channel_mults, num_res_blocks=self.num_res_blocks,
                          attention_levels=self.attention_levels,
                          mid_attention=self.mid_attention, num_heads=self.num_heads,
                          norm_groups=8)

    @staticmethod
    def process() -> VPCosine:
        return VPCosine()


@dataclass
class PriorTrainSettings:
    """Training settings of ``train-prior`` (saved beside the run as ``train.toml``)."""

    steps: int = 3000
    batch_size: int = 12
    lr: float = 1e-3
    lr_warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    augment: bool = True
    log_every: int = 50
    ckpt_every: int = 250
    device: str = "auto"
    prior: PriorConfig = field(default_factory=PriorConfig)


class DiffusionPrior:
    """A trained image prior: ``denoiser`` (a core ``ModelDenoiser`` over ``u = 2x - 1``),
    its ``process`` and ``config``."""

    def __init__(self, net: UNet, config: PriorConfig):
        self.net, self.config = net, config
        self.process = config.process()
        self.denoiser = ModelDenoiser(net, self.process, config.prediction_type, x0_clamp=1.0)

    @staticmethod
    def to_model(x: Tensor) -> Tensor:
        """Image in [0, 1] -> network space [-1, 1]."""
        return 2.0 * x - 1.0

    @staticmethod
    def from_model(u: Tensor) -> Tensor:
        """Network space -> image."""
        return 0.5 * (u + 1.0)

    @property
    def size(self) -> int:
        return self.config.size

    def to(self, device: torch.device | str) -> DiffusionPrior:
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def eval(self) -> DiffusionPrior:
        self.net.eval().requires_grad_(False)
        return self

    def save_pretrained(self, directory: str | Path) -> Path:
        d = Path(directory)
        self.net.save_pretrained(d / "model")
        atomic_write(d / PRIOR_FILE, json.dumps(_plain(self.config), indent=2) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu"
                        ) -> DiffusionPrior:
        d = Path(directory)
        if not (d / PRIOR_FILE).is_file() or not (d / "model" / "config.json").is_file():
            raise FileNotFoundError(f"{d} holds no trained prior (expected {PRIOR_FILE} and "
                                    "model/)")
        try:
            cfg = PriorConfig(**json.loads((d / PRIOR_FILE).read_text()))
        except (TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{d / PRIOR_FILE}: not a prior configuration ({err})") from None
        net = UNet.from_pretrained(d / "model", map_location=map_location)
        return cls(net, cfg).eval()

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, seed: int = 0, eta: float = 1.0) -> Tensor:
        """``n`` unconditional samples in [0, 1] (DDIM with ``eta``, ``steps`` steps)."""
        from polydiff.core.grids import time_grid
        from polydiff.core.samplers import sample_ddim

        g = torch.Generator(device=self.device).manual_seed(seed)
        x = self.process.prior_sample((n, 1, self.size, self.size), generator=g,
                                      device=self.device)
        ts = time_grid(self.process, steps, "uniform", t_end=0.0)
        u = sample_ddim(self.denoiser, x, ts, eta=eta, generator=g, disable=True)
        return self.from_model(u).clamp(0, 1)


def _plain(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _objective(prior_cfg: PriorConfig, do_augment: bool
               ) -> Callable[[Any, Tensor, torch.Generator], Tensor]:
    from polydiff.core.losses import DiffusionLoss
    from polydiff.medical.data import augment

    loss = DiffusionLoss(prior_cfg.process(), target=prior_cfg.prediction_type)

    def objective(model: Any, batch: Tensor, generator: torch.Generator) -> Tensor:
        x = augment(batch, generator) if do_augment else batch
        return loss(model, DiffusionPrior.to_model(x), generator=generator)

    return objective


def train_prior(run_dir: str | Path, settings: PriorTrainSettings, *, resume: bool = False,
                progress: bool = True, data: Tensor | None = None) -> DiffusionPrior:
    """Train a prior into ``run_dir`` with core's Trainer (model built under the seed, EMA,
    checkpoints every ``ckpt_every`` steps, exact ``resume``), then write the EMA network to
    ``run_dir/model`` and ``run_dir/prior.json``. ``data``: training slices ``(n, 1, S, S)``
    in [0, 1] (default: the template's training split)."""
    from polydiff.core.training import TrainConfig, Trainer, export_network
    from polydiff.medical.data import split_indices, template_slices

    cfg = settings.prior
    if data is None:
        data = template_slices(split_indices("train"), cfg.size)
    if data.ndim != 4 or data.shape[1:] != (1, cfg.size, cfg.size):
        raise ValueError(f"training data must be (n, 1, {cfg.size}, {cfg.size}), got "
                         f"{tuple(data.shape)}")
    process = cfg.process()
    tcfg = TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                       lr_warmup=settings.lr_warmup, ema_decay=settings.ema_decay,
                       seed=settings.seed, device=settings.device, log_every=settings.log_every,
                       ckpt_every=settings.ckpt_every, keep_last=2, run_dir=str(run_dir),
                       desc="medical-prior", progress=progress)
    trainer = Trainer(lambda: ModelDenoiser(UNet(cfg.unet()), process, cfg.prediction_type,
                                            x0_clamp=1.0),
                      _objective(cfg, settings.augment), data, tcfg)
    trainer.fit(resume=resume)
    out = Path(run_dir)
    export_network(out, out / "model")
    atomic_write(out / PRIOR_FILE, json.dumps(_plain(cfg), indent=2) + "\n")
    return DiffusionPrior.from_pretrained(out)


@torch.no_grad()
def held_out_loss(prior: DiffusionPrior, images: Tensor, *, n_times: int = 16,
                  seed: int = 0) -> float:
    """The denoising loss of ``prior`` on ``images`` in [0, 1] (the training objective, the
    ``v``-MSE, averaged over ``n_times`` evenly spaced times and fixed seeded noise): a
    deterministic held-out score of a prior."""
    from polydiff.core.losses import DiffusionLoss

    loss = DiffusionLoss(prior.process, target=prior.config.prediction_type)
    g = torch.Generator().manual_seed(seed)
    x0 = prior.to_model(images.to(prior.device))
    t_lo, t_hi = prior.process.t_min, prior.process.t_max
    total = 0.0
    for k in range(n_times):
        t = t_lo + (t_hi - t_lo) * (k + 0.5) / n_times
        eps = torch.randn(x0.shape, generator=g).to(x0)
        total += float(loss(prior.denoiser, x0, t=t, eps=eps))
    out = total / n_times
    if not math.isfinite(out):
        raise ValueError("the held-out loss is not finite")
    return out
