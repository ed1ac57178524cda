"""Training UniDiffuser (and the dedicated baselines) with the engine's Trainer.

Two stages, each a :class:`~polydiff.core.training.Trainer` run with its own run folder, so
an interrupted run resumes exactly where it stopped:

1. the text autoencoder (:class:`~polydiff.multimodal.text.TextAutoencoder`) on the captions
   (skipped when a trained one is given);
2. the joint network on every (image, caption) pair, with
   :class:`~polydiff.core.multimodal.JointDiffusionLoss`: each modality perturbed with its own
   time and both noises predicted (Bao et al. 2023, Sec. 3.1).

``task`` selects the objective: ``"joint"`` is UniDiffuser (independent times); the dedicated
baselines use the same network, data, steps and batch (so the same compute) with the other
modality clean (a conditional model), except with probability ``guidance_dropout`` where it is
pure noise (the unconditional branch that classifier-free guidance needs, Ho & Salimans 2022),
and no loss on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from polydiff.core.multimodal import JointDiffusionLoss
from polydiff.core.training import TrainConfig, Trainer
from polydiff.multimodal.data import CaptionedImages
from polydiff.multimodal.text import (
    TextAutoencoder,
    TextAutoencoderConfig,
    Vocabulary,
    minilm_embed,
    text_autoencoder_objective,
)
from polydiff.multimodal.unidiffuser.model import UniDiffuser, UniDiffuserConfig

__all__ = ["TextSettings", "DiffusionSettings", "train_text_autoencoder",
           "train_unidiffuser", "joint_loss", "pair_tensors"]


@dataclass
class TextSettings:
    """Text autoencoder training (see :class:`~polydiff.multimodal.text.TextAutoencoderConfig`
    for the model fields)."""

    encoder: Literal["gru", "minilm"] = "gru"
    latent_tokens: int = 4
    latent_dim: int = 8
    max_len: int = 14
    max_vocab: int = 2000
    steps: int = 800
    batch_size: int = 128
    lr: float = 3e-3
    latent_noise: float = 0.2


@dataclass
class DiffusionSettings:
    """Joint-network training.

    ``clean_prob`` / ``noise_prob``: per-modality probabilities that a training sample puts
    that modality exactly clean / at pure noise (the times conditional and marginal sampling
    use; the rest of the time is uniform), for ``task="joint"``. ``one_clean_prob``: the
    fraction of joint-task samples that are conditional ones (exactly one modality clean,
    either equally often, the other uniform; core's ``JointDiffusionLoss(one_clean_prob=)``),
    so text->image and image->text get more direct training signal in the one model.
    ``guidance_dropout``: for the
    dedicated tasks, the probability that the condition is noise (the unconditional model).
    """

    task: Literal["joint", "t2i", "i2t"] = "joint"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    lr_warmup: int = 100
    ema_decay: float = 0.999
    clean_prob: float = 0.25
    noise_prob: float = 0.1
    one_clean_prob: float = 0.0
    guidance_dropout: float = 0.1
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 4
    prediction: Literal["epsilon", "v_prediction", "sample"] = "sample"


def _config(run: Path, steps: int, batch: int, lr: float, seed: int, *, ema: float | None,
            warmup: int, progress: bool, desc: str, device: str) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, lr=lr, lr_warmup=warmup, ema_decay=ema,
                       seed=seed, run_dir=str(run), progress=progress, desc=desc,
                       log_every=max(1, min(100, steps // 10)), ckpt_every=max(100, steps // 4),
                       keep_last=1, device=device, grad_clip=1.0)


def train_text_autoencoder(captions: list[str], run: str | Path, s: TextSettings, *,
                           seed: int = 0, progress: bool = False, resume: bool = True,
                           device: str = "auto") -> TextAutoencoder:
    """Train the text autoencoder on ``captions`` (its Trainer run folder is ``run``);
    returns it in eval mode with the EMA-free final weights."""
    vocab = Vocabulary.build(captions, max_size=s.max_vocab)
    cfg = TextAutoencoderConfig(vocab=tuple(vocab.words), max_len=s.max_len,
                                latent_tokens=s.latent_tokens, latent_dim=s.latent_dim,
                                encoder=s.encoder, latent_noise=s.latent_noise)
    torch.manual_seed(seed)
    ae = TextAutoencoder(cfg)
    data: dict[str, torch.Tensor] = {"ids": ae.tokens(captions)}
    if s.encoder == "minilm":
        data["emb"] = minilm_embed(captions)
    trainer = Trainer(ae, text_autoencoder_objective(), data,
                      _config(Path(run), s.steps, s.batch_size, s.lr, seed, ema=None,
                              warmup=0, progress=progress, desc="text-autoencoder",
                              device=device))
    trainer.fit(resume=resume)
    return ae.cpu().eval()


def pair_tensors(model: UniDiffuser, data: CaptionedImages) -> dict[str, torch.Tensor]:
    """``{"image": (P, tokens, dim), "text": (P, k, d)}``: one row per (image, caption)."""
    idx, caps = data.pairs()
    with torch.no_grad():
        img = model.image_latents(data.images).cpu()
        txt = torch.cat([model.text_latents(caps[i:i + 2048]).cpu()
                         for i in range(0, len(caps), 2048)])
    return {"image": img[torch.as_tensor(idx)].contiguous(), "text": txt.contiguous()}


def joint_loss(model: UniDiffuser, s: DiffusionSettings) -> JointDiffusionLoss:
    """The training objective of ``s.task`` (module docstring)."""
    names = ["image", "text"]
    if s.task == "joint":
        return JointDiffusionLoss(model.process, names, target=model.config.prediction,
                                  clean_prob={m: s.clean_prob for m in names},
                                  noise_prob={m: s.noise_prob for m in names},
                                  one_clean_prob=s.one_clean_prob)
    cond = "text" if s.task == "t2i" else "image"
    return JointDiffusionLoss(model.process, names, target=model.config.prediction,
                              weights={cond: 0.0},
                              clean_prob={cond: 1.0 - s.guidance_dropout},
                              noise_prob={cond: s.guidance_dropout})


def train_unidiffuser(data: CaptionedImages, run: str | Path, s: DiffusionSettings,
                      text: TextAutoencoder, *, seed: int = 0, progress: bool = False,
                      resume: bool = True, device: str = "auto",
                      meta: dict[str, Any] | None = None) -> UniDiffuser:
    """Train the joint network of ``s.task`` on every (image, caption) pair of ``data``
    (Trainer run folder ``run``); returns the model with its EMA weights, in eval mode."""
    c, h = data.images.shape[1], data.images.shape[2]
    cfg = UniDiffuserConfig(image_channels=c, image_size=h, patch_size=s.patch_size,
                            hidden_size=s.hidden_size, depth=s.depth, num_heads=s.num_heads,
                            task=s.task, prediction=s.prediction)
    torch.manual_seed(seed)
    model = UniDiffuser.create(cfg, text, {**(meta or {}),
                                           "train": dataclasses.asdict(s) | {"seed": seed}})
    pairs = pair_tensors(model, data)
    loss = joint_loss(model, s)
    trainer = Trainer(model.network, loss.objective(), pairs,
                      _config(Path(run), s.steps, s.batch_size, s.lr, seed, ema=s.ema_decay,
                              warmup=s.lr_warmup, progress=progress,
                              desc=f"unidiffuser-{s.task}", device=device))
    summary = trainer.fit(resume=resume)
    if trainer.ema is not None:
        trainer.ema.copy_to()
    model.network.cpu()
    model.meta["train"]["final_loss"] = summary.get("loss")
    model.meta["train"]["pairs"] = int(pairs["image"].shape[0])
    return model.eval()


def captions_for_text_training(data: CaptionedImages, extra: list[str] | None = None
                               ) -> list[str]:
    """Every training caption, plus ``extra`` text-only captions."""
    caps = [c for cs in data.captions for c in cs]
    return caps + list(extra or [])


def grammar_captions(n: int, seed: int) -> list[str]:
    """``n`` random captions of the digit grammar (random labels and attribute bins): text-only
    training data for the text autoencoder."""
    from polydiff.multimodal.data import caption_digit

    rng = np.random.default_rng(seed)
    return [caption_digit(int(rng.integers(10)), rng.integers(0, 3, 3), rng) for _ in range(n)]
