"""Monotonic alignment search and the length regulator against brute force; the Gaussian
aligner against espeak-ng's own phoneme timings; features against closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from polydiff.speech.prodiff.align import length_regulate, monotonic_alignment_search
from polydiff.speech.prodiff.features import dtw_path, mcd_dtw, yin_f0


def brute_force_mas(log_lik: torch.Tensor) -> tuple[float, list[int]]:
    """Best total over every monotonic alignment with >= 1 frame per token."""
    n, m = log_lik.shape
    best, arg = -float("inf"), None
    for cuts in itertools.combinations(range(1, m), n - 1):
        edges = (0, *cuts, m)
        total = sum(float(log_lik[k, edges[k]:edges[k + 1]].sum()) for k in range(n))
        if total > best:
            best, arg = total, [edges[k + 1] - edges[k] for k in range(n)]
    return best, arg


def test_mas_matches_brute_force_on_small_cases():
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        n = int(torch.randint(1, 5, (1,), generator=g))
        m = int(torch.randint(n, 9, (1,), generator=g))
        ll = torch.randn(n, m, generator=g, dtype=torch.float64)
        dur = monotonic_alignment_search(ll)[0]
        best, arg = brute_force_mas(ll)
        assert dur.tolist() == arg
        edges = np.concatenate([[0], np.cumsum(dur.numpy())])
        got = sum(float(ll[k, edges[k]:edges[k + 1]].sum()) for k in range(n))
        assert got == pytest.approx(best)


def test_mas_batched_with_padding_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 7), (5, 9), (1, 4)]
    batch = torch.full((3, 5, 9), -7.0, dtype=torch.float64)
    singles = []
    for k, (n, m) in enumerate(shapes):
        ll = torch.randn(n, m, generator=g, dtype=torch.float64)
        batch[k, :n, :m] = ll
        singles.append(monotonic_alignment_search(ll)[0])
    dur = monotonic_alignment_search(batch, torch.tensor([3, 5, 1]), torch.tensor([7, 9, 4]))
    for k, (n, m) in enumerate(shapes):
        assert dur[k, :n].tolist() == singles[k].tolist()
        assert int(dur[k].sum()) == m and int(dur[k, n:].sum()) == 0
    with pytest.raises(ValueError, match="at least one frame per token"):
        monotonic_alignment_search(torch.zeros(4, 3))


def test_length_regulator_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 4, 5, generator=g)
    dur = torch.tensor([[2, 0, 3, 1], [1, 1, 1, 1], [0, 0, 5, 0]])
    frames, mask = length_regulate(h, dur)
    assert frames.shape == (3, 6, 5)
    for k in range(3):
        ref = torch.repeat_interleave(h[k], dur[k], dim=0)
        torch.testing.assert_close(frames[k, :len(ref)], ref)
        assert bool(mask[k, :len(ref)].all()) and not bool(mask[k, len(ref):].any())
        assert float(frames[k, len(ref):].abs().sum()) == 0.0


def test_dtw_path_matches_brute_force():
    g = np.random.default_rng(3)
    cost = g.random((4, 5))

    def paths(i, j):
        if (i, j) == (0, 0):
            yield [(0, 0)]
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i - di >= 0 and j - dj >= 0:
                for p in paths(i - di, j - dj):
                    yield p + [(i, j)]

    best = min(sum(cost[a, b] for a, b in p) for p in paths(3, 4))
    i, j = dtw_path(cost)
    assert cost[i, j].sum() == pytest.approx(best)
    assert (i[0], j[0]) == (0, 0) and (i[-1], j[-1]) == (3, 4)


def _tone(f0_hz: float, seconds: float = 1.0, sr: int = 8000) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.4 * np.sin(2 * np.pi * f0_hz * t) + 0.2 * np.sin(4 * np.pi * f0_hz * t)
            + 0.1 * np.sin(6 * np.pi * f0_hz * t)).astype(np.float32)


@pytest.mark.parametrize("f0", [90.0, 150.0, 233.0])
def test_yin_finds_the_fundamental_and_silence(f0):
    x = np.concatenate([np.zeros(2000, np.float32), _tone(f0)])
    est = yin_f0(x).numpy()
    voiced = est[est > 0]
    assert abs(np.median(voiced) / f0 - 1) < 0.01
    assert (est[:10] == 0).all()  # silence is unvoiced


def test_mcd_is_zero_for_identical_waves_and_grows_with_distortion():
    x = _tone(140.0)
    noise = np.random.default_rng(4).standard_normal(x.size).astype(np.float32)
    assert mcd_dtw(x, x) == 0.0
    assert 0 < mcd_dtw(x, x + 0.01 * noise) < mcd_dtw(x, x + 0.1 * noise)


@pytest.mark.slow
def test_gaussian_aligner_recovers_espeak_phoneme_timings_on_formant_speech():
    """MAS under per-phoneme Gaussians (flat start, hard EM) against the synthesiser's own
    phoneme events: most boundaries within 50 ms."""
    pytest.importorskip("espeakng_loader")
    from polydiff.speech.prodiff.data import alignment_check, build_corpus, formant_utterances

    utts = formant_utterances(24, "en-us", seed=3)
    ref = [u.durations for u in utts]
    for u in utts:
        u.durations = None
    corpus = build_corpus(utts)
    check = alignment_check(corpus, ref)
    assert check["within_50ms"] > 0.9 and check["mean_abs_ms"] < 30.0
