"""Training CDCD with the engine's :class:`~polydiff.core.training.Trainer`.

The objective per batch (Zhu et al. 2022, Sec. 3 with Gu et al. 2022's loss):
``L = L_vb + aux * L_x0 + lambda * L_NCE``: the variational term of the mask-and-replace
process at a uniform step ``t`` (core's
:meth:`~polydiff.core.processes.discrete.MaskAndReplaceProcess.vb_loss`), the auxiliary
clean-token cross-entropy, and the contrastive term of
:mod:`polydiff.multimodal.cdcd.contrastive` (``lambda = 0`` for the vanilla model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.processes.discrete import MaskAndReplaceProcess
from polydiff.core.training import TrainConfig, Trainer
from polydiff.multimodal.cdcd.contrastive import ContrastiveSettings, contrastive_term
from polydiff.multimodal.cdcd.data import TokenSet
from polydiff.multimodal.cdcd.model import CDCDConfig, CDCDModel, TokenNetwork

__all__ = ["TrainSettings", "cdcd_objective", "token_tensors", "train_cdcd"]


@dataclass
class TrainSettings:
    """Optimisation: ``steps``, ``batch_size``, ``lr``, ``aux_weight`` (of ``L_x0``),
    ``ema_decay`` (None: off), ``label_dropout`` (fraction of class labels replaced by the
    null class), and the contrastive term."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    aux_weight: float = 1.0
    ema_decay: float | None = 0.99
    label_dropout: float = 0.0
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)


def token_tensors(data: TokenSet) -> dict[str, Tensor]:
    """The Trainer's in-memory dataset: ``x0`` and ``label`` / ``cond``."""
    out = {"x0": torch.as_tensor(data.tokens, dtype=torch.long)}
    if data.labels is not None:
        out["label"] = torch.as_tensor(data.labels, dtype=torch.long)
    if data.cond is not None:
        out["cond"] = torch.as_tensor(data.cond, dtype=torch.long)
    return out


def cdcd_objective(config: CDCDConfig, s: TrainSettings
                   ) -> Callable[[nn.Module, Any, torch.Generator], Tensor]:
    """``loss_fn(model, batch, generator) -> (B,)`` for the Trainer."""
    proc = MaskAndReplaceProcess(config.num_tokens, config.num_steps)
    cs = s.contrastive

    def objective(model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
        x0 = batch["x0"]
        cond: dict[str, Tensor] = {}
        labels = batch.get("label")
        if labels is not None:
            if s.label_dropout:
                drop = torch.rand(labels.shape, generator=generator,
                                  device=labels.device) < s.label_dropout
                cond["label"] = torch.where(drop, -1, labels)
            else:
                cond["label"] = labels
        if "cond" in batch:
            cond["cond"] = batch["cond"]
        t = torch.randint(1, proc.num_steps + 1, (x0.shape[0],), generator=generator,
                          device=x0.device)
        xt = proc.q_sample(x0, t, generator=generator)
        logits = model(xt, t, **cond)
        loss = proc.loss(logits, x0, xt, t, s.aux_weight)
        if cs.variant != "vanilla" and cs.weight > 0:
            nce = contrastive_term(model, proc, x0, xt, t, logits, cond, cs, labels=labels,
                                   generator=generator)
            loss = loss + cs.weight * nce
        return loss

    return objective


def train_cdcd(data: TokenSet, run: str | Path, config: CDCDConfig, s: TrainSettings, *,
               seed: int = 0, progress: bool = False, resume: bool = True,
               device: str = "auto", meta: dict[str, Any] | None = None,
               callbacks: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
               ckpt_every: int | None = None) -> CDCDModel:
    """Train on ``data`` in the Trainer run folder ``run`` (resumable); returns the model with
    its EMA weights, on the CPU, in eval mode."""
    if len(data) < 2:
        raise ValueError("need at least two training sequences")
    if data.tokens.shape[1] != config.seq_len or int(data.tokens.max()) >= config.num_tokens:
        raise ValueError("training tokens do not fit the model's seq_len / num_tokens")
    cfg = TrainConfig(steps=s.steps, batch_size=min(s.batch_size, len(data)), lr=s.lr,
                      ema_decay=s.ema_decay, seed=seed, run_dir=str(run), progress=progress,
                      desc="cdcd", log_every=max(1, min(100, s.steps // 10)),
                      ckpt_every=ckpt_every or max(100, s.steps // 4), keep_last=1,
                      device=device, grad_clip=1.0)
    trainer = Trainer(lambda: TokenNetwork(config), cdcd_objective(config, s),
                      token_tensors(data), cfg, callbacks=callbacks)
    summary = trainer.fit(resume=resume)
    net = trainer.model
    assert isinstance(net, TokenNetwork)
    if trainer.ema is not None:
        trainer.ema.copy_to(net)
    net.cpu()
    train_meta = dataclasses.asdict(s) | {"seed": seed, "final_loss": summary.get("loss"),
                                          "sequences": len(data)}
    return CDCDModel(config, net, {**(meta or {}), "train": train_meta}).eval()
