"""A diffusion transformer over tokens of any modality.

Input ``(B, N, C)`` tokens (image patches, waveform frames, series windows, text or graph
node features); :func:`patchify` / :func:`unpatchify` turn ``(B, C, *spatial)`` signals with
one or more spatial dimensions into tokens and back. Two ways to condition on time:

* ``"adaln"``: adaptive LayerNorm with zero-initialised gates (adaLN-Zero) of Peebles & Xie
  (2023), "Scalable Diffusion Models with Transformers" (DiT), Sec. 3.2; a class label is
  added to the time embedding.
* ``"token"``: time (and class) enter as extra tokens, as in U-ViT, Bao et al. (2023), "All
  are Worth Words: A ViT Backbone for Diffusion Models", with long skip connections from
  shallow to deep blocks fused by concatenation and a linear layer (Sec. 3.1).

Long skips can be used with either; positional embeddings are learned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.nn.embeddings import (
    TIME_EMBEDDINGS,
    LabelEmbedding,
    TimestepMLP,
    batch_time,
    check_no_labels,
)
from polydiff.core.nn.hub import PretrainedMixin, register_model

__all__ = [
    "DiffusionTransformer",
    "DiffusionTransformerConfig",
    "SelfAttention",
    "TransformerBlock",
    "patchify",
    "unpatchify",
]


# --------------------------------------------------------------------------- tokens
def _patch(patch_size: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    p = (patch_size,) * ndim if isinstance(patch_size, int) else tuple(patch_size)
    if len(p) != ndim or min(p) < 1:
        raise ValueError(f"patch_size {patch_size} does not fit {ndim} spatial dimensions")
    return p


def patchify(x: Tensor, patch_size: int | tuple[int, ...]) -> Tensor:
    """``(B, C, *spatial)`` -> ``(B, N, C * prod(patch))`` non-overlapping patches in row-major
    order, features ordered ``(C, *patch)`` (ViT, Dosovitskiy et al. 2021). A 1-D sequence
    ``(B, C, L)`` gives ``L / p`` frames; an image ``(B, C, H, W)`` gives ``HW / p^2`` patches."""
    b, c, *spatial = x.shape
    p = _patch(patch_size, len(spatial))
    if any(s % q for s, q in zip(spatial, p)):
        raise ValueError(f"spatial size {tuple(spatial)} is not divisible by patch size {p}")
    n = [s // q for s, q in zip(spatial, p)]
    k = len(spatial)
    x = x.reshape(b, c, *[d for pair in zip(n, p) for d in pair])
    x = x.permute(0, *[2 + 2 * i for i in range(k)], 1, *[3 + 2 * i for i in range(k)])
    return x.reshape(b, math.prod(n), c * math.prod(p))


def unpatchify(tokens: Tensor, patch_size: int | tuple[int, ...],
               spatial: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, C * prod(patch))`` -> ``(B, C, *spatial)``."""
    b, n_tok, width = tokens.shape
    p = _patch(patch_size, len(spatial))
    n = [s // q for s, q in zip(spatial, p)]
    if any(s % q for s, q in zip(spatial, p)) or math.prod(n) != n_tok or width % math.prod(p):
        raise ValueError(f"{n_tok} tokens of width {width} do not tile {tuple(spatial)} with "
                         f"patches {p}")
    c, k = width // math.prod(p), len(spatial)
    x = tokens.reshape(b, *n, c, *p)
    x = x.permute(0, k + 1, *[a for i in range(k) for a in (1 + i, k + 2 + i)])
    return x.reshape(b, c, *spatial)


# --------------------------------------------------------------------------- layers
class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017) over ``(B, N, D)`` tokens, computed
    by ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available)."""

    def __init__(self, dim: int, num_heads: int = 1, *, qkv_bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, D)``; ``mask``: optional ``(B, N)`` booleans, ``True`` for tokens
        that may be attended to (padding of variable-length sequences is ``False``)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None if mask is None else mask[:, None, None, :].to(torch.bool)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(h.transpose(1, 2).reshape(b, n, d))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: attention and MLP, conditioned by adaLN-Zero (``adaln``:
    LayerNorms without affine parameters, shift/scale/gate regressed from the conditioning,
    gates zero at initialisation) or plain (time is a token); with ``skip``, a U-ViT long skip
    ``x <- Linear(concat(x, skip))`` comes first."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, adaln: bool,
                 skip: bool = False, dropout: float = 0.0, qkv_bias: bool = True):
        super().__init__()
        self.adaln = adaln
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaln, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaln, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if adaln else None

    def forward(self, x: Tensor, c: Tensor | None = None, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("this block has a long skip: pass skip=")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        if self.modulation is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        if c is None:
            raise ValueError("an adaLN block needs the conditioning vector c")
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation(c).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(_modulate(self.norm1(x), sh1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), sh2, sc2))


# --------------------------------------------------------------------------- model
@dataclass
class DiffusionTransformerConfig:
    """Configuration of :class:`DiffusionTransformer`.

    Attributes:
        in_channels: token width ``C`` of the input.
        out_channels: token width of the output (default ``in_channels``).
        num_tokens: maximum sequence length ``N`` (size of the learned positional table;
            shorter inputs use its first ``N`` rows).
        hidden_size, depth, num_heads, mlp_ratio: transformer width, number of blocks, heads
            and MLP expansion.
        time_conditioning: ``"adaln"`` (DiT's adaLN-Zero) or ``"token"`` (U-ViT).
        long_skip: U-ViT long skips between block ``i`` and block ``depth - 1 - i`` for
            ``i < depth // 2``; ``None`` means on for ``"token"``, off for ``"adaln"``.
        time_embedding, time_embed_dim, time_scale: the time trunk (see
            :class:`~polydiff.core.nn.embeddings.TimestepMLP`; ``time_scale=1000`` suits
            ``t in [0, 1]``).
        num_classes: optional class conditioning with a null class for classifier-free
            guidance (a token in ``"token"`` mode, added to the time embedding in ``"adaln"``).
        cond_channels: optional extra per-token features concatenated to the input.
        dropout: attention and MLP dropout.
        qkv_bias: bias in the query/key/value projection.
    """

    in_channels: int = 4
    out_channels: int | None = None
    num_tokens: int = 256
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    time_conditioning: Literal["adaln", "token"] = "adaln"
    long_skip: bool | None = None
    time_embedding: Literal["sinusoidal", "fourier"] = "sinusoidal"
    time_embed_dim: int = 256
    time_scale: float = 1000.0
    num_classes: int | None = None
    cond_channels: int = 0
    dropout: float = 0.0
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.time_conditioning not in ("adaln", "token"):
            raise ValueError(f"time_conditioning must be 'adaln' or 'token', got "
                             f"{self.time_conditioning!r}")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}")
        if min(self.in_channels, self.num_tokens, self.hidden_size, self.depth) < 1:
            raise ValueError("in_channels, num_tokens, hidden_size and depth must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")

    @property
    def uses_long_skip(self) -> bool:
        return self.time_conditioning == "token" if self.long_skip is None else self.long_skip

    @classmethod
    def tiny(cls, time_conditioning: Literal["adaln", "token"] = "adaln",
             **overrides: object) -> DiffusionTransformerConfig:
        """A few-thousand-parameter model for tests."""
        base = dict(in_channels=4, num_tokens=16, hidden_size=32, depth=3, num_heads=2,
                    time_embed_dim=16, time_conditioning=time_conditioning)
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


class _Stem(nn.Module):
    def __init__(self, cfg: DiffusionTransformerConfig, extras: int):
        super().__init__()
        d = cfg.hidden_size
        self.proj = nn.Linear(cfg.in_channels + cfg.cond_channels, d)
        self.time = TimestepMLP(cfg.time_embed_dim, d, kind=cfg.time_embedding,
                                time_scale=cfg.time_scale)
        self.label = LabelEmbedding(cfg.num_classes, d) if cfg.num_classes else None
        self.pos = nn.Parameter(torch.zeros(1, extras + cfg.num_tokens, d))


class _Head(nn.Module):
    def __init__(self, cfg: DiffusionTransformerConfig, out: int):
        super().__init__()
        d, adaln = cfg.hidden_size, cfg.time_conditioning == "adaln"
        self.norm = nn.LayerNorm(d, elementwise_affine=not adaln, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d)) if adaln else None
        self.linear = nn.Linear(d, out)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if self.modulation is None:
            return self.linear(self.norm(x))
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(x), shift, scale))


@register_model
class DiffusionTransformer(PretrainedMixin, nn.Module):
    """Transformer denoiser over ``(B, N, C)`` tokens: DiT (adaLN-Zero, Peebles & Xie 2023) or
    U-ViT (time/class tokens and long skips, Bao et al. 2023), see the module docstring.

    Blocks are addressable (:meth:`named_blocks`): ``"blocks.0"`` ... ``"blocks.{depth-1}"``
    in execution order; the rest of the parameters live in ``stem`` (input projection, time
    and label embeddings, positional table) and ``head`` (final norm and projection).
    """

    config_class = DiffusionTransformerConfig

    def __init__(self, config: DiffusionTransformerConfig):
        super().__init__()
        self.config = cfg = config
        adaln = cfg.time_conditioning == "adaln"
        self.num_extra_tokens = 0 if adaln else 1 + (1 if cfg.num_classes else 0)
        self.num_skips = cfg.depth // 2 if cfg.uses_long_skip else 0
        self.stem = _Stem(cfg, self.num_extra_tokens)
        self.blocks = nn.ModuleList([
            TransformerBlock(cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio, adaln=adaln,
                             skip=i >= cfg.depth - self.num_skips, dropout=cfg.dropout,
                             qkv_bias=cfg.qkv_bias)
            for i in range(cfg.depth)
        ])
        self.head = _Head(cfg, cfg.out_channels or cfg.in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears, zero biases, N(0, 0.02) tables (ViT / DiT); adaLN-Zero
        modulations and the adaLN head's projection start at zero (DiT Sec. 3.2)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.stem.pos, std=0.02)
        if self.stem.label is not None:
            nn.init.normal_(self.stem.label.embedding.weight, std=0.02)
        for lin in (self.stem.time.linear_1, self.stem.time.linear_2):
            nn.init.normal_(lin.weight, std=0.02)
        zero: list[nn.Module] = []
        for b in self.blocks:
            assert isinstance(b, TransformerBlock)
            if b.modulation is not None:
                zero.append(b.modulation[-1])
        if self.head.modulation is not None:
            zero += [self.head.modulation[-1], self.head.linear]
        for m in zero:
            assert isinstance(m, nn.Linear)
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def block_names(self) -> list[str]:
        """Names of the blocks in execution order (stable across runs and saves)."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def named_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """``(name, module)`` per block; ``name`` is also its path for ``get_submodule``."""
        for name in self.block_names():
            yield name, self.get_submodule(name)

    def forward(self, x: Tensor, t: Tensor | float, *, class_labels: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, C)`` tokens; ``t``: ``(B,)`` times (or a scalar); ``class_labels``:
        ``(B,)`` ints (``None`` / negative = null class); ``cond``: ``(B, N, cond_channels)``.
        Returns ``(B, N, out_channels)``."""
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"expected tokens (B, N, {cfg.in_channels}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        if n > cfg.num_tokens:
            raise ValueError(f"{n} tokens exceed num_tokens={cfg.num_tokens}")
        if cfg.cond_channels:
            if cond is None or cond.shape != (b, n, cfg.cond_channels):
                raise ValueError(f"cond must have shape ({b}, {n}, {cfg.cond_channels})")
            x = torch.cat([x, cond.to(x.dtype)], dim=-1)
        elif cond is not None:
            raise ValueError("this model was built with cond_channels=0: cond is not accepted")
        stem = self.stem
        c = stem.time(batch_time(t, b, x.device))
        label = None
        if stem.label is not None:
            label = stem.label(class_labels, b)
        else:
            check_no_labels(class_labels, type(self).__name__)
        h = stem.proj(x)
        if cfg.time_conditioning == "adaln":
            c = c if label is None else c + label
            h = h + stem.pos[:, :n]
        else:
            extra = [c.unsqueeze(1)] + ([] if label is None else [label.unsqueeze(1)])
            h = torch.cat([*extra, h], dim=1) + stem.pos[:, : self.num_extra_tokens + n]
        skips: list[Tensor] = []
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks):
            skip = skips.pop() if i >= depth - self.num_skips else None
            h = block(h, c, skip)
            if i < self.num_skips:
                skips.append(h)
        h = h[:, self.num_extra_tokens:]
        return self.head(h, c)
