"""A WaveNet-style 1-D denoiser: DiffWave's non-autoregressive residual network.

Kong et al. (2021), "DiffWave: A Versatile Diffusion Model for Audio Synthesis", Sec. 3 and
Fig. 2, after van den Oord et al. (2016), "WaveNet": residual layers of a bidirectional
dilated convolution (dilation ``2 ** (i % cycle)``), a gated activation ``tanh(a) *
sigmoid(b)``, residual outputs scaled by ``1 / sqrt(2)`` and skip outputs summed over layers
(scaled by ``1 / sqrt(L)``); the diffusion-step embedding is projected and added in every
layer, and optional conditioner channels (a mel spectrogram already upsampled to the signal's
length, a noisy waveform, a series' covariates) are projected by 1x1 convolutions and added
before the gate. Works for any ``(B, C, L)`` signal: waveforms, time series, frame sequences.
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
from polydiff.core.shapes import append_dims

__all__ = ["ResidualLayer", "WaveNet", "WaveNetConfig"]


@dataclass
class WaveNetConfig:
    """Configuration of :class:`WaveNet` (defaults: DiffWave-Base, 30 layers, 64 channels).

    Attributes:
        in_channels, out_channels: channels of ``x`` and of the output (default
            ``in_channels``).
        residual_channels: width ``C`` of the residual stream.
        num_layers: residual layers; dilation_cycle: layer ``i`` has dilation
            ``2 ** (i % dilation_cycle)``; kernel_size: of the dilated convolution (odd).
        time_embedding, time_embed_dim, time_hidden, time_scale: the diffusion-step trunk
            (DiffWave: sinusoidal, 128 -> 512; ``time_scale=1000`` suits ``t in [0, 1]``).
        cond_channels: conditioner channels (``forward(..., cond=)`` of shape ``(B,
            cond_channels, L)``); 0 for an unconditional model.
        num_classes: optional class conditioning (null class for classifier-free guidance),
            added to the step embedding.
    """

    in_channels: int = 1
    out_channels: int | None = None
    residual_channels: int = 64
    num_layers: int = 30
    dilation_cycle: int = 10
    kernel_size: int = 3
    time_embedding: Literal["sinusoidal", "fourier"] = "sinusoidal"
    time_embed_dim: int = 128
    time_hidden: int = 512
    time_scale: float = 1000.0
    cond_channels: int = 0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if min(self.in_channels, self.residual_channels, self.num_layers,
               self.dilation_cycle) < 1:
            raise ValueError("channels, num_layers and dilation_cycle must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}")

    @classmethod
    def tiny(cls, **overrides: object) -> WaveNetConfig:
        """A few-thousand-parameter model for tests."""
        base = dict(in_channels=1, residual_channels=8, num_layers=4, dilation_cycle=2,
                    time_embed_dim=16, time_hidden=32)
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


class ResidualLayer(nn.Module):
    """One DiffWave residual layer: ``y = dilated_conv(x + proj(emb)) (+ cond_proj(c))``,
    ``z = tanh(y_a) * sigmoid(y_b)``, ``out_proj(z) = (residual, skip)``; returns ``((x +
    residual) / sqrt(2), skip)``."""

    def __init__(self, channels: int, emb_dim: int, dilation: int, kernel_size: int = 3,
                 cond_channels: int = 0):
        super().__init__()
        self.time_proj = nn.Linear(emb_dim, channels)
        self.dilated_conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                                      padding=dilation * (kernel_size // 2))
        self.cond_proj = nn.Conv1d(cond_channels, 2 * channels, 1) if cond_channels else None
        self.out_proj = nn.Conv1d(channels, 2 * channels, 1)
        nn.init.kaiming_normal_(self.dilated_conv.weight)
        nn.init.kaiming_normal_(self.out_proj.weight)
        if self.cond_proj is not None:
            nn.init.kaiming_normal_(self.cond_proj.weight)

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        y = self.dilated_conv(x + append_dims(self.time_proj(emb), x))
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this layer is conditional: pass cond")
            y = y + self.cond_proj(cond)
        gate, filt = y.chunk(2, dim=1)
        residual, skip = self.out_proj(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class _Stem(nn.Module):
    """The input layers; filled in by :class:`WaveNet` (the names are state-dict keys)."""

    conv: nn.Conv1d
    time: TimestepMLP
    label: LabelEmbedding | None


class _Head(nn.Module):
    """The output layers; filled in by :class:`WaveNet`."""

    skip: nn.Conv1d
    out: nn.Conv1d


@register_model
class WaveNet(PretrainedMixin, nn.Module):
    """DiffWave's network (Kong et al. 2021) for ``(B, C, L)`` signals of any length.

    Blocks are addressable (:meth:`named_blocks`): ``"layers.0"`` ... ``"layers.{L-1}"``;
    the rest lives in ``stem`` (input 1x1 convolution + ReLU, step and label embeddings) and
    ``head`` (skip 1x1 convolution + ReLU, zero-initialised output 1x1 convolution).
    """

    config_class = WaveNetConfig

    def __init__(self, config: WaveNetConfig):
        super().__init__()
        self.config = cfg = config
        c = cfg.residual_channels
        self.stem = _Stem()
        self.stem.conv = nn.Conv1d(cfg.in_channels, c, 1)
        nn.init.kaiming_normal_(self.stem.conv.weight)
        self.stem.time = TimestepMLP(cfg.time_embed_dim, cfg.time_hidden,
                                     kind=cfg.time_embedding, time_scale=cfg.time_scale)
        self.stem.label = (LabelEmbedding(cfg.num_classes, cfg.time_hidden)
                           if cfg.num_classes else None)
        self.layers = nn.ModuleList([
            ResidualLayer(c, cfg.time_hidden, 2 ** (i % cfg.dilation_cycle), cfg.kernel_size,
                          cfg.cond_channels)
            for i in range(cfg.num_layers)
        ])
        self.head = _Head()
        self.head.skip = nn.Conv1d(c, c, 1)
        nn.init.kaiming_normal_(self.head.skip.weight)
        self.head.out = nn.Conv1d(c, cfg.out_channels or cfg.in_channels, 1)
        nn.init.zeros_(self.head.out.weight)
        assert self.head.out.bias is not None  # Conv1d's default bias=True
        nn.init.zeros_(self.head.out.bias)

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output sample: ``1 + (k - 1) * sum(dilations)``."""
        cfg = self.config
        return 1 + (cfg.kernel_size - 1) * sum(2 ** (i % cfg.dilation_cycle)
                                                for i in range(cfg.num_layers))

    def block_names(self) -> list[str]:
        """Names of the blocks in execution order (stable across runs and saves)."""
        return [f"layers.{i}" for i in range(len(self.layers))]

    def named_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """``(name, module)`` per block; ``name`` is also its path for ``get_submodule``."""
        for name in self.block_names():
            yield name, self.get_submodule(name)

    def forward(self, x: Tensor, t: Tensor | float, *, class_labels: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        """``x``: ``(B, in_channels, L)``; ``t``: ``(B,)`` times (or a scalar);
        ``class_labels``: ``(B,)`` ints (``None`` / negative = null class); ``cond``: ``(B,
        cond_channels, L)`` (upsample mel frames to ``L`` first). Returns ``(B, out_channels,
        L)``."""
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected x of shape (B, {cfg.in_channels}, L), got "
                             f"{tuple(x.shape)}")
        if cfg.cond_channels:
            want = (x.shape[0], cfg.cond_channels, x.shape[-1])
            if cond is None or tuple(cond.shape) != want:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must have shape {want}, got {got}")
            cond = cond.to(x.dtype)
        elif cond is not None:
            raise ValueError("this WaveNet was built with cond_channels=0: cond is not accepted")
        emb = self.stem.time(batch_time(t, x.shape[0], x.device))
        if self.stem.label is not None:
            emb = emb + self.stem.label(class_labels, x.shape[0])
        else:
            check_no_labels(class_labels, type(self).__name__)
        emb = F.silu(emb)
        h = F.relu(self.stem.conv(x))
        skip_sum = torch.zeros_like(h)
        for layer in self.layers:
            h, skip = layer(h, emb, cond)
            skip_sum = skip_sum + skip
        h = F.relu(self.head.skip(skip_sum / math.sqrt(len(self.layers))))
        return self.head.out(h)
