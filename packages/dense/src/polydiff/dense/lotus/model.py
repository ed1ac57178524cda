"""Lotus: single-step diffusion for dense prediction (depth, surface normals).

Implements the adaptation of He et al. (2024), "Lotus: Diffusion-based Visual Foundation Model
for High-quality Dense Prediction", Sec. 3-4, at a small scale:

* a pretrained image diffusion prior (here a small core :class:`~polydiff.core.nn.UNet`
  trained in the repo on crops of the bundled photographs, the stand-in for Stable
  Diffusion) is turned into an image-conditioned predictor by doubling its input channels
  (noisy annotation + image); the first convolution is initialised from the prior's by
  copying its weights into both halves and halving them (:func:`adapt_prior`);
* the network predicts the annotation itself (x0 parameterisation), at the single timestep
  ``t = T``, in one step: the *generative* variant ``G`` feeds the noisy annotation ``x_T``
  (pure noise at ``T``), the *discriminative* variant ``D`` feeds zeros (deterministic);
* the *detail preserver*: a task switch, a learned embedding added to the time embedding
  (core's class-label embedding), selects annotation (0) or reconstruction of the input
  image (1); both tasks are trained on every batch.

For comparison the same network can be trained as the standard multi-step recipe (noise
prediction, or x0 prediction, over all times; sampled with core's DDIM), and as a plain
regressor from random weights (:data:`VARIANTS`). Depth is predicted as affine-invariant
disparity (the target is ``1 / depth`` normalised per image to ``[-1, 1]``, repeated over the
three channels; the prediction is their mean); normals as three channels, normalised to
unit length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.nn import UNet, UNetConfig
from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.core.processes import VPCosine
from polydiff.core.samplers import sample_ddim

__all__ = ["LotusNetConfig", "LotusNet", "adapt_prior", "VARIANTS", "TASKS", "process",
           "depth_target", "normal_target", "decode", "predict", "MULTI_STEP", "nfe"]

#: Training recipes: ``eps`` / ``x0`` (multi-step diffusion, noise or clean-sample target,
#: all times), ``g`` / ``d`` (Lotus single step at ``t = T``, noise or zeros as input) and
#: ``regression`` (the ``d`` recipe from random weights, no prior).
VARIANTS: tuple[str, ...] = ("eps", "x0", "g", "d", "regression")
MULTI_STEP: tuple[str, ...] = ("eps", "x0")
TASKS: tuple[str, ...] = ("depth", "normal")


def process() -> VPCosine:
    """The forward process of the prior and of every variant (cosine VP)."""
    return VPCosine()


@dataclass
class LotusNetConfig:
    """A core UNet over ``channels`` with ``image_channels`` condition channels (0 for the
    unconditional prior) and ``tasks`` task embeddings (2 with the detail preserver, else
    0). Widths as in :class:`~polydiff.core.nn.UNetConfig`."""

    channels: int = 3
    image_channels: int = 3
    tasks: int = 0
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 2

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)

    def unet(self) -> UNetConfig:
        return UNetConfig(dims=2, in_channels=self.channels, out_channels=self.channels,
                          cond_channels=self.image_channels, num_classes=self.tasks or None,
                          base_channels=self.base_channels, channel_mults=self.channel_mults,
                          num_res_blocks=self.num_res_blocks,
                          attention_levels=self.attention_levels, num_heads=self.num_heads,
                          mid_attention=True, time_embedding="sinusoidal", time_scale=1000.0,
                          scale_shift=True, norm_groups=8)


@register_model
class LotusNet(PretrainedMixin, nn.Module):
    """``UNet([x_t, image], t + task embedding)``: the prior (``image_channels=0``) or the
    adapted dense predictor."""

    config_class = LotusNetConfig

    def __init__(self, config: LotusNetConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet())
        if self.unet.stem.label is not None:   # the task switch starts as a no-op
            nn.init.zeros_(self.unet.stem.label.embedding.weight)

    @property
    def padding_multiple(self) -> int:
        return self.unet.padding_multiple

    def forward(self, x: Tensor, t: Tensor, *, image: Tensor | None = None,
                task: Tensor | None = None) -> Tensor:
        if self.config.tasks and task is None:
            task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.unet(x, t, cond=image, class_labels=task)


def adapt_prior(prior: LotusNet, config: LotusNetConfig) -> LotusNet:
    """A dense predictor of ``config`` initialised from the unconditional ``prior``: every
    weight copied, the first convolution's input channels doubled (annotation half, image
    half) with the prior's kernel copied into both halves and halved, as Lotus does (He et
    al. 2024, Sec. 4: "copy the weights ... and halve them")."""
    if prior.config.image_channels != 0:
        raise ValueError("adapt_prior needs an unconditional prior (image_channels=0)")
    net = LotusNet(config)
    own = net.state_dict()
    for k, v in prior.state_dict().items():
        if k == "unet.stem.conv.weight":
            w = v / 2
            own[k] = torch.cat([w, w[:, :config.image_channels]], dim=1)
        elif k in own and own[k].shape == v.shape:
            own[k] = v.clone()
        else:
            raise ValueError(f"prior weight {k} {tuple(v.shape)} does not fit the predictor")
    net.load_state_dict(own)
    return net


def depth_target(depth: Tensor) -> Tensor:
    """Affine-invariant disparity target ``(B, 3, H, W)`` in ``[-1, 1]`` from depth
    ``(B, 1, H, W)``: ``1 / depth`` min-max normalised per image, repeated over 3 channels."""
    disp = 1.0 / depth.clamp_min(1e-6)
    flat = disp.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return (2 * (disp - lo) / (hi - lo).clamp_min(1e-8) - 1).expand(-1, 3, -1, -1).contiguous()


def normal_target(normal: Tensor) -> Tensor:
    """Normals are their own target (unit vectors, components in ``[-1, 1]``)."""
    return normal


def decode(out: Tensor, task: str) -> Tensor:
    """Network output to prediction: depth -> disparity ``(B, 1, H, W)`` (channel mean);
    normal -> unit normals ``(B, 3, H, W)`` (a zero output becomes ``(0, 0, 1)``)."""
    if task == "depth":
        return out.mean(1, keepdim=True)
    if task == "normal":   # a vanishing output reads as facing the camera, never as 0
        bias = torch.zeros_like(out[:1])
        bias[:, 2] = 1e-6
        return F.normalize(out + bias, dim=1, eps=1e-12)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def nfe(variant: str, steps: int) -> int:
    """Network evaluations per image of a variant sampled with ``steps`` DDIM steps."""
    return steps if variant in MULTI_STEP else 1


@torch.no_grad()
def predict(net: LotusNet, variant: str, image: Tensor, *, steps: int = 50, seed: int = 0,
            reconstruct: bool = False) -> Tensor:
    """The raw 3-channel output for ``image`` ``(B, 3, H, W)`` in ``[-1, 1]`` (sizes
    multiples of ``net.padding_multiple``): one step at ``T`` for ``g``, ``d`` and
    ``regression``; core's DDIM from pure noise in ``steps`` steps (uniform grid down to
    ``sigma = 0``, x0 clamped to ``[-1, 1]``) for ``eps`` and ``x0``. ``reconstruct`` asks a
    detail-preserving network for the input reconstruction instead of the annotation."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    proc = process()
    b = image.shape[0]
    task = None
    if net.config.tasks:
        task = torch.full((b,), int(reconstruct), dtype=torch.long, device=image.device)
    gen = torch.Generator(device=image.device).manual_seed(int(seed))
    shape = (b, net.config.channels, *image.shape[2:])
    if variant in MULTI_STEP:
        den = ModelDenoiser(net, proc, prediction_type="epsilon" if variant == "eps"
                            else "sample", x0_clamp=1.0)
        ts = time_grid(proc, steps, kind="uniform", t_end=proc.t_zero, device=image.device)
        x = torch.randn(shape, generator=gen, device=image.device, dtype=image.dtype)
        x = x * proc.sigma(ts[:1]).to(image.dtype)
        cond: dict[str, Any] = {"image": image, "task": task}
        return sample_ddim(den, x, ts, cond=cond, disable=True)
    t = torch.full((b,), float(proc.t_max), device=image.device, dtype=image.dtype)
    if variant == "g":
        sigma = proc.sigma(torch.tensor([proc.t_max], dtype=torch.float64)).item()
        x = sigma * torch.randn(shape, generator=gen, device=image.device, dtype=image.dtype)
    else:
        x = torch.zeros(shape, device=image.device, dtype=image.dtype)
    out: Tensor = net(x, t, image=image, task=task)
    return out
