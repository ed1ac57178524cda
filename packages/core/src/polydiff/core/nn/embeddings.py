"""Time (noise-level) embeddings shared by every polydiff backbone.

All embeddings take a per-sample time ``t`` of shape ``(B,)`` (a scalar or a ``(1,)`` tensor
is broadcast by :func:`batch_time`) of any floating dtype and scale; the arithmetic runs in
``t``'s dtype (float64 when samplers pass schedule times) and the result is cast to the
embedding's output dtype by the caller's first linear layer. What "time" means is the
caller's choice: a discrete step index ``0..N-1`` (DDPM), a continuous ``t in [0, 1]`` scaled
by ``time_scale`` (so the sinusoid sees roughly ``0..1000``), or ``log sigma`` (NCSN++ with
the Gaussian Fourier embedding, EDM's ``c_noise = log(sigma) / 4``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "TIME_EMBEDDINGS",
    "GaussianFourierEmbedding",
    "LabelEmbedding",
    "SinusoidalEmbedding",
    "TimestepMLP",
    "batch_time",
    "check_no_labels",
]

TIME_EMBEDDINGS = ("sinusoidal", "fourier")


def batch_time(t: float | Tensor, batch: int, device: torch.device | None = None) -> Tensor:
    """``t`` as a ``(batch,)`` floating tensor: scalars, 0-d and ``(1,)`` tensors are expanded;
    a ``(batch,)`` tensor is returned as is (integer steps become float32)."""
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim == 0 or t.shape == (1,):
        return t.reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"time must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample: the positional encoding of Vaswani et al.
    (2017), "Attention Is All You Need", Sec. 3.5, applied to the diffusion time as in Ho et
    al. (2020), "Denoising Diffusion Probabilistic Models" (App. B).

    ``emb(t) = [sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ..., cos(t f_{h-1})]`` with
    ``h = dim // 2`` and ``f_i = max_period ** (-i / (h - freq_shift))``. ``freq_shift=1`` is
    DDPM's (and diffusers' ``UNet2DModel``) choice, so the lowest frequency is exactly
    ``1 / max_period``; ``freq_shift=0`` is Vaswani et al.'s. An odd ``dim`` is zero-padded.
    The frequencies are a non-persistent buffer: nothing of this module is saved or trained.
    Inputs spanning ``~[0, max_period / 10]`` use the whole frequency range.
    """

    freqs: Tensor

    def __init__(self, dim: int, max_period: float = 10000.0, freq_shift: float = 1.0):
        super().__init__()
        half = dim // 2
        if half < 1 or half - freq_shift <= 0:
            raise ValueError(f"dim={dim} is too small for freq_shift={freq_shift}")
        self.dim, self.max_period, self.freq_shift = dim, float(max_period), float(freq_shift)
        i = torch.arange(half, dtype=torch.float64)
        self.register_buffer(
            "freqs", torch.exp(-math.log(max_period) * i / (half - freq_shift)), persistent=False
        )

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` times -> ``(B, dim)`` embedding, in ``t``'s floating dtype."""
        dtype = t.dtype if t.is_floating_point() else torch.float32
        args = t.to(dtype).unsqueeze(-1) * self.freqs.to(dtype)
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features, Tancik et al. (2020), "Fourier Features Let Networks Learn High
    Frequency Functions in Low Dimensional Domains", used for the noise level by Song et al.
    (2021), "Score-Based Generative Modeling through SDEs" (NCSN++, input ``log sigma``).

    ``emb(t) = [sin(2 pi t w), cos(2 pi t w)]`` with ``w ~ N(0, scale^2)`` of size
    ``dim // 2``, drawn once at construction (from ``generator`` or the global RNG) and kept
    fixed: ``w`` is a persistent buffer (saved, so a reloaded model embeds identically) and
    is never trained.
    """

    weight: Tensor

    def __init__(self, dim: int, scale: float = 16.0, generator: torch.Generator | None = None):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"GaussianFourierEmbedding needs an even dim >= 2, got {dim}")
        self.dim, self.scale = dim, float(scale)
        self.register_buffer("weight", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` times -> ``(B, dim)`` embedding, in ``t``'s floating dtype."""
        dtype = t.dtype if t.is_floating_point() else torch.float32
        args = 2 * math.pi * t.to(dtype).unsqueeze(-1) * self.weight.to(dtype)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class TimestepMLP(nn.Module):
    """The time-conditioning trunk of DDPM-style networks (Ho et al. 2020): ``t -> embed(t *
    time_scale) -> Linear -> SiLU -> Linear``, giving a ``(B, out_dim)`` vector in the
    layers' dtype.

    Args:
        embed_dim: width of the fixed embedding (sinusoidal or Gaussian Fourier).
        out_dim: width of the output (DDPM: ``4 * base_channels``).
        kind: ``"sinusoidal"`` (:class:`SinusoidalEmbedding`) or ``"fourier"``
            (:class:`GaussianFourierEmbedding`).
        time_scale: multiplies ``t`` before embedding (e.g. 1000 for ``t in [0, 1]`` with the
            sinusoid; 1 for DDPM step indices or for ``log sigma`` with Fourier features).
        fourier_scale: standard deviation of the Fourier frequencies.
    """

    def __init__(self, embed_dim: int, out_dim: int, *,
                 kind: Literal["sinusoidal", "fourier"] = "sinusoidal",
                 time_scale: float = 1.0, fourier_scale: float = 16.0):
        super().__init__()
        if kind == "sinusoidal":
            self.embed: nn.Module = SinusoidalEmbedding(embed_dim)
        elif kind == "fourier":
            self.embed = GaussianFourierEmbedding(embed_dim, scale=fourier_scale)
        else:
            raise ValueError(f"time embedding must be one of {TIME_EMBEDDINGS}, got {kind!r}")
        self.time_scale = float(time_scale)
        self.linear_1 = nn.Linear(embed_dim, out_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` times -> ``(B, out_dim)``."""
        emb = self.embed(t * self.time_scale if self.time_scale != 1.0 else t)
        emb = emb.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(emb)))


class LabelEmbedding(nn.Module):
    """Class-label embedding with a learned null class for classifier-free guidance (Ho &
    Salimans 2022): ``num_classes + 1`` rows, the last (index ``num_classes``) being "no
    label". ``labels=None`` and negative labels (e.g. ``-1``) select the null class, so one
    network serves the conditional and the unconditional model."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor | None, batch: int) -> Tensor:
        """``(B,)`` integer labels (or ``None``) -> ``(B, dim)``."""
        device = self.embedding.weight.device
        if labels is None:
            idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            idx = torch.as_tensor(labels, device=device).long()
            if idx.ndim == 0:
                idx = idx.expand(batch)
            if idx.shape != (batch,):
                raise ValueError(f"class_labels must have shape ({batch},), got "
                                 f"{tuple(idx.shape)}")
            if bool((idx > self.num_classes).any()):
                raise ValueError(f"class labels must be < {self.num_classes} (or "
                                 f"{self.num_classes} / negative for the null class)")
            idx = torch.where(idx < 0, torch.full_like(idx, self.num_classes), idx)
        return self.embedding(idx)


def check_no_labels(class_labels: Tensor | None, name: str) -> None:
    """Raise if labels are given to a model built without ``num_classes``."""
    if class_labels is not None:
        raise ValueError(f"{name} was built without num_classes: class_labels are not accepted")
