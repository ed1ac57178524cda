"""Evaluating a UniDiffuser (or a dedicated baseline) on held-out captioned digits.

One function per task, each returning plain floats, so the app's ``evaluate`` verb, the tour
demo and ``tools/bench/unidiffuser.py`` report the same numbers:

* :func:`score_t2i`: prompts are held-out captions (one per digit, so some name attributes
  and some only the digit); scored by :meth:`~polydiff.multimodal.unidiffuser.metrics.
  DigitJudge.t2i`;
* :func:`score_i2t`: held-out images, captions scored against their labels and bins;
* :func:`score_joint`: joint pairs' consistency, and the marginal histograms of both
  modalities against the held-out labels (with the total-variation distance of as many real
  labels resampled from the held-out ones as the sampling-noise floor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polydiff.multimodal.data import CaptionedImages
from polydiff.multimodal.unidiffuser.metrics import DigitJudge, tv_distance
from polydiff.multimodal.unidiffuser.model import UniDiffuser
from polydiff.multimodal.unidiffuser.sampling import TASK_MODES, sample

__all__ = ["score_t2i", "score_i2t", "score_joint", "evaluate_model", "prompts_for"]


def prompts_for(data: CaptionedImages, seed: int = 0) -> list[str]:
    """One held-out caption per image (a seeded choice among its captions)."""
    rng = np.random.default_rng(seed)
    return [cs[int(rng.integers(len(cs)))] for cs in data.captions]


def _digit_labels(data: CaptionedImages) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, bins)`` of captioned digits (the judge needs both)."""
    if data.labels is None or data.bins is None:
        raise ValueError("evaluation needs labelled, attribute-binned data (captioned digits)")
    return data.labels, data.bins


def score_t2i(model: UniDiffuser, data: CaptionedImages, judge: DigitJudge, *,
              guidance: float, steps: int = 20, seed: int = 0) -> dict[str, float]:
    prompts = prompts_for(data, seed)
    out = sample(model, "t2i", prompts=prompts, guidance=guidance, steps=steps, seed=seed)
    assert out.images is not None  # what t2i returns
    return judge.t2i(out.images, prompts)


def score_i2t(model: UniDiffuser, data: CaptionedImages, judge: DigitJudge, *,
              guidance: float, steps: int = 20, seed: int = 0) -> dict[str, float]:
    labels, bins = _digit_labels(data)
    out = sample(model, "i2t", images=data.images, guidance=guidance, steps=steps, seed=seed)
    assert out.captions is not None  # what i2t returns
    return judge.i2t(out.captions, labels, bins)


def score_joint(model: UniDiffuser, data: CaptionedImages, judge: DigitJudge, *, n: int,
                guidance: float = 0.0, steps: int = 20, seed: int = 0) -> dict[str, float]:
    """Joint-pair consistency and both marginal histograms (``n`` samples each)."""
    labels, _ = _digit_labels(data)
    out: dict[str, float] = {}
    pairs = sample(model, "joint", n=n, guidance=guidance, steps=steps, seed=seed)
    assert pairs.images is not None and pairs.captions is not None  # what joint returns
    out.update({f"joint/{k}": v for k, v in judge.joint(pairs.images, pairs.captions).items()})
    img = sample(model, "image", n=n, steps=steps, seed=seed + 1)
    assert img.images is not None
    out["marginal/image_tv"] = judge.image_histogram(img.images, labels)["tv"]
    txt = sample(model, "text", n=n, steps=steps, seed=seed + 2)
    assert txt.captions is not None
    out["marginal/text_tv"] = judge.text_histogram(txt.captions, labels)["tv"]
    # the floor: the same-size TV of real labels drawn (with replacement) from these labels
    rng = np.random.default_rng(seed)
    out["marginal/resample_tv"] = tv_distance(rng.choice(labels, size=n), labels)
    return out


def evaluate_model(model: UniDiffuser, data: CaptionedImages, judge: DigitJudge, *,
                   guidance: dict[str, float] | float | None = None, steps: int = 20,
                   seed: int = 0, joint_n: int | None = None) -> dict[str, Any]:
    """Every score the model's task supports (``guidance`` per mode, or one value)."""
    _digit_labels(data)
    if not isinstance(guidance, dict):
        g = 0.0 if guidance is None else float(guidance)
        guidance = {"t2i": g, "i2t": g, "joint": 0.0}
    modes = TASK_MODES[model.config.task]
    out: dict[str, Any] = {}
    if "t2i" in modes:
        out.update({f"t2i/{k}": v for k, v in score_t2i(
            model, data, judge, guidance=guidance.get("t2i", 0.0), steps=steps,
            seed=seed).items()})
    if "i2t" in modes:
        out.update({f"i2t/{k}": v for k, v in score_i2t(
            model, data, judge, guidance=guidance.get("i2t", 0.0), steps=steps,
            seed=seed).items()})
    if "joint" in modes:
        out.update(score_joint(model, data, judge, n=joint_n or len(data),
                               guidance=guidance.get("joint", 0.0), steps=steps, seed=seed))
    return out
