"""The score network of SGMSE+: an NCSN++-style 2-D U-Net on complex spectrograms.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+), Sec. III-C: the network takes the real and
imaginary parts of the current process state ``x_t`` and of the noisy condition ``y`` as four
real channels (``(B, 4, F, N)``), embeds the diffusion time with Gaussian Fourier features of
``log t`` (scale 16) and returns two channels, the real and imaginary parts of its prediction
(in SGMSE+ the score itself: the output is *not* divided by ``sigma(t)``; see
:mod:`polydiff.speech.sgmse.model`).

The U-Net is polydiff-core's DDPM U-Net (:class:`polydiff.core.nn.UNet`, ``dims=2``,
``time_embedding="fourier"``) with NCSN++'s level layout. Differences from the NCSN++ of Song
et al. (2021) used by SGMSE+, kept out on purpose (no compiled ops, one engine network):

* no progressive input/output pyramids (``input_skip`` / ``output_skip``) and no FIR
  (``[1, 3, 3, 1]``) resampling: down-sampling is a strided 3x3 convolution and up-sampling is
  nearest-neighbour followed by a 3x3 convolution;
* plain DDPM ResNet blocks (additive time embedding) instead of BigGAN up/down ResNet blocks,
  and no ``1/sqrt(2)`` skip rescaling.

:class:`SpecAdapter` is the complex <-> real-channel wrapper around any real-channel backbone
``backbone(h, time)``; :class:`NCSNpp` is that adapter around a core U-Net, registered with the
core hub so ``save_pretrained`` / ``from_pretrained`` round-trip it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.nn import PretrainedMixin, UNet, UNetConfig, register_model

__all__ = [
    "PRESETS", "NCSNppConfig", "NCSNpp", "SpecAdapter", "complex_to_channels",
    "channels_to_complex",
]

PRESETS: tuple[str, ...] = ("tiny", "small", "paper")


def complex_to_channels(*specs: Tensor) -> Tensor:
    """Complex spectrograms ``(B, 1, F, N)`` -> real channels ``(B, 2 k, F, N)``, ordered
    ``(re_1, im_1, re_2, im_2, ...)`` as in SGMSE+'s network input."""
    parts = []
    for s in specs:
        if not s.is_complex():
            raise TypeError(f"expected a complex spectrogram, got dtype {s.dtype}")
        if s.ndim != 4 or s.shape[1] != 1:
            raise ValueError(f"expected a spectrogram of shape (B, 1, F, N), got {tuple(s.shape)}")
        parts += [s.real, s.imag]
    return torch.cat(parts, dim=1)


def channels_to_complex(h: Tensor) -> Tensor:
    """Real channels ``(B, 2, F, N)`` (real, imaginary) -> a complex ``(B, 1, F, N)``."""
    if h.ndim != 4 or h.shape[1] != 2:
        raise ValueError(f"expected (B, 2, F, N) real channels, got {tuple(h.shape)}")
    if h.dtype not in (torch.float32, torch.float64):  # half precision (autocast)
        h = h.float()
    return torch.complex(h[:, :1], h[:, 1:])


class SpecAdapter(nn.Module):
    """Run a real-channel backbone on complex spectrograms.

    ``forward(x, t, y=None)``: ``x`` and ``y`` complex ``(B, 1, F, N)``, ``t`` process times
    ``(B,)``. The backbone is called as ``backbone(h, log(t))`` with ``h`` the stacked real
    channels (``x`` then ``y`` when ``conditional``; ``y`` only otherwise, as the predictive
    baseline that sees no ``x_t``) and must return ``(B, 2, F, N)``.
    """

    def __init__(self, backbone: Callable[[Tensor, Tensor], Tensor], conditional: bool = True):
        super().__init__()
        self.backbone = backbone
        self.conditional = conditional
        self._compiled: Callable[[Tensor, Tensor], Tensor] | None = None

    def compile_backbone(self, enabled: bool = True, **compile_kw: Any) -> None:
        """Run the (real-valued) backbone through :func:`polydiff.gpu.maybe_compile` (eager
        fallback) from now on, or stop doing so (``enabled=False``). The compiled module is
        not a registered child: parameters, state dicts and checkpoints are unchanged."""
        if not enabled:
            self.__dict__["_compiled"] = None
            return
        from polydiff.gpu import maybe_compile

        compiled = maybe_compile(self.backbone, **compile_kw)
        self.__dict__["_compiled"] = None if compiled is self.backbone else compiled

    def __deepcopy__(self, memo: dict[int, Any]) -> SpecAdapter:
        """Copies never carry the compiled wrapper (it is rebuilt on demand)."""
        cls = type(self)
        out = cls.__new__(cls)
        memo[id(self)] = out
        for k, v in self.__dict__.items():
            out.__dict__[k] = None if k == "_compiled" else copy.deepcopy(v, memo)
        return out

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        if self.conditional:
            if y is None:
                raise ValueError("this network is conditional: pass the noisy spectrogram y")
            h = complex_to_channels(x, y)
        else:
            h = complex_to_channels(x if y is None else y)
        t = torch.as_tensor(t, device=h.device, dtype=h.dtype)
        t = t.reshape(1).expand(h.shape[0]) if t.ndim == 0 else t
        # SGMSE+ (like NCSN++) embeds log t with Gaussian Fourier features
        backbone = self._compiled if self._compiled is not None else self.backbone
        out = backbone(h, torch.log(t.clamp_min(1e-12)))
        return channels_to_complex(out)


@dataclass
class NCSNppConfig:
    """Configuration of :class:`NCSNpp` (the U-Net fields mean what they mean in
    :class:`polydiff.core.nn.UNetConfig`).

    Attributes:
        base_channels: width of the first level (NCSN++'s ``nf``).
        channel_mults: one multiplier per resolution level (NCSN++'s ``ch_mult``).
        num_res_blocks: ResNet blocks per level on the down path.
        attention_levels: levels with self-attention (NCSN++: the 16-bin level).
        mid_attention: self-attention in the middle block.
        num_heads, dropout, norm_groups: as in the core U-Net.
        conditional: input is ``(x_t, y)`` (4 channels, the score model); ``False``: ``y``
            only (2 channels, the predictive baseline).
    """

    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (4,)
    mid_attention: bool = True
    num_heads: int = 1
    dropout: float = 0.0
    norm_groups: int = 32
    conditional: bool = True

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_levels = tuple(int(i) for i in self.attention_levels)
        self.unet_config()  # validate through the core U-Net's checks

    @property
    def in_channels(self) -> int:
        return 4 if self.conditional else 2

    def unet_config(self) -> UNetConfig:
        """The core :class:`~polydiff.core.nn.UNetConfig` this network is built from."""
        return UNetConfig(
            dims=2, in_channels=self.in_channels, out_channels=2,
            base_channels=self.base_channels, channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks, attention_levels=self.attention_levels,
            num_heads=self.num_heads, mid_attention=self.mid_attention, dropout=self.dropout,
            time_embedding="fourier", time_scale=1.0, scale_shift=False,
            norm_groups=self.norm_groups, resample="conv")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> NCSNppConfig:
        """A named size: ``"tiny"`` (about 10k parameters, CPU tests), ``"small"``
        (about 1.5M, a CPU demo that trains in minutes) or ``"paper"`` (SGMSE+'s NCSN++ level
        layout: ``nf = 128``, multipliers ``(1, 1, 2, 2, 2, 2, 2)``, 2 ResNet blocks per
        level, attention at the 16-bin level and in the middle; about 58M parameters here; the
        paper's NCSN++ with its BigGAN blocks and pyramids has about 65M)."""
        if name == "tiny":
            base = cls(base_channels=4, channel_mults=(1, 2), num_res_blocks=1,
                       attention_levels=(), mid_attention=False, norm_groups=2)
        elif name == "small":
            base = cls(base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1,
                       attention_levels=(), mid_attention=True, num_heads=2, norm_groups=8)
        elif name == "paper":
            base = cls()
        else:
            raise ValueError(f"unknown NCSN++ preset {name!r}; expected one of {PRESETS}")
        return replace(base, **overrides) if overrides else base


@register_model
class NCSNpp(PretrainedMixin, SpecAdapter):
    """NCSN++-style score network of SGMSE+ (see the module docstring): a core 2-D U-Net
    with Gaussian Fourier time features behind :class:`SpecAdapter`.

    ``forward(x, t, y)`` -> complex ``(B, 1, F, N)``; ``F`` and ``N`` must be multiples of
    :attr:`padding_multiple`.
    """

    config_class = NCSNppConfig

    def __init__(self, config: NCSNppConfig):
        super().__init__(UNet(config.unet_config()), conditional=config.conditional)
        self.config = config

    @property
    def padding_multiple(self) -> int:
        """Spectrogram sizes must be multiples of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
