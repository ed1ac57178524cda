"""Rhythm-conditioned melodies from the Bach chorales bundled with music21.

Each chorale's soprano (the part named Soprano, else the first part) is read on an eighth-note
grid and cut into windows of ``length`` steps (default 32: four 4/4 bars), ``stride`` apart.
A melody step is one token: ``0`` rest, ``1`` hold (the note sounding at the previous step
continues), ``2 + p`` the onset of MIDI pitch ``LOW + p`` (``LOW..HIGH`` = A3..A5; pitches
outside are moved by octaves into the range). The condition is the melody's rhythm track:
``0`` silence, ``1`` sustain, ``2`` onset per step. The task is to write a melody for a given
rhythm; correspondence is scored by beat hit and coverage (:func:`beat_scores`).
Chorales are split by piece (train / val / test never share a chorale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from polydiff.multimodal.cdcd.data import TokenSet, TokenSplits

__all__ = ["LOW", "HIGH", "NUM_TOKENS", "REST", "HOLD", "rhythm_of", "melody_windows",
           "load_chorale_melodies", "beat_scores", "pitch_class_tv", "write_midi"]

LOW, HIGH = 57, 81
REST, HOLD = 0, 1
NUM_TOKENS = 2 + HIGH - LOW + 1
STEP = 0.5  # quarter lengths per grid step (an eighth note)


def rhythm_of(tokens: np.ndarray) -> np.ndarray:
    """Rhythm track of melody tokens: 0 silence, 1 sustain, 2 onset."""
    t = np.asarray(tokens)
    return np.where(t >= 2, 2, np.where(t == HOLD, 1, 0)).astype(np.int64)


def _fold(pitch: int) -> int:
    while pitch < LOW:
        pitch += 12
    while pitch > HIGH:
        pitch -= 12
    return pitch


def _soprano(score: object) -> object:
    parts = list(score.parts)  # type: ignore[attr-defined]
    for p in parts:
        if "soprano" in str(p.partName or "").lower():
            return p
    return parts[0]


def melody_grid(part: object) -> np.ndarray:
    """A part's notes on the eighth-note grid (tokens as in the module docstring)."""
    flat = part.flatten()  # type: ignore[attr-defined]
    end = float(flat.highestTime)
    grid = np.zeros(int(np.ceil(end / STEP)), dtype=np.int64)
    for n in flat.notes:
        pitch = n.pitches[-1].midi if n.isChord else n.pitch.midi
        start = int(round(float(n.offset) / STEP))
        stop = max(start + 1, int(round((float(n.offset) + float(n.quarterLength)) / STEP)))
        if start >= len(grid):
            continue
        grid[start] = 2 + _fold(int(pitch)) - LOW
        grid[start + 1:stop] = HOLD
    return grid


def melody_windows(grid: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Windows ``(n, length)`` of a melody grid that start on a sounding note."""
    out = [grid[i:i + length] for i in range(0, len(grid) - length + 1, stride)]
    out = [w for w in out if w[0] != HOLD and (w >= 2).sum() >= 4]
    return np.stack(out) if out else np.zeros((0, length), np.int64)


def _parse(limit: int, length: int, stride: int) -> list[np.ndarray]:
    from music21 import corpus

    paths = sorted(str(p) for p in corpus.getComposer("bach"))[:limit]
    pieces = []
    for p in paths:
        try:
            grid = melody_grid(_soprano(corpus.parse(p)))
        except Exception:  # noqa: BLE001 - a score music21 cannot read is skipped
            continue
        w = melody_windows(grid, length, stride)
        if len(w):
            pieces.append(w)
    return pieces


def load_chorale_melodies(*, limit: int = 120, length: int = 32, stride: int = 16,
                          seed: int = 0, cache: bool = True) -> TokenSplits:
    """Melody windows of the first ``limit`` Bach chorales with their rhythm tracks, split
    60/20/20 by chorale with ``seed``. Parsed once and cached in polydiff's cache folder."""
    from polydiff.core.utils import atomic_path, cache_dir

    path = cache_dir("cdcd", f"chorales-{limit}-{length}-{stride}.npz")
    if cache and path.is_file():
        with np.load(path) as z:
            pieces = [z[k] for k in sorted(z.files, key=int)]
    else:
        pieces = _parse(limit, length, stride)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                arrays: dict[str, Any] = {str(i): w for i, w in enumerate(pieces)}
                np.savez_compressed(f, **arrays)
    if len(pieces) < 3:
        raise ValueError("too few chorales could be read")
    order = np.random.default_rng(seed).permutation(len(pieces))
    n_val = n_test = max(1, round(0.2 * len(pieces)))
    groups = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
              "train": order[n_val + n_test:]}
    sets = {}
    for name, idx in groups.items():
        tokens = np.concatenate([pieces[i] for i in idx])
        sets[name] = TokenSet(tokens, cond=rhythm_of(tokens))
    return TokenSplits(sets["train"], sets["val"], sets["test"], num_tokens=NUM_TOKENS,
                       shape=(length,))


def beat_scores(melody: np.ndarray, rhythm: np.ndarray) -> dict[str, float]:
    """Beat hit (fraction of the rhythm's onsets where the melody has an onset), beat coverage
    (melody onsets / rhythm onsets) and the step agreement of the melody's own rhythm track
    with the given one."""
    got, want = rhythm_of(melody) == 2, np.asarray(rhythm) == 2
    n_want = max(int(want.sum()), 1)
    return {"beat_hit": float((got & want).sum() / n_want),
            "beat_coverage": float(got.sum() / n_want),
            "rhythm_agreement": float(np.mean(rhythm_of(melody) == np.asarray(rhythm)))}


def pitch_class_tv(melody: np.ndarray, ref: np.ndarray) -> float:
    """Total-variation distance between the pitch-class histograms of the onsets of two
    melody sets (a key / style check)."""
    def hist(t: np.ndarray) -> np.ndarray:
        on = np.asarray(t)[np.asarray(t) >= 2] - 2 + LOW
        h = np.bincount(on % 12, minlength=12).astype(np.float64)
        return h / max(h.sum(), 1.0)

    return float(0.5 * np.abs(hist(melody) - hist(ref)).sum())


def write_midi(tokens: np.ndarray, path: str | Path, *, bpm: float = 90.0) -> Path:
    """Write one melody (tokens ``(L,)``) as a MIDI file (atomically)."""
    from music21 import note, stream, tempo

    from polydiff.core.utils import atomic_path

    s: Any = stream.Stream()
    s.append(tempo.MetronomeMark(number=bpm))
    toks = [int(t) for t in np.asarray(tokens).ravel()]
    i = 0
    while i < len(toks):
        j = i + 1
        while j < len(toks) and toks[j] == HOLD:
            j += 1
        dur = (j - i) * STEP
        if toks[i] >= 2:
            n = note.Note(midi=toks[i] - 2 + LOW)
            n.quarterLength = dur
            s.append(n)
        else:
            r = note.Rest()
            r.quarterLength = dur
            s.append(r)
        i = j
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        s.write("midi", fp=str(tmp))
    return path
