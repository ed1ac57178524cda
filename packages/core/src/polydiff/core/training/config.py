"""Typed training configuration: one dataclass, validated on construction, JSON/TOML round trip.

The resolved config is written beside every run (``config.json``) and into every checkpoint's
metadata, so a run directory alone says how it was produced.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["TrainConfig", "PRECISIONS", "EMA_WARMUPS", "STRATEGIES"]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
EMA_WARMUPS: tuple[str, ...] = ("none", "tf", "power")
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    """Everything the :class:`~polydiff.core.training.loop.Trainer` needs besides model, loss
    and data.

    Optimisation (AdamW, Loshchilov & Hutter 2019):
        steps: optimizer steps to train for (the run ends at ``step == steps``).
        batch_size: *global* batch per optimizer step, summed over ranks and accumulation
            micro-batches; must be divisible by ``grad_accum * world_size``.
        lr: peak learning rate; ``lr_warmup`` steps of linear warm-up from ``lr / lr_warmup``.
        weight_decay, betas, adam_eps: AdamW hyper-parameters (decoupled weight decay).
        grad_clip: ``None``, or the max global L2 norm of the gradient (clip by total norm).
        grad_accum: micro-batches per optimizer step (same result as one batch of the sum).

    EMA of the weights (:class:`~polydiff.core.training.ema.EMA`):
        ema_decay: the decay (``None`` or ``0`` turns EMA off).
        ema_warmup: ``"none"``, ``"tf"`` (``min(decay, (1 + t) / (10 + t))``) or ``"power"``
            (``1 - (1 + t / ema_inv_gamma) ** -ema_power``), see ``ema.py``.
        ema_power, ema_inv_gamma: parameters of the ``"power"`` warm-up.

    Execution:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 adds a GradScaler).
        seed: seeds the data order, the per-step noise generators and the global RNGs, and
            the initial weights when the trainer is given a model factory (or the model is
            built under ``polydiff.core.training.seeded(seed)``; under DDP rank 0's initial
            weights are broadcast to every rank anyway).
        device: ``"auto"`` (CUDA > MPS > CPU, or ``$POLYDIFF_DEVICE``) or a device name.
        compile: run the forward/loss through ``torch.compile`` (eager fallback on failure).
        shuffle: shuffle in-memory datasets each epoch (a permutation seeded by
            ``(seed, epoch)``).
        strategy: data parallelism under ``torchrun`` (ignored in a single process):
            ``"ddp"`` (``DistributedDataParallel``: every rank holds the whole model,
            gradients and optimizer state) or ``"fsdp"`` (FSDP2 ``fully_shard``: parameters,
            gradients, optimizer state and EMA sharded across ranks; see ``loop.py``).

    Bookkeeping:
        log_every: steps between ``stats.jsonl`` lines (and progress-bar updates of the loss).
        ckpt_every: steps between checkpoints (``0``: only at the end).
        keep_last: checkpoints kept on disk (older ones are deleted).
        run_dir: the run directory; ``None`` creates ``<run_root>/NNNNN-<desc>/``.
        progress: show a tqdm bar (also quiet when not a terminal or ``CI=true``).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    lr_warmup: int = 0
    ema_decay: float | None = 0.999
    ema_warmup: str = "power"
    ema_power: float = 2.0 / 3.0
    ema_inv_gamma: float = 1.0
    precision: str = "fp32"
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    shuffle: bool = True
    strategy: Literal["ddp", "fsdp"] = "ddp"
    log_every: int = 100
    ckpt_every: int = 1000
    keep_last: int = 3
    run_dir: str | None = None
    run_root: str = "runs"
    desc: str = "train"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_last"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("ckpt_every", "lr_warmup"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum "
                             f"{self.grad_accum}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.adam_eps <= 0:
            raise ValueError("lr and adam_eps must be > 0 and weight_decay >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be None or in [0, 1), got {self.ema_decay!r}")
        if self.ema_warmup not in EMA_WARMUPS:
            raise ValueError(f"ema_warmup must be one of {EMA_WARMUPS}, got {self.ema_warmup!r}")
        if self.ema_power <= 0 or self.ema_inv_gamma <= 0:
            raise ValueError("ema_power and ema_inv_gamma must be > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    @property
    def micro_batch(self) -> int:
        """Samples per micro-batch summed over ranks (``batch_size // grad_accum``)."""
        return self.batch_size // self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise one clear ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = None) -> TrainConfig:
        """Load from a TOML file (optionally from one ``[table]`` of it)."""
        with open(path, "rb") as f:
            d = tomllib.load(f)
        if table is not None:
            d = d[table]
        return cls.from_dict(d)
