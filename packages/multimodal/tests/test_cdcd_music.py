"""Rhythm-conditioned melodies: tokens, rhythm tracks, beat scores and MIDI output (on a few
chorales of music21's bundled corpus; no network)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("music21")

from polydiff.multimodal.cdcd.music import (  # noqa: E402
    HOLD,
    NUM_TOKENS,
    beat_scores,
    load_chorale_melodies,
    melody_windows,
    pitch_class_tv,
    rhythm_of,
    write_midi,
)


def test_rhythm_and_beat_scores() -> None:
    mel = np.array([[2, 1, 0, 5, 1, 1, 7, 0]])
    assert rhythm_of(mel).tolist() == [[2, 1, 0, 2, 1, 1, 2, 0]]
    assert beat_scores(mel, rhythm_of(mel)) == {"beat_hit": 1.0, "beat_coverage": 1.0,
                                                "rhythm_agreement": 1.0}
    other = np.array([[2, 1, 1, 1, 1, 1, 1, 1]])  # one long note: 1 of 3 onsets hit
    sc = beat_scores(other, rhythm_of(mel))
    assert sc["beat_hit"] == pytest.approx(1 / 3) and sc["beat_coverage"] == pytest.approx(1 / 3)
    assert pitch_class_tv(mel, mel) == 0.0
    assert pitch_class_tv(np.array([[2]]), np.array([[3]])) == 1.0


def test_windows_start_on_a_note() -> None:
    grid = np.array([0, 2, 1, 3, 1, 4, 5, 6, 7, 1, 1, 0])
    w = melody_windows(grid, 6, 2)
    assert w.shape[1] == 6 and all(row[0] != HOLD for row in w)


def test_chorale_melodies_and_midi(tmp_path) -> None:
    sp = load_chorale_melodies(limit=6, cache=False)
    assert sp.num_tokens == NUM_TOKENS and sp.train.tokens.shape[1] == 32
    for part in (sp.train, sp.val, sp.test):
        assert len(part) > 0 and int(part.tokens.max()) < NUM_TOKENS
        assert np.array_equal(part.cond, rhythm_of(part.tokens))
    path = write_midi(sp.test.tokens[0], tmp_path / "m.mid")
    assert path.read_bytes()[:4] == b"MThd"
    from music21 import converter

    back = converter.parse(str(path)).flatten().notes
    assert len(back) == int((sp.test.tokens[0] >= 2).sum())  # one MIDI note per onset
