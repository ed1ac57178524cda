"""Sampling every distribution of a UniDiffuser model by the choice of timesteps.

Bao et al. (2023), Sec. 3.1 and 3.2. With ``T = t_max`` (pure noise) and ``0`` (clean):

=========  ===========================================  =================================
mode       generated (time ``t``)                        held
=========  ===========================================  =================================
``t2i``    image                                         text latent of the prompt, time 0
``i2t``    text                                          image latent, time 0
``joint``  image and text, one shared ``t``              (nothing)
``image``  image (marginal)                              text = noise, time ``T``
``text``   text (marginal)                               image = noise, time ``T``
``i2t2i``  i2t, then t2i from the generated caption
``t2i2t``  t2i, then i2t from the generated image
=========  ===========================================  =================================

Classifier-free guidance needs no null token: the unconditional branch is the model's own
marginal (the held modality replaced by noise at ``T``), ``eps = (1 + s) eps(x_t, y_0, t, 0)
- s eps(x_t, eps_y, t, T)`` (Sec. 3.2), i.e. core's
:class:`~polydiff.core.guidance.ClassifierFreeGuidance` with scale ``1 + s``; ``s = 0`` is the
conditional model. Joint sampling uses
:class:`~polydiff.core.multimodal.JointMarginalGuidance` (each modality against its marginal).
Every mode integrates with DPM-Solver++(2M) (Lu et al. 2022; the paper's sampler) on a
log-SNR grid ending at ``sigma = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import time_grid
from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.multimodal import JointDenoiser, JointMarginalGuidance, time_key
from polydiff.core.samplers import sample_dpmpp_2m
from polydiff.multimodal.unidiffuser.model import UniDiffuser

__all__ = ["MODES", "Samples", "sample", "generate", "conditional_denoiser"]

MODES = ("t2i", "i2t", "joint", "image", "text", "i2t2i", "t2i2t")
#: the modes each training task supports
TASK_MODES = {"joint": MODES, "t2i": ("t2i",), "i2t": ("i2t",)}


@dataclass
class Samples:
    """What a mode produced: images ``(N, C, H, W)`` in ``[-1, 1]`` and/or captions, and for
    chains the intermediate result."""

    images: np.ndarray | None = None
    captions: list[str] | None = None
    mid_images: np.ndarray | None = None
    mid_captions: list[str] | None = None


def conditional_denoiser(model: UniDiffuser, generate: str) -> JointDenoiser:
    """The eps-predicting denoiser of ``generate`` (``"image"`` or ``"text"``) with the other
    modality held (its value and time passed as conditioning)."""
    return JointDenoiser(model.network, model.process, model.layout, [generate],
                         prediction_type=model.config.prediction)


class _SamplerArgs(TypedDict):
    """The keyword arguments that :func:`sample` passes to every :func:`generate` call."""

    guidance: float
    steps: int
    generator: torch.Generator | None


def _grid(model: UniDiffuser, steps: int, device: torch.device) -> Tensor:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return time_grid(model.process, steps, "logsnr", final_zero=True, device=device)


def generate(model: UniDiffuser, gen: str, held: Tensor | None, *, guidance: float = 0.0,
             steps: int = 20, generator: torch.Generator | None = None,
             n: int | None = None) -> Tensor:
    """Latents of modality ``gen`` (``"image"`` or ``"text"``): conditional on the clean latent
    ``held`` of the other modality (with guidance ``s``), or its marginal when ``held`` is
    ``None`` (then ``n`` samples)."""
    other = "text" if gen == "image" else "image"
    dev = model.device
    b = held.shape[0] if held is not None else int(n or 0)
    if b < 1:
        raise ValueError("nothing to sample: give a held modality or n >= 1")
    den = conditional_denoiser(model, gen)
    shape = model.layout.shapes[gen]
    x = torch.randn((b, int(np.prod(shape))), generator=generator, device=dev)
    noise = torch.randn((b, *model.layout.shapes[other]), generator=generator, device=dev)
    t_max = torch.full((b,), float(model.process.t_max), dtype=torch.float64, device=dev)
    marginal = {other: noise, time_key(other): t_max}
    d: Denoiser
    if held is None:
        d, cond = den, marginal
    else:
        cond = {other: held.to(dev), time_key(other): torch.zeros(b, dtype=torch.float64,
                                                                  device=dev)}
        d = den if guidance == 0.0 else ClassifierFreeGuidance.from_weight(
            den, guidance, uncond=marginal)
    with torch.no_grad():
        out = sample_dpmpp_2m(d, x, _grid(model, steps, dev), cond=cond, disable=True)
    return out.reshape(b, *shape)


def generate_joint(model: UniDiffuser, n: int, *, guidance: float = 0.0, steps: int = 20,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """``n`` joint samples ``{"image", "text"}`` of latents, both modalities at one time."""
    dev = model.device
    den = JointDenoiser(model.network, model.process, model.layout, ["image", "text"],
                        prediction_type=model.config.prediction)
    x = torch.randn((n, model.layout.size()), generator=generator, device=dev)
    d = den if guidance == 0.0 else JointMarginalGuidance(
        den, guidance, noise=model.layout.noise(n, ["image", "text"], generator=generator,
                                                device=dev))
    with torch.no_grad():
        out = sample_dpmpp_2m(d, x, _grid(model, steps, dev), disable=True)
    return model.layout.unpack(out)


def _check_mode(model: UniDiffuser, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    allowed = TASK_MODES[model.config.task]
    if mode not in allowed:
        raise ValueError(f"this model was trained for {model.config.task!r} only; it samples "
                         f"{', '.join(allowed)}, not {mode!r}")


def sample(model: UniDiffuser, mode: str, *, prompts: list[str] | None = None,
           images: np.ndarray | None = None, n: int = 1, guidance: float = 0.0,
           steps: int = 20, seed: int = 0, strict: bool = True) -> Samples:
    """Run ``mode`` (see the module docstring). ``prompts`` for ``t2i``/``t2i2t`` (one sample
    each), ``images`` ``(N, C, H, W)`` in ``[-1, 1]`` for ``i2t``/``i2t2i``, ``n`` for
    ``joint`` and the marginals. ``guidance`` is the paper's ``s`` (0 = conditional)."""
    _check_mode(model, mode)
    if not np.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
    g = torch.Generator(device=model.device).manual_seed(int(seed))
    kw = _SamplerArgs(guidance=guidance, steps=steps, generator=g)
    if mode in ("t2i", "t2i2t"):
        if not prompts:
            raise ValueError(f"mode {mode} needs at least one prompt")
        lat = generate(model, "image", model.text_latents(list(prompts), strict=strict), **kw)
        if mode == "t2i":
            return Samples(images=model.images(lat))
        txt = generate(model, "text", lat, **kw)
        return Samples(images=model.images(lat), captions=model.captions(txt),
                       mid_images=model.images(lat))
    if mode in ("i2t", "i2t2i"):
        if images is None or len(images) == 0:
            raise ValueError(f"mode {mode} needs at least one image")
        txt = generate(model, "text", model.image_latents(images), **kw)
        caps = model.captions(txt)
        if mode == "i2t":
            return Samples(captions=caps)
        # the chain continues from the decoded caption, as a user would (text -> latent);
        # a caption that decoded to no words keeps its sampled latent
        held = txt.clone()
        words = [i for i, c in enumerate(caps) if c.strip()]
        if words:
            held[words] = model.text_latents([caps[i] for i in words]).to(held.dtype)
        lat = generate(model, "image", held, **kw)
        return Samples(images=model.images(lat), captions=caps, mid_captions=caps)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if mode == "joint":
        out = generate_joint(model, n, **kw)
        return Samples(images=model.images(out["image"]), captions=model.captions(out["text"]))
    if mode == "image":
        return Samples(images=model.images(generate(model, "image", None, n=n, **kw)))
    return Samples(captions=model.captions(generate(model, "text", None, n=n, **kw)))
