"""A U-ViT over several modalities, each with its own diffusion time.

Bao et al. (2023), "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale"
(UniDiffuser), Sec. 4.2: one transformer takes every input as tokens (a time token per
modality, the tokens of each modality after its own linear embedding) and predicts the noise
of every modality. The backbone is U-ViT (Bao et al. 2023, "All are Worth Words: A ViT
Backbone for Diffusion Models", Sec. 3.1): plain pre-norm blocks on the token sequence and
long skip connections from shallow to deep blocks, fused by concatenation and a linear layer.

The blocks are :class:`~polydiff.core.nn.transformer.TransformerBlock` (token mode); what is
new here is only the multi-modal stem and heads: ``model(xs, ts)`` with ``xs`` a mapping
modality -> ``(B, N_m, C_m)`` tokens and ``ts`` a mapping modality -> ``(B,)`` times, returning
a mapping modality -> ``(B, N_m, out_m)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from polydiff.core.nn.embeddings import TIME_EMBEDDINGS, TimestepMLP, batch_time
from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.core.nn.transformer import TransformerBlock

__all__ = ["MultiModalUViT", "MultiModalUViTConfig"]


@dataclass
class MultiModalUViTConfig:
    """Configuration of :class:`MultiModalUViT`.

    Attributes:
        modalities: names of the modalities, in token order.
        num_tokens: tokens of each modality (same order).
        in_channels: token width of each modality.
        out_channels: output token width of each modality (default: ``in_channels``).
        hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP
            expansion. Long skips join block ``i`` and block ``depth - 1 - i`` for
            ``i < depth // 2`` (U-ViT).
        time_embedding, time_embed_dim, time_scale: the shared time trunk
            (:class:`~polydiff.core.nn.embeddings.TimestepMLP`; one token per modality, told
            apart by the positional table).
        dropout, qkv_bias: attention/MLP dropout and the query/key/value bias.
    """

    modalities: tuple[str, ...] = ("image", "text")
    num_tokens: tuple[int, ...] = (16, 4)
    in_channels: tuple[int, ...] = (4, 8)
    out_channels: tuple[int, ...] | None = None
    hidden_size: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    time_embedding: Literal["sinusoidal", "fourier"] = "sinusoidal"
    time_embed_dim: int = 64
    time_scale: float = 1000.0
    dropout: float = 0.0
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.num_tokens = tuple(int(n) for n in self.num_tokens)
        self.in_channels = tuple(int(c) for c in self.in_channels)
        if self.out_channels is not None:
            self.out_channels = tuple(int(c) for c in self.out_channels)
        k = len(self.modalities)
        if k < 1 or len(set(self.modalities)) != k:
            raise ValueError(f"modalities must be distinct names, got {self.modalities}")
        lengths = [len(self.num_tokens), len(self.in_channels)]
        if self.out_channels is not None:
            lengths.append(len(self.out_channels))
        if any(n != k for n in lengths):
            raise ValueError("num_tokens, in_channels (and out_channels) need one entry per "
                             "modality")
        if min(self.num_tokens + self.in_channels + (self.hidden_size, self.depth)) < 1:
            raise ValueError("token counts, widths, hidden_size and depth must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}")

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.out_channels or self.in_channels

    @classmethod
    def tiny(cls, **overrides: object) -> MultiModalUViTConfig:
        """A few-thousand-parameter model for tests."""
        base = dict(hidden_size=32, depth=3, num_heads=2, time_embed_dim=16)
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


@register_model
class MultiModalUViT(PretrainedMixin, nn.Module):
    """U-ViT joint noise-prediction network of UniDiffuser (module docstring).

    Token sequence: ``[time_1, ..., time_K, tokens_1, ..., tokens_K]`` plus a learned
    positional table; every modality has its own input projection and output head (a
    LayerNorm and a linear layer, U-ViT's final layer without its convolution).
    """

    config_class = MultiModalUViTConfig

    def __init__(self, config: MultiModalUViTConfig):
        super().__init__()
        self.config = cfg = config
        d, k = cfg.hidden_size, len(cfg.modalities)
        self.num_skips = cfg.depth // 2
        self.proj = nn.ModuleDict({m: nn.Linear(c, d)
                                   for m, c in zip(cfg.modalities, cfg.in_channels)})
        self.time = TimestepMLP(cfg.time_embed_dim, d, kind=cfg.time_embedding,
                                time_scale=cfg.time_scale)
        self.pos = nn.Parameter(torch.zeros(1, k + sum(cfg.num_tokens), d))
        self.blocks = nn.ModuleList([
            TransformerBlock(d, cfg.num_heads, cfg.mlp_ratio, adaln=False,
                             skip=i >= cfg.depth - self.num_skips, dropout=cfg.dropout,
                             qkv_bias=cfg.qkv_bias)
            for i in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(d)
        self.heads = nn.ModuleDict({m: nn.Linear(d, c)
                                    for m, c in zip(cfg.modalities, cfg.outputs)})
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears with zero biases and an N(0, 0.02) positional table (ViT)."""
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for lin in (self.time.linear_1, self.time.linear_2):
            nn.init.normal_(lin.weight, std=0.02)

    def block_names(self) -> list[str]:
        """Names of the blocks in execution order."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def named_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """``(name, module)`` per block; ``name`` is also its ``get_submodule`` path."""
        for name in self.block_names():
            yield name, self.get_submodule(name)

    def forward(self, xs: Mapping[str, Tensor], ts: Mapping[str, Tensor | float]
                ) -> dict[str, Tensor]:
        """``xs[m]``: ``(B, N_m, C_m)`` tokens, ``ts[m]``: ``(B,)`` times (or scalars) of every
        modality ``m``; returns ``{m: (B, N_m, out_m)}``."""
        cfg = self.config
        missing = [m for m in cfg.modalities if m not in xs or m not in ts]
        if missing:
            raise ValueError(f"missing tokens or time of modalities {missing}")
        b = xs[cfg.modalities[0]].shape[0]
        device = xs[cfg.modalities[0]].device
        times, tokens = [], []
        for m, n, c in zip(cfg.modalities, cfg.num_tokens, cfg.in_channels):
            x = xs[m]
            if x.shape != (b, n, c):
                raise ValueError(f"modality {m!r}: expected tokens ({b}, {n}, {c}), got "
                                 f"{tuple(x.shape)}")
            times.append(self.time(batch_time(ts[m], b, device)).unsqueeze(1))
            tokens.append(self.proj[m](x))
        h = torch.cat(times + tokens, dim=1) + self.pos
        skips: list[Tensor] = []
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks):
            h = block(h, None, skips.pop() if i >= depth - self.num_skips else None)
            if i < self.num_skips:
                skips.append(h)
        h = self.norm(h)
        out, start = {}, len(cfg.modalities)
        for m, n in zip(cfg.modalities, cfg.num_tokens):
            out[m] = self.heads[m](h[:, start:start + n])
            start += n
        return out
