"""Token data for CDCD: class-conditional digit token grids and rhythm-conditioned melodies.

* :func:`load_digit_tokens`: scikit-learn's 1,797 real 8x8 handwritten digits (grey levels
  0..16) quantised to ``levels`` grey levels, one token per pixel (64 tokens, row-major), with
  their class; a fixed stratified train / val / test split.
* :mod:`polydiff.multimodal.cdcd.music`: melodies of the Bach chorales bundled with music21,
  conditioned on their rhythm track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TokenSplits", "TokenSet", "quantise_digits", "dequantise_digits",
           "load_digit_tokens"]


@dataclass
class TokenSet:
    """Token sequences ``tokens`` ``(N, L)`` (int64, values ``0..K-1``) with either class
    ``labels`` ``(N,)`` or per-position condition tokens ``cond`` ``(N, L)``."""

    tokens: np.ndarray
    labels: np.ndarray | None = None
    cond: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, idx: np.ndarray) -> TokenSet:
        return TokenSet(self.tokens[idx],
                        None if self.labels is None else self.labels[idx],
                        None if self.cond is None else self.cond[idx])


@dataclass
class TokenSplits:
    """Train / validation / test :class:`TokenSet` of one task, ``num_tokens`` = ``K``."""

    train: TokenSet
    val: TokenSet
    test: TokenSet
    num_tokens: int
    shape: tuple[int, ...]


def quantise_digits(images: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels ``0..16`` -> tokens ``0..levels-1`` (equal-width bins over 0..16)."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    x = np.asarray(images, dtype=np.float64)
    return np.clip(np.floor(x * levels / 17.0), 0, levels - 1).astype(np.int64)


def dequantise_digits(tokens: np.ndarray, levels: int) -> np.ndarray:
    """Tokens -> grey values in ``[0, 1]`` (bin centres)."""
    return (np.asarray(tokens, dtype=np.float64) + 0.5) / levels


def load_digit_tokens(*, levels: int = 4, seed: int = 0, val: float = 0.2,
                      test: float = 0.2) -> TokenSplits:
    """The digits as 64 tokens each (row-major 8x8) with their labels, split stratified by
    class with ``seed`` (the default split is fixed: 1,079 train, 359 val, 359 test)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.reshape(len(d.images), -1)
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = round(val * len(idx)), round(test * len(idx))
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    tokens = quantise_digits(images, levels)
    sets = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        sets[name] = TokenSet(tokens[idx], labels[idx])
    return TokenSplits(sets["train"], sets["val"], sets["test"], num_tokens=levels,
                       shape=(8, 8))
