"""Scoring image-text generation on the captioned digits.

A :class:`DigitJudge` holds an RBF support-vector classifier trained on *real* training
digits and the attribute bins (:class:`~polydiff.multimodal.data.DigitAttributes`); with them:

* text -> image: the classifier's accuracy on generated images against the prompt's digit,
  and the agreement of the images' measured attributes with the attributes the prompt names;
* image -> text: the generated caption parsed back (:func:`~polydiff.multimodal.data.
  parse_caption`): its digit against the image's label, its attributes against the image's
  measured bins, and the strict rate of captions right in every word that matters;
* joint pairs: whether the caption's digit is the classifier's reading of the image (and the
  caption's attributes the image's measured ones);
* marginals: the class histogram of generated images (or captions) against the data's, by
  total-variation distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polydiff.multimodal.data import ATTRIBUTES, DigitAttributes, parse_caption

__all__ = ["DigitJudge", "tv_distance", "caption_scores"]


def tv_distance(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Total-variation distance between the histograms of labels ``a`` and ``b`` over ``k``
    classes (labels outside ``[0, k)``, e.g. -1 for unreadable, count as their own bin)."""
    def hist(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.int64)
        h = np.bincount(np.where((v >= 0) & (v < k), v, k), minlength=k + 1).astype(float)
        return h / max(1.0, h.sum())

    return float(0.5 * np.abs(hist(a) - hist(b)).sum())


def caption_scores(captions: list[str], labels: np.ndarray, bins: np.ndarray
                   ) -> dict[str, float]:
    """Scores of captions against the true ``labels`` and attribute ``bins`` of their images:
    ``label_acc``, ``attr_acc`` (over the attributes the captions mention), ``mention_rate``,
    ``strict_acc`` (digit right and every mentioned attribute right), ``readable`` (exactly one
    digit word)."""
    n = len(captions)
    parsed = [parse_caption(c) for c in captions]
    lab = np.array([p[0] for p in parsed])
    att = np.array([p[1] for p in parsed]).reshape(n, len(ATTRIBUTES))
    mentioned = att != -1
    right = (att == np.asarray(bins)) & mentioned
    strict = (lab == np.asarray(labels)) & (right | ~mentioned).all(1)
    out = {"label_acc": float(np.mean(lab == np.asarray(labels))),
           "attr_acc": float(right.sum() / max(1, mentioned.sum())),
           "mention_rate": float(mentioned.mean()),
           "strict_acc": float(strict.mean()),
           "readable": float(np.mean(lab >= 0))}
    for j, name in enumerate(ATTRIBUTES):
        out[f"attr_acc/{name}"] = float(right[:, j].sum() / max(1, mentioned[:, j].sum()))
    return out


@dataclass
class DigitJudge:
    """The classifier and attribute bins that score generated digits and captions."""

    classifier: Any
    attributes: DigitAttributes

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray, attributes: DigitAttributes
            ) -> DigitJudge:
        """An RBF SVM (scikit-learn ``SVC(gamma="scale", C=10)``) on real digit pixels."""
        from sklearn.svm import SVC

        clf = SVC(gamma="scale", C=10.0)
        clf.fit(np.asarray(images).reshape(len(images), -1), np.asarray(labels))
        return cls(clf, attributes)

    def classify(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.predict(np.asarray(images).reshape(len(images), -1))

    def t2i(self, images: np.ndarray, prompts: list[str]) -> dict[str, float]:
        """Accuracy of generated images for their prompts (digit; named attributes, measured
        relative to the prompt's digit)."""
        parsed = [parse_caption(p) for p in prompts]
        want = np.array([p[0] for p in parsed])
        want_att = np.array([p[1] for p in parsed]).reshape(len(prompts), len(ATTRIBUTES))
        pred = self.classify(images)
        ok = want >= 0
        got_att = self.attributes.bins(images, np.where(ok, want, 0))
        named = (want_att >= 0) & ok[:, None]
        right = (got_att == want_att) & named
        out = {"label_acc": float(np.mean(pred[ok] == want[ok])) if ok.any() else 0.0,
               "attr_acc": float(right.sum() / max(1, named.sum()))}
        for j, name in enumerate(ATTRIBUTES):
            out[f"attr_acc/{name}"] = float(right[:, j].sum() / max(1, named[:, j].sum()))
        return out

    def i2t(self, captions: list[str], labels: np.ndarray, bins: np.ndarray
            ) -> dict[str, float]:
        """Caption scores against the images' true labels and measured bins."""
        return caption_scores(captions, labels, bins)

    def joint(self, images: np.ndarray, captions: list[str]) -> dict[str, float]:
        """Consistency of generated pairs: the caption's digit against the classifier's
        reading of the image, its attributes against the image's measured bins."""
        read = self.classify(images)
        bins = self.attributes.bins(images, read)
        s = caption_scores(captions, read, bins)
        return {"label_consistency": s["label_acc"], "attr_consistency": s["attr_acc"],
                "strict_consistency": s["strict_acc"], "readable": s["readable"]}

    def image_histogram(self, images: np.ndarray, data_labels: np.ndarray) -> dict[str, Any]:
        """Class histogram of generated images (classifier) vs the data's labels."""
        pred = self.classify(images)
        return {"tv": tv_distance(pred, data_labels),
                "histogram": np.bincount(pred, minlength=10).tolist()}

    @staticmethod
    def text_histogram(captions: list[str], data_labels: np.ndarray) -> dict[str, Any]:
        """Digit histogram of generated captions vs the data's labels (unreadable captions
        are their own bin)."""
        lab = np.array([parse_caption(c)[0] for c in captions])
        return {"tv": tv_distance(lab, data_labels),
                "histogram": np.bincount(np.where(lab >= 0, lab, 10), minlength=11).tolist()}
