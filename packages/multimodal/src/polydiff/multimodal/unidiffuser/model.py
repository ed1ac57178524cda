"""The UniDiffuser model: one joint noise-prediction network plus the two latent codecs.

Bao et al. (2023), "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale":
images and texts are first mapped to continuous latents (Sec. 4.1), then one U-ViT
(:class:`~polydiff.core.nn.uvit.MultiModalUViT`, Sec. 4.2) predicts the noise of both from
their perturbed latents and their two timesteps.

Here the image latent is the pixels themselves, cut into ``patch_size`` patches (the image
autoencoder of the paper is not needed at 8x8), and the text latent comes from
:class:`~polydiff.multimodal.text.TextAutoencoder`. A model folder holds
``unidiffuser.json`` (configuration and metadata), ``network/`` and ``text/`` (each a
``config.json`` + ``model.safetensors`` pair written by ``save_pretrained``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from polydiff.core.multimodal import ModalityLayout
from polydiff.core.nn import (
    MultiModalUViT,
    MultiModalUViTConfig,
    patchify,
    unpatchify,
)
from polydiff.core.processes import VPCosine
from polydiff.core.utils import atomic_dir, atomic_write
from polydiff.multimodal.text import TextAutoencoder

__all__ = ["UniDiffuser", "UniDiffuserConfig", "TASKS", "MODALITIES", "load_unidiffuser"]

TASKS = ("joint", "t2i", "i2t")
MODALITIES = ("image", "text")
META_NAME = "unidiffuser.json"


@dataclass
class UniDiffuserConfig:
    """Configuration of a :class:`UniDiffuser`.

    Attributes:
        image_channels, image_size, patch_size: the image latent (pixels in ``[-1, 1]``,
            ``(image_size / patch_size)^2`` tokens of ``channels * patch_size^2`` values).
        hidden_size, depth, num_heads, mlp_ratio, time_embed_dim: the U-ViT.
        task: what the network was trained for: ``"joint"`` (UniDiffuser: every time
            combination) or a dedicated conditional model ``"t2i"`` / ``"i2t"`` (the other
            modality always clean, or noise for the guidance branch).
        prediction: what the network predicts for every modality: the clean latent
            (``"sample"``, the default here), ``"v_prediction"``, or the noise (the paper's
            ``"epsilon"``); every one gives both ``(x0, eps)`` (see the package README for
            why the default differs from the paper).
    """

    image_channels: int = 1
    image_size: int = 8
    patch_size: int = 2
    hidden_size: int = 96
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    time_embed_dim: int = 64
    task: Literal["joint", "t2i", "i2t"] = "joint"
    prediction: Literal["epsilon", "v_prediction", "sample"] = "sample"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unknown prediction {self.prediction!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size "
                             f"{self.patch_size}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def image_token_dim(self) -> int:
        return self.image_channels * self.patch_size**2


@dataclass
class UniDiffuser:
    """A trained (or fresh) UniDiffuser: ``network``, ``text`` codec, ``process``, ``layout``.

    ``meta`` holds facts about the model's data (e.g. the digit attribute thresholds) and its
    training; it is saved with the model.
    """

    config: UniDiffuserConfig
    network: MultiModalUViT
    text: TextAutoencoder
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.process = VPCosine()
        k, d = self.text.config.latent_shape
        self.layout = ModalityLayout({"image": (self.config.image_tokens,
                                                self.config.image_token_dim),
                                      "text": (k, d)})

    @classmethod
    def create(cls, config: UniDiffuserConfig, text: TextAutoencoder,
               meta: dict[str, Any] | None = None) -> UniDiffuser:
        """A freshly initialised network for ``config`` and the codec ``text``."""
        k, d = text.config.latent_shape
        net = MultiModalUViT(MultiModalUViTConfig(
            modalities=MODALITIES, num_tokens=(config.image_tokens, k),
            in_channels=(config.image_token_dim, d), hidden_size=config.hidden_size,
            depth=config.depth, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
            time_embed_dim=config.time_embed_dim))
        return cls(config, net, text, dict(meta or {}))

    # ------------------------------------------------------------------ latents
    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def image_latents(self, images: np.ndarray | Tensor) -> Tensor:
        """``(N, C, H, W)`` images in ``[-1, 1]`` -> ``(N, tokens, C p^2)``."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                            dtype=torch.float32)
        c = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (c.image_channels, c.image_size, c.image_size):
            raise ValueError(f"images must be (N, {c.image_channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(x.shape)}")
        return patchify(x, c.patch_size).to(self.device)

    def images(self, latents: Tensor) -> np.ndarray:
        """Image latents -> ``(N, C, H, W)`` float32 images clipped to ``[-1, 1]``."""
        c = self.config
        x = unpatchify(latents.float().cpu(), c.patch_size, (c.image_size, c.image_size))
        return x.clamp(-1.0, 1.0).numpy()

    def text_latents(self, captions: list[str], *, strict: bool = False) -> Tensor:
        """Captions -> ``(N, k, d)`` latents (``strict``: unknown words are an error)."""
        self.text.eval()
        return self.text.encode(captions, strict=strict).to(self.device)

    def captions(self, latents: Tensor) -> list[str]:
        """Text latents -> captions (greedy decoding)."""
        self.text.eval()
        return self.text.decode(latents.to(self.device))

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def to(self, device: torch.device | str) -> UniDiffuser:
        self.network.to(device)
        self.text.to(device)
        return self

    def eval(self) -> UniDiffuser:
        self.network.eval()
        self.text.eval()
        return self

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write the model folder atomically (``unidiffuser.json``, ``network/``, ``text/``)."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.network.save_pretrained(tmp / "network")
            self.text.save_pretrained(tmp / "text")
            atomic_write(tmp / META_NAME, json.dumps(
                {"config": dataclasses.asdict(self.config), "meta": self.meta},
                indent=2, sort_keys=True) + "\n")
        return directory


def load_unidiffuser(directory: str | Path, map_location: str | torch.device = "cpu"
                     ) -> UniDiffuser:
    """Load a model folder written by :meth:`UniDiffuser.save`."""
    directory = Path(directory)
    meta_path = directory / META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"'{directory}' is not a UniDiffuser model folder (no "
                                f"{META_NAME})")
    try:
        data = json.loads(meta_path.read_text())
        config = UniDiffuserConfig(**data["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"'{meta_path}' is not a valid model description: {exc}") from None
    net = MultiModalUViT.from_pretrained(directory / "network", map_location=map_location)
    text = TextAutoencoder.from_pretrained(directory / "text", map_location=map_location)
    model = UniDiffuser(config, net, text, data.get("meta", {}))
    k, d = text.config.latent_shape
    if net.config.num_tokens != (config.image_tokens, k) or \
            net.config.in_channels != (config.image_token_dim, d):
        raise ValueError(f"'{directory}': the network does not match the image/text latents")
    return model.eval()
