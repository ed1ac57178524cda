"""The CDCD model: a mask-and-replace discrete diffusion process (core) and a token network.

The network is core's :class:`~polydiff.core.nn.transformer.DiffusionTransformer` (adaLN-Zero)
over one-hot tokens: ``x_t`` (``K + 1`` states, the last one [MASK]) in, ``x_0``-logits over
the ``K`` real tokens out. The step ``t`` enters as ``t / T``; a class label through the
transformer's label embedding (digits) and a per-position condition track as one-hot extra
channels (the rhythm of a melody). A model folder holds ``cdcd.json`` (config and metadata)
and ``network/`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.nn.transformer import DiffusionTransformer, DiffusionTransformerConfig
from polydiff.core.processes.discrete import MaskAndReplaceProcess
from polydiff.core.samplers.discrete import sample_discrete
from polydiff.core.utils import atomic_dir

__all__ = ["CDCDConfig", "TokenNetwork", "CDCDModel", "load_cdcd", "META_NAME"]

META_NAME = "cdcd.json"


@dataclass
class CDCDConfig:
    """A CDCD model: ``num_tokens`` real tokens ``K`` per position, ``seq_len`` positions,
    ``num_labels`` classes (0: no class condition), ``cond_vocab`` states of a per-position
    condition track (0: none), ``num_steps`` diffusion steps ``T`` of the mask-and-replace
    process (Gu et al. 2022's linear schedules), and the transformer's size."""

    num_tokens: int = 4
    seq_len: int = 64
    num_labels: int = 10
    cond_vocab: int = 0
    num_steps: int = 50
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    time_embed_dim: int = 32

    def __post_init__(self) -> None:
        if min(self.num_tokens, self.seq_len, self.num_steps, self.hidden_size,
               self.depth) < 1 or self.num_tokens < 2:
            raise ValueError("num_tokens >= 2 and seq_len, num_steps, hidden_size, depth >= 1")
        if self.num_labels < 0 or self.cond_vocab < 0:
            raise ValueError("num_labels and cond_vocab must be >= 0")

    def transformer(self) -> DiffusionTransformerConfig:
        return DiffusionTransformerConfig(
            in_channels=self.num_tokens + 1, out_channels=self.num_tokens,
            num_tokens=self.seq_len, hidden_size=self.hidden_size, depth=self.depth,
            num_heads=self.num_heads, time_embed_dim=self.time_embed_dim, time_scale=1000.0,
            num_classes=self.num_labels or None, cond_channels=self.cond_vocab)


class TokenNetwork(nn.Module):
    """``x_0``-logits ``(B, L, K)`` from tokens ``x_t`` ``(B, L)`` in ``0..K`` and steps ``t``
    ``(B,)``; ``label`` ``(B,)`` (negative: no label) and ``cond`` ``(B, L)`` condition
    tokens as the config says."""

    def __init__(self, config: CDCDConfig, net: DiffusionTransformer | None = None):
        super().__init__()
        self.config = config
        self.net = net if net is not None else DiffusionTransformer(config.transformer())

    def forward(self, xt: Tensor, t: Tensor, label: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        c = self.config
        x = F.one_hot(xt.long(), c.num_tokens + 1).float()
        extra = None
        if c.cond_vocab:
            if cond is None:
                raise ValueError("this model needs a condition track: pass cond=")
            extra = F.one_hot(cond.long(), c.cond_vocab).float()
        tt = t.float() / c.num_steps
        return self.net(x, tt, class_labels=label if c.num_labels else None, cond=extra)


@dataclass
class CDCDModel:
    """A trained (or fresh) CDCD model: config, process, network and metadata."""

    config: CDCDConfig
    network: TokenNetwork
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, config: CDCDConfig, meta: dict[str, Any] | None = None) -> CDCDModel:
        return cls(config, TokenNetwork(config), dict(meta or {}))

    @property
    def process(self) -> MaskAndReplaceProcess:
        return MaskAndReplaceProcess(self.config.num_tokens, self.config.num_steps)

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def eval(self) -> CDCDModel:
        self.network.eval()
        return self

    @torch.no_grad()
    def generate(self, n: int, *, labels: Tensor | None = None, cond: Tensor | None = None,
                 steps: int | None = None, seed: int = 0, temperature: float = 1.0,
                 batch: int = 512) -> Tensor:
        """``n`` token sequences ``(n, L)`` by ancestral sampling (core's
        :func:`~polydiff.core.samplers.discrete.sample_discrete`) with ``steps`` jumps
        (default: all ``T``), conditioned on ``labels`` ``(n,)`` and/or ``cond`` ``(n, L)``."""
        c = self.config
        if c.num_labels and (labels is None or labels.shape != (n,)):
            raise ValueError(f"this model is class-conditional: pass labels of shape ({n},)")
        if c.cond_vocab and (cond is None or cond.shape != (n, c.seq_len)):
            raise ValueError(f"this model needs cond of shape ({n}, {c.seq_len})")
        self.network.eval()
        device = next(self.network.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for i in range(0, n, batch):
            m = min(batch, n - i)
            kw: dict[str, Tensor] = {}
            if labels is not None and c.num_labels:
                kw["label"] = labels[i:i + m].to(device)
            if cond is not None and c.cond_vocab:
                kw["cond"] = cond[i:i + m].to(device)
            out.append(sample_discrete(self.network, self.process, (m, c.seq_len), steps=steps,
                                       cond=kw, generator=gen, disable=True,
                                       temperature=temperature, device=device).cpu())
        return torch.cat(out)

    def save(self, directory: str | Path) -> Path:
        """Write ``cdcd.json`` and ``network/`` into ``directory`` (atomically)."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.network.net.save_pretrained(tmp / "network")
            (tmp / META_NAME).write_text(json.dumps(
                {"config": dataclasses.asdict(self.config), "meta": self.meta}, indent=2) + "\n")
        return directory


def load_cdcd(directory: str | Path, map_location: str | torch.device = "cpu") -> CDCDModel:
    """Load a model folder written by :meth:`CDCDModel.save` (weights as float32)."""
    directory = Path(directory)
    path = directory / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a CDCD model folder (no {META_NAME})")
    data = json.loads(path.read_text())
    config = CDCDConfig(**data["config"])
    net = DiffusionTransformer.from_pretrained(directory / "network", map_location=map_location)
    if net.config != config.transformer():
        raise ValueError(f"{directory}: network/ does not match {META_NAME}")
    model = CDCDModel(config, TokenNetwork(config, net.float()), data.get("meta", {}))
    return model.eval()
