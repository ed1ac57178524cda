"""The DDPM U-Net for 1-D, 2-D (and 3-D) signals from one code path.

Ho et al. (2020), "Denoising Diffusion Probabilistic Models", App. B: a PixelCNN++-style
U-Net of wide ResNet blocks (GroupNorm, SiLU) with a sinusoidal time embedding added in
every block, self-attention at chosen resolutions, and skip connections between the down and
up paths. Options from later work: FiLM / scale-shift time conditioning (``h = norm(h)(1 +
scale) + shift``, Nichol & Dhariwal 2021, "Improved DDPM"; Dhariwal & Nichol 2021 "AdaGN"),
multi-head attention, Gaussian Fourier time features (Song et al. 2021, NCSN++), class
conditioning with a null class for classifier-free guidance (Ho & Salimans 2022) and extra
input channels (a condition concatenated to the input, e.g. SGMSE's noisy spectrogram ``y``,
Richter et al. 2023).

Convolution and pooling classes are picked from an explicit table by ``dims``, so a waveform
``(B, C, L)``, a spectrogram or image ``(B, C, H, W)`` and a volume ``(B, C, D, H, W)`` use
the same blocks.
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
from polydiff.core.nn.transformer import SelfAttention
from polydiff.core.shapes import append_dims

__all__ = ["AttentionBlock", "Downsample", "ResBlock", "UNet", "UNetConfig", "Upsample"]

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_AVGPOOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _conv(dims: int, cin: int, cout: int, kernel: int, **kw: int) -> nn.Module:
    return _CONV[dims](cin, cout, kernel, **kw)


def _norm(groups: int, ch: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(groups, ch)`` groups (32 for DDPM's widths; fewer for tiny ones)."""
    return nn.GroupNorm(math.gcd(groups, ch), ch, eps=1e-6)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """DDPM's residual block: ``GN-SiLU-conv``, time embedding (added, or scale-shift), ``GN-
    SiLU-dropout-conv`` (zero-initialised), plus a 1x1 shortcut when the width changes."""

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, *, dropout: float = 0.0,
                 groups: int = 32, scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = _norm(groups, cin)
        self.conv1 = _conv(dims, cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout if scale_shift else cout)
        self.norm2 = _norm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(_conv(dims, cout, cout, 3, padding=1))
        self.shortcut = _conv(dims, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = append_dims(self.emb(F.silu(emb)), h)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Residual self-attention over all positions of a ``(B, C, *spatial)`` map (GroupNorm,
    then :class:`~polydiff.core.nn.transformer.SelfAttention` with a zero-initialised output
    projection, as DDPM's ``attn_block``)."""

    def __init__(self, ch: int, num_heads: int = 1, groups: int = 32):
        super().__init__()
        self.norm = _norm(groups, ch)
        self.attn = SelfAttention(ch, num_heads)
        _zero(self.attn.proj)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(h).transpose(1, 2).reshape(x.shape)


class Downsample(nn.Module):
    """Halve every spatial size: stride-2 3x3 convolution (``"conv"``) or average pooling."""

    def __init__(self, dims: int, ch: int, mode: str):
        super().__init__()
        self.op = (_conv(dims, ch, ch, 3, stride=2, padding=1) if mode == "conv"
                   else _AVGPOOL[dims](2))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double every spatial size: nearest-neighbour, then a 3x3 convolution for ``"conv"``."""

    def __init__(self, dims: int, ch: int, mode: str):
        super().__init__()
        self.conv = _conv(dims, ch, ch, 3, padding=1) if mode == "conv" else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


@dataclass
class UNetConfig:
    """Configuration of :class:`UNet`.

    Attributes:
        dims: spatial dimensions: 1 (waveforms, series), 2 (images, spectrograms), 3.
        in_channels, out_channels: channels of ``x`` and of the output (default
            ``in_channels``).
        base_channels: width of level 0; level ``i`` has ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per resolution level.
        num_res_blocks: ResNet blocks per level on the down path (the up path has one more).
        attention_levels: levels (indices into ``channel_mults``) with self-attention after
            every ResNet block; DDPM's 16x16 attention on CIFAR-10 is level 1.
        num_heads: attention heads; mid_attention: attention in the middle block.
        dropout: dropout inside ResNet blocks.
        time_embedding: ``"sinusoidal"`` or ``"fourier"``; time_scale: multiplies ``t``
            before embedding (1000 for ``t in [0, 1]``; 1 for DDPM step indices or
            ``log sigma``).
        scale_shift: FiLM / scale-shift time conditioning (Improved DDPM) instead of DDPM's
            addition.
        num_classes: optional class conditioning (null class = ``num_classes``, or negative
            labels, for classifier-free guidance).
        cond_channels: extra channels concatenated to ``x`` (``forward(..., cond=)``).
        norm_groups: GroupNorm groups (``gcd(norm_groups, width)`` is used).
        resample: ``"conv"`` (strided conv down, nearest + conv up) or ``"avgpool"``
            (average pooling down, nearest up).
    """

    dims: int = 2
    in_channels: int = 3
    out_channels: int | None = None
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)
    num_heads: int = 1
    mid_attention: bool = True
    dropout: float = 0.0
    time_embedding: Literal["sinusoidal", "fourier"] = "sinusoidal"
    time_scale: float = 1000.0
    scale_shift: bool = True
    num_classes: int | None = None
    cond_channels: int = 0
    norm_groups: int = 32
    resample: Literal["conv", "avgpool"] = "conv"

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        if self.dims not in _CONV:
            raise ValueError(f"dims must be 1, 2 or 3, got {self.dims}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError("channel_mults must be a non-empty tuple of positive ints")
        levels = len(self.channel_mults)
        bad = [i for i in self.attention_levels if not 0 <= i < levels]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {levels} levels")
        if min(self.in_channels, self.base_channels, self.num_res_blocks) < 1:
            raise ValueError("in_channels, base_channels and num_res_blocks must be >= 1")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}")
        if self.resample not in ("conv", "avgpool"):
            raise ValueError(f"resample must be 'conv' or 'avgpool', got {self.resample!r}")
        widths = [self.base_channels * m for m in self.channel_mults]
        if any(w % self.num_heads for w in widths):
            raise ValueError(f"every level width {widths} must be divisible by num_heads")

    @classmethod
    def ddpm_cifar10(cls) -> UNetConfig:
        """Ho et al. (2020)'s CIFAR-10 network (35.7M parameters): 128 base channels,
        multipliers (1, 2, 2, 2), 2 ResNet blocks per level, single-head attention at 16x16
        (level 1) and in the middle, dropout 0.1, additive sinusoidal time embedding of the
        step index (``time_scale=1``: feed ``t`` in ``0..999``, e.g. through
        ``ModelDenoiser(..., time_input=process.model_timestep)``)."""
        return cls(dims=2, in_channels=3, out_channels=3, base_channels=128,
                   channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,),
                   num_heads=1, dropout=0.1, time_scale=1.0, scale_shift=False)

    @classmethod
    def tiny(cls, dims: int = 2, **overrides: object) -> UNetConfig:
        """A few-thousand-parameter two-level model for tests."""
        base = dict(dims=dims, in_channels=2, base_channels=8, channel_mults=(1, 2),
                    num_res_blocks=1, attention_levels=(1,), num_heads=2, norm_groups=4)
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


class _Level(nn.Module):
    """One resolution level of a path: ResNet blocks, optional attention after each, and an
    optional resampler."""

    def __init__(self, res: list[ResBlock], attn: list[AttentionBlock]):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.downsample: Downsample | None = None
        self.upsample: Upsample | None = None


class _Stem(nn.Module):
    """The input layers; filled in by :class:`UNet` (the names are state-dict keys)."""

    time: TimestepMLP
    label: LabelEmbedding | None
    conv: nn.Module


class _Head(nn.Module):
    """The output layers; filled in by :class:`UNet`."""

    norm: nn.GroupNorm
    conv: nn.Module


class _Mid(nn.Module):
    def __init__(self, res: list[ResBlock], attn: AttentionBlock | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = attn


@register_model
class UNet(PretrainedMixin, nn.Module):
    """The DDPM U-Net (Ho et al. 2020) for ``dims``-dimensional signals; see the module
    docstring and :class:`UNetConfig`.

    Blocks are addressable (:meth:`named_blocks`, in execution order; each name is the
    block's path for ``get_submodule``): ``down.{i}.res.{j}``, ``down.{i}.attn.{j}``,
    ``down.{i}.downsample``, ``mid.res.0``, ``mid.attn``, ``mid.res.1``, ``up.{i}.res.{j}``,
    ``up.{i}.attn.{j}``, ``up.{i}.upsample``, where level ``i`` is the resolution level
    (``down.i`` and ``up.i`` work at the same size). Everything else lives in ``stem`` (time
    and label embeddings, input convolution) and ``head`` (GroupNorm, SiLU, output
    convolution).
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        d, g = cfg.dims, cfg.norm_groups
        emb_dim = 4 * cfg.base_channels
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        levels = len(widths)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(d, cin, cout, emb_dim, dropout=cfg.dropout, groups=g,
                            scale_shift=cfg.scale_shift)

        self.stem = _Stem()
        self.stem.time = TimestepMLP(cfg.base_channels, emb_dim, kind=cfg.time_embedding,
                                     time_scale=cfg.time_scale)
        self.stem.label = LabelEmbedding(cfg.num_classes, emb_dim) if cfg.num_classes else None
        self.stem.conv = _conv(d, cfg.in_channels + cfg.cond_channels, cfg.base_channels, 3,
                               padding=1)

        skips, ch = [cfg.base_channels], cfg.base_channels
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(res(ch, w))
                ch = w
                if i in cfg.attention_levels:
                    attns.append(AttentionBlock(ch, cfg.num_heads, g))
                skips.append(ch)
            level = _Level(blocks, attns)
            if i < levels - 1:
                level.downsample = Downsample(d, ch, cfg.resample)
                skips.append(ch)
            self.down.append(level)

        self.mid = _Mid([res(ch, ch), res(ch, ch)],
                        AttentionBlock(ch, cfg.num_heads, g) if cfg.mid_attention else None)

        up: list[_Level] = []
        for i in reversed(range(levels)):
            w, blocks, attns = widths[i], [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(res(ch + skips.pop(), w))
                ch = w
                if i in cfg.attention_levels:
                    attns.append(AttentionBlock(ch, cfg.num_heads, g))
            level = _Level(blocks, attns)
            if i > 0:
                level.upsample = Upsample(d, ch, cfg.resample)
            up.append(level)
        self.up = nn.ModuleList(up[::-1])  # indexed by resolution level

        self.head = _Head()
        self.head.norm = _norm(g, ch)
        self.head.conv = _zero(_conv(d, ch, cfg.out_channels or cfg.in_channels, 3, padding=1))

    @property
    def padding_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (``2 ** (levels-1)``)."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def block_names(self) -> list[str]:
        """Names of the blocks in execution order (stable across runs and saves)."""
        names: list[str] = []
        for i, level in enumerate(self.down):
            assert isinstance(level, _Level)
            for j in range(len(level.res)):
                names.append(f"down.{i}.res.{j}")
                names += [f"down.{i}.attn.{j}"] if len(level.attn) else []
            names += [f"down.{i}.downsample"] if level.downsample is not None else []
        names += ["mid.res.0"] + (["mid.attn"] if self.mid.attn is not None else [])
        names.append("mid.res.1")
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            assert isinstance(level, _Level)
            for j in range(len(level.res)):
                names.append(f"up.{i}.res.{j}")
                names += [f"up.{i}.attn.{j}"] if len(level.attn) else []
            names += [f"up.{i}.upsample"] if level.upsample is not None else []
        return names

    def named_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """``(name, module)`` per block, in execution order."""
        for name in self.block_names():
            yield name, self.get_submodule(name)

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        cfg, m = self.config, self.padding_multiple
        if x.ndim != cfg.dims + 2 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected x of shape (B, {cfg.in_channels}, <{cfg.dims} sizes>), "
                             f"got {tuple(x.shape)}")
        if any(s % m for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {m} "
                             f"(padding_multiple of a {len(cfg.channel_mults)}-level UNet)")
        if cfg.cond_channels:
            want = (x.shape[0], cfg.cond_channels, *x.shape[2:])
            if cond is None or tuple(cond.shape) != want:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must have shape {want}, got {got}")
        elif cond is not None:
            raise ValueError("this UNet was built with cond_channels=0: cond is not accepted")

    def forward(self, x: Tensor, t: Tensor | float, *, class_labels: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        """``x``: ``(B, in_channels, *spatial)``; ``t``: ``(B,)`` times (or a scalar);
        ``class_labels``: ``(B,)`` ints (``None`` / negative = null class); ``cond``: ``(B,
        cond_channels, *spatial)``. Returns ``(B, out_channels, *spatial)``."""
        self._check(x, cond)
        emb = self.stem.time(batch_time(t, x.shape[0], x.device))
        if self.stem.label is not None:
            emb = emb + self.stem.label(class_labels, x.shape[0])
        else:
            check_no_labels(class_labels, type(self).__name__)
        h = self.stem.conv(x if cond is None else torch.cat([x, cond.to(x.dtype)], dim=1))
        hs = [h]
        for level in self.down:
            assert isinstance(level, _Level)
            for j, block in enumerate(level.res):
                h = block(h, emb)
                h = level.attn[j](h) if len(level.attn) else h
                hs.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
                hs.append(h)
        h = self.mid.res[0](h, emb)
        h = self.mid.attn(h) if self.mid.attn is not None else h
        h = self.mid.res[1](h, emb)
        for level in reversed(self.up):
            assert isinstance(level, _Level)
            for j, block in enumerate(level.res):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                h = level.attn[j](h) if len(level.attn) else h
            if level.upsample is not None:
                h = level.upsample(h)
        return self.head.conv(F.silu(self.head.norm(h)))
