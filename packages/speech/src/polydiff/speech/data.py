"""Paired-folder datasets for speech enhancement and dereverberation (torch-free).

Standard layouts (as prepared for SGMSE / SGMSE+, Richter et al. 2023, Sec. V-A):

* denoising, e.g. VoiceBank-DEMAND or WSJ0-CHiME3: ``<root>/<split>/clean/<name>.wav`` and
  ``<root>/<split>/noisy/<name>.wav``;
* dereverberation, e.g. WSJ0-Reverb: ``<root>/<split>/anechoic/<name>.wav`` and
  ``<root>/<split>/reverb/<name>.wav``;

with splits ``train``, ``valid`` and ``test``. Files pair by name (the file stem; the suffix
may be any of :data:`~polydiff.speech.audio.AUDIO_EXTENSIONS`). ``layout="auto"`` picks the
layout from the sub-folders present.

:class:`PairedAudioDataset` serves training examples: the clean and noisy waves of one pair,
resampled to the model's rate, cut to SGMSE's training length ``(segment_frames - 1) *
hop_length`` samples (32640 = 2.04 s at 16 kHz for 256 frames: the centred STFT then has
exactly ``segment_frames`` frames) at the same random offset, short files padded, and
normalised by the noisy segment's peak. Crops are a function of ``(seed, epoch, index)``.
:func:`iter_pairs` yields full files for evaluation. Items are NumPy ``float32`` arrays
(``torch``'s ``default_collate`` stacks them into tensors); :meth:`PairedAudioDataset.sample`
returns tensors directly for a :class:`~polydiff.core.training.data.SampledData` source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polydiff.speech.audio import AudioError, list_audio, read_audio

__all__ = [
    "LAYOUTS", "SPLITS", "AudioPair", "PairedAudioDataset", "detect_layout", "iter_pairs",
    "pairs",
]

logger = logging.getLogger(__name__)

#: ``layout -> (clean folder, degraded folder)``.
LAYOUTS: dict[str, tuple[str, str]] = {"denoise": ("clean", "noisy"),
                                       "dereverb": ("anechoic", "reverb")}
#: The standard split names.
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class AudioPair:
    """One example: its name (the shared file stem) and the two files."""

    name: str
    clean: Path
    noisy: Path


def _few(names: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _split_dir(root: str | os.PathLike[str], split: str) -> Path:
    r = Path(root)
    if not r.is_dir():
        raise AudioError(f"{r}: no such dataset folder")
    d = r / split
    if not d.is_dir():
        found = sorted(p.name for p in r.iterdir() if p.is_dir())
        raise AudioError(f"{r}: no '{split}' split folder (found: {', '.join(found) or 'none'}; "
                         f"expected {', '.join(SPLITS)})")
    return d


def detect_layout(root: str | os.PathLike[str], split: str = "train") -> str:
    """``"denoise"`` if ``<root>/<split>`` holds ``clean/`` and ``noisy/``, ``"dereverb"`` if
    it holds ``anechoic/`` and ``reverb/``; :class:`AudioError` otherwise (or if both)."""
    d = _split_dir(root, split)
    found = [name for name, (a, b) in LAYOUTS.items() if (d / a).is_dir() and (d / b).is_dir()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise AudioError(f"{d}: holds both clean/noisy and anechoic/reverb folders; "
                         "pass layout='denoise' or layout='dereverb'")
    subs = sorted(p.name for p in d.iterdir() if p.is_dir())
    raise AudioError(f"{d}: expected sub-folders clean/ and noisy/ (denoising) or anechoic/ "
                     f"and reverb/ (dereverberation), found: {', '.join(subs) or 'none'}")


def _by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in list_audio(folder):
        if f.stem in out:
            raise AudioError(f"{folder}: two audio files named '{f.stem}' "
                             f"({out[f.stem].name}, {f.name})")
        out[f.stem] = f
    return out


def pairs(root: str | os.PathLike[str], split: str = "train", *, layout: str = "auto",
          strict: bool = True) -> list[AudioPair]:
    """The (clean, noisy) file pairs of ``<root>/<split>``, sorted by name.

    Args:
        root: the dataset folder.
        split: ``train``, ``valid``, ``test`` (or any sub-folder name).
        layout: ``"auto"``, ``"denoise"`` (clean/noisy) or ``"dereverb"`` (anechoic/reverb).
        strict: raise :class:`AudioError` when a file has no partner (naming a few); with
            ``False`` such files are skipped with a logged warning.
    """
    if layout == "auto":
        layout = detect_layout(root, split)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be auto, {', '.join(LAYOUTS)}; got {layout!r}")
    d = _split_dir(root, split)
    clean_name, noisy_name = LAYOUTS[layout]
    for sub in (clean_name, noisy_name):
        if not (d / sub).is_dir():
            raise AudioError(f"{d}: missing the '{sub}' folder of the {layout} layout")
    clean, noisy = _by_stem(d / clean_name), _by_stem(d / noisy_name)
    only_clean = sorted(set(clean) - set(noisy))
    only_noisy = sorted(set(noisy) - set(clean))
    for only, has, lacks in ((only_clean, clean_name, noisy_name),
                             (only_noisy, noisy_name, clean_name)):
        if only:
            msg = (f"{d}: {len(only)} {has} file(s) without a {lacks} partner: "
                   f"{_few([(clean if has == clean_name else noisy)[n].name for n in only])}")
            if strict:
                raise AudioError(msg)
            logger.warning("%s (skipped)", msg)
    names = sorted(set(clean) & set(noisy))
    if not names:
        raise AudioError(f"{d}: no paired audio files in {clean_name}/ and {noisy_name}/")
    return [AudioPair(n, clean[n], noisy[n]) for n in names]


def _read_pair(pair: AudioPair, sample_rate: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Both waves at ``sample_rate`` (``None``: the noisy file's rate), truncated to their
    common length (reverberant files may carry a longer tail)."""
    noisy, sr = read_audio(pair.noisy, sample_rate=sample_rate)
    clean, _ = read_audio(pair.clean, sample_rate=sr, allow_silent=True)  # to noisy's rate
    n = min(len(clean), len(noisy))
    return clean[:n], noisy[:n], sr


def iter_pairs(root: str | os.PathLike[str], split: str = "test", *, layout: str = "auto",
               sample_rate: int | None = None
               ) -> Iterator[tuple[AudioPair, np.ndarray, np.ndarray, int]]:
    """Full files for evaluation, torch-free: ``(pair, clean, noisy, rate)`` per pair, both
    waves mono ``float32`` at ``sample_rate`` (the files' own rate if ``None``)."""
    for pair in pairs(root, split, layout=layout):
        clean, noisy, sr = _read_pair(pair, sample_rate)
        yield pair, clean, noisy, sr


def _seeded_rng(*values: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(v) % 2**63 for v in values]))


class PairedAudioDataset:
    """Training pairs ``(clean, noisy)`` of one split, each a mono ``float32`` wave of
    ``segment_length`` samples (SGMSE+'s data pipeline, Richter et al. 2023, Sec. V).

    Args:
        root, split, layout: as for :func:`pairs`.
        sample_rate: the model's rate; files at other rates are resampled (exact ratio).
        segment_frames: STFT frames per training example (256); ``None`` returns whole
            files (then batch size 1 or a custom collate).
        hop_length: the STFT hop (128); the segment has ``(segment_frames - 1) * hop_length``
            samples.
        random_crop: a random offset per ``(seed, epoch, index)``; ``False``: the centre.
        pad_mode: ``"constant"`` (zeros, split evenly before and after, as SGMSE) or
            ``"reflect"`` for files shorter than the segment.
        normalize: divide both waves by the noisy segment's peak (SGMSE's ``"noisy"``
            normalisation; idempotent, so a model that normalises again changes nothing).
        seed: the crop seed.
        cache: keep decoded (resampled) files in memory after the first read.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *,
                 layout: str = "auto", sample_rate: int = 16000,
                 segment_frames: int | None = 256, hop_length: int = 128,
                 random_crop: bool = True, pad_mode: Literal["constant", "reflect"] = "constant",
                 normalize: bool = True, seed: int = 0, cache: bool = False):
        if segment_frames is not None and segment_frames < 2:
            raise ValueError(f"segment_frames must be >= 2 or None, got {segment_frames}")
        if hop_length < 1:
            raise ValueError(f"hop_length must be >= 1, got {hop_length}")
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
        self.root, self.split = Path(root), split
        self.layout = detect_layout(root, split) if layout == "auto" else layout
        self.pairs = pairs(root, split, layout=self.layout)
        self.sample_rate, self.hop_length = int(sample_rate), int(hop_length)
        self.segment_frames = segment_frames
        self.random_crop, self.pad_mode, self.normalize = random_crop, pad_mode, normalize
        self.seed, self.epoch = int(seed), 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def segment_length(self) -> int | None:
        """Samples per example, ``(segment_frames - 1) * hop_length`` (``None``: full files)."""
        if self.segment_frames is None:
            return None
        return (self.segment_frames - 1) * self.hop_length

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops: ``__getitem__`` crops are seeded by ``(seed, epoch, index)``."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The full (clean, noisy) waves of pair ``index`` at ``sample_rate``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        clean, noisy, _ = _read_pair(self.pairs[index], self.sample_rate)
        if self._cache is not None:
            self._cache[index] = (clean, noisy)
        return clean, noisy

    def crop(self, clean: np.ndarray, noisy: np.ndarray, rng: np.random.Generator | None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Cut (or pad) both waves to :attr:`segment_length` at the same offset: uniform in
        ``[0, T - L]`` with ``rng``, the centre without; then normalise if configured."""
        target = self.segment_length
        if target is not None:
            n = len(noisy)
            if n >= target:
                start = int(rng.integers(0, n - target + 1)) if rng is not None \
                    else (n - target) // 2
                clean, noisy = clean[start:start + target], noisy[start:start + target]
            else:
                pad = target - n
                width = (pad // 2, pad - pad // 2)
                clean = np.pad(clean, width, mode=self.pad_mode)
                noisy = np.pad(noisy, width, mode=self.pad_mode)
        if self.normalize:
            peak = float(np.abs(noisy).max())
            if peak > 0:
                clean, noisy = clean / peak, noisy / peak
        return (np.ascontiguousarray(clean, dtype=np.float32),
                np.ascontiguousarray(noisy, dtype=np.float32))

    def item(self, index: int, *, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Example ``index`` with the crop of ``epoch`` (default: the current epoch)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        index %= len(self)
        clean, noisy = self.load(index)
        e = self.epoch if epoch is None else int(epoch)
        rng = _seeded_rng(self.seed, e, index, 0xC409) if self.random_crop else None
        return self.crop(clean, noisy, rng)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.item(index)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self.item(i)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of pairs in ``epoch`` used by :meth:`sample` (seeded by ``seed, epoch``)."""
        return _seeded_rng(self.seed, epoch, 0x5EED).permutation(len(self))

    def sample(self, positions: Any, generator: Any = None) -> tuple[Any, Any]:
        """A batch at global sample positions for
        :class:`~polydiff.core.training.data.SampledData`: position ``p`` is pair
        ``permutation(p // N)[p % N]`` cropped for epoch ``p // N``, so every epoch visits
        each pair once with fresh crops, and the batch depends only on the positions.
        Returns ``(clean, noisy)`` float32 tensors ``(B, segment_length)``."""
        import torch

        if self.segment_length is None:
            raise ValueError("sample() needs fixed-length segments (segment_frames is None)")
        pos = [int(p) for p in (positions.tolist() if hasattr(positions, "tolist")
                                else positions)]
        n = len(self)
        perms: dict[int, np.ndarray] = {}
        cleans, noisies = [], []
        for p in pos:
            e = p // n
            if e not in perms:
                perms[e] = self.permutation(e)
            c, y = self.item(int(perms[e][p % n]), epoch=e)
            cleans.append(c)
            noisies.append(y)
        return torch.from_numpy(np.stack(cleans)), torch.from_numpy(np.stack(noisies))

    def __repr__(self) -> str:
        return (f"PairedAudioDataset({str(self.root)!r}, {self.split!r}, layout={self.layout!r}, "
                f"pairs={len(self)}, sample_rate={self.sample_rate}, "
                f"segment_length={self.segment_length})")
