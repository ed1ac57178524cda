"""Validity, uniqueness and novelty on hand-made sets with known answers."""

from __future__ import annotations

from polydiff.graphnas.metrics import generation_metrics, unique_archs
from polydiff.graphnas.spaces import NB201Cell, NB201Space

S = NB201Space()
A = NB201Cell(("nor_conv_3x3",) * 6)
# B and B_iso are isomorphic (edge 1->2 is none; the branches through nodes 1 and 2 swap)
B = NB201Cell(("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "nor_conv_1x1",
               "skip_connect"))
B_ISO = NB201Cell(("avg_pool_3x3", "nor_conv_3x3", "none", "skip_connect", "skip_connect",
                   "nor_conv_1x1"))
C = NB201Cell(("skip_connect",) * 6)
BAD = NB201Cell(("conv_5x5",) * 6)


def test_isomorphic_pair_is_one_architecture():
    assert S.canonical(B) == S.canonical(B_ISO) and B != B_ISO
    assert unique_archs(S, [B, B_ISO, A, B]) == [B, A]


def test_hand_made_set():
    generated = [A, B, B_ISO, None, BAD, C, A, None]  # 8 generated, 5 valid, 3 distinct
    m = generation_metrics(S, generated, train=[A])
    assert m["n"] == 8 and m["valid"] == 5
    assert m["validity"] == 5 / 8
    assert m["uniqueness"] == 3 / 5  # {A, B~B_ISO, C}
    assert m["novelty"] == 2 / 3  # B and C are not in the training set


def test_training_set_as_forms_and_empty_sets():
    m = generation_metrics(S, [B_ISO], train={S.canonical(B)})
    assert m["novelty"] == 0.0
    empty = generation_metrics(S, [None, None])
    assert empty["validity"] == 0 and empty["uniqueness"] == 0 and empty["novelty"] == 0
    assert generation_metrics(S, [])["validity"] == 0.0
