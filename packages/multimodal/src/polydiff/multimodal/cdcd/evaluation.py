"""Scores of generated digit tokens: correspondence with the class asked for, and quality.

* correspondence: the accuracy of a digit classifier (an RBF SVM trained on the real training
  digits, quantised the same way) on the generated digits against the class each was
  generated for; its accuracy on real held-out digits is the ceiling, 0.1 is chance;
* quality: the mean distance from each generated digit to its nearest real held-out digit of
  the same class (grey values in [0, 1], Euclidean over the 64 pixels), next to the same
  figure for real training digits (``real_nn_distance``), and the total-variation distance
  between the generated and the real grey-level histograms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from polydiff.multimodal.cdcd.data import TokenSet, dequantise_digits
from polydiff.multimodal.cdcd.model import CDCDModel

__all__ = ["DigitJudge", "score_digits", "nn_distance", "level_tv"]


@dataclass
class DigitJudge:
    """A digit classifier on dequantised tokens (``classify(tokens) -> labels``)."""

    clf: Any
    levels: int

    @classmethod
    def fit(cls, train: TokenSet, levels: int) -> DigitJudge:
        from sklearn.svm import SVC

        clf = SVC(C=10.0, gamma="scale").fit(dequantise_digits(train.tokens, levels),
                                               train.labels)
        return cls(clf, levels)

    def classify(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(self.clf.predict(dequantise_digits(tokens, self.levels)))

    def accuracy(self, tokens: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.classify(tokens) == np.asarray(labels)))


def nn_distance(tokens: np.ndarray, labels: np.ndarray, ref: TokenSet, levels: int) -> float:
    """Mean Euclidean distance (grey values in [0, 1]) from each sequence to its nearest
    reference sequence of the same class."""
    x, r = dequantise_digits(tokens, levels), dequantise_digits(ref.tokens, levels)
    out = []
    for c in np.unique(labels):
        a, b = x[labels == c], r[ref.labels == c]
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        out.append(np.sqrt(d.min(1)))
    return float(np.concatenate(out).mean())


def level_tv(tokens: np.ndarray, ref: np.ndarray, levels: int) -> float:
    """Total-variation distance between the token histograms of two sets."""
    p = np.bincount(np.asarray(tokens).ravel(), minlength=levels) / np.asarray(tokens).size
    q = np.bincount(np.asarray(ref).ravel(), minlength=levels) / np.asarray(ref).size
    return float(0.5 * np.abs(p - q).sum())


def score_digits(model: CDCDModel, data: TokenSet, judge: DigitJudge, *,
                 steps: int | None = None, seed: int = 0,
                 return_tokens: bool = False) -> dict[str, Any]:
    """Generate one digit per held-out label of ``data`` and score it (module docstring)."""
    assert data.labels is not None
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    tokens = model.generate(len(data), labels=labels, steps=steps, seed=seed).numpy()
    k = model.config.num_tokens
    out: dict[str, Any] = {
        "accuracy": judge.accuracy(tokens, data.labels),
        "nn_distance": nn_distance(tokens, data.labels, data, k),
        "level_tv": level_tv(tokens, data.tokens, k),
        "digits": len(data),
        "steps": steps or model.config.num_steps,
    }
    if return_tokens:
        out["tokens"] = tokens
    return out
