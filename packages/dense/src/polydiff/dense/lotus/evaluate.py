"""Scoring Lotus and its baselines on held-out rendered scenes and the Middlebury motorcycle.

A *method* maps a batch of images ``(B, 3, H, W)`` in ``[-1, 1]`` to predictions (depth:
affine-invariant disparity ``(B, 1, H, W)``; normals: ``(B, 3, H, W)``). :func:`score` runs it
in batches and averages the per-image metrics of :mod:`~.metrics` (depth: AbsRel and delta1
after scale-and-shift alignment; normals: angular errors), with the wall time per image.
Trivial baselines: a *ramp* (disparity growing linearly towards the bottom of the image, the
floor seen from above) and a constant normal facing the camera.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.dense.data import motorcycle_depth
from polydiff.dense.images import resize_image
from polydiff.dense.lotus.metrics import depth_metrics, normal_metrics
from polydiff.dense.lotus.model import LotusNet, decode, predict
from polydiff.dense.lotus.scenes import render_batch, render_split

__all__ = ["EvalSet", "scene_set", "middlebury_set", "score", "method_of", "ramp_depth",
           "facing_normal", "Method"]

Method = Callable[[Tensor], Tensor]


@dataclass
class EvalSet:
    """Images ``(N, 3, H, W)`` in [-1, 1], depth ``(N, 1, H, W)`` (NaN where unknown),
    normals ``(N, 3, H, W)`` (``None`` when unknown)."""

    name: str
    image: Tensor
    depth: Tensor
    normal: Tensor | None


def scene_set(split: str, count: int, size: int = 64) -> EvalSet:
    """``count`` rendered scenes of ``split`` (``val`` or ``test``)."""
    b = render_batch(render_split(split, count, size))
    return EvalSet(f"scenes-{split}", b["image"] * 2 - 1, b["depth"], b["normal"])


def middlebury_set(height: int = 64, width: int = 96) -> EvalSet:
    """The Middlebury motorcycle left view at ``height x width`` (anti-aliased) with its depth
    sampled at the same pixel centres (nearest; NaN where the disparity is unknown)."""
    img, depth = motorcycle_depth()
    small = resize_image(img, height, width)
    h, w = depth.shape
    rows = ((np.arange(height) + 0.5) * h / height).astype(int)
    cols = ((np.arange(width) + 0.5) * w / width).astype(int)
    d = depth[rows][:, cols]
    image = torch.from_numpy(small).permute(2, 0, 1)[None] * 2 - 1
    return EvalSet("middlebury", image, torch.from_numpy(d)[None, None], None)


def method_of(net: LotusNet, variant: str, task: str, *, steps: int = 50, seed: int = 0
              ) -> Method:
    """The prediction function of a trained network."""
    def run(image: Tensor) -> Tensor:
        return decode(predict(net, variant, image, steps=steps, seed=seed), task)
    return run


def ramp_depth(image: Tensor) -> Tensor:
    """Trivial depth baseline: disparity linear in the row (near at the bottom)."""
    b, _, h, w = image.shape
    ramp = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    return ramp.expand(b, 1, h, w).clone()


def facing_normal(image: Tensor) -> Tensor:
    """Trivial normal baseline: every normal faces the camera."""
    b, _, h, w = image.shape
    out = torch.zeros(b, 3, h, w)
    out[:, 2] = 1
    return out


def _per_image(pred: np.ndarray, es: EvalSet, i: int, task: str) -> dict[str, float]:
    if task == "depth":
        return depth_metrics(pred[0], es.depth[i, 0].numpy())
    if es.normal is None:
        raise ValueError(f"{es.name} has no normals")
    return normal_metrics(pred, es.normal[i].numpy())


def score(method: Method, es: EvalSet, task: str, *, batch: int = 16) -> dict[str, float]:
    """Mean per-image metrics of ``method`` on ``es``, plus ``seconds_per_image`` (wall)."""
    rows: list[dict[str, float]] = []
    seconds = 0.0
    for start in range(0, es.image.shape[0], batch):
        image = es.image[start:start + batch]
        tic = time.perf_counter()
        with torch.no_grad():
            pred = method(image)
        seconds += time.perf_counter() - tic
        if pred.shape[-2:] != image.shape[-2:]:
            pred = F.interpolate(pred, size=image.shape[-2:], mode="bilinear")
        for j in range(pred.shape[0]):
            rows.append(_per_image(pred[j].numpy(), es, start + j, task))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["seconds_per_image"] = seconds / len(rows)
    out["images"] = float(len(rows))
    return out
