"""Exact canonical forms of labelled DAGs, checked against brute-force isomorphism."""

from __future__ import annotations

import itertools
import random

import pytest

from polydiff.graphnas.hashing import canonical_dag, digest, prune_dag


def _relabel(labels, edges, perm):
    inv = {old: new for new, old in enumerate(perm)}
    return [labels[old] for old in perm], {(inv[i], inv[j]) for i, j in edges}


def _isomorphic(a, b) -> bool:
    """Brute force over all node bijections (small graphs only)."""
    (la, ea), (lb, eb) = a, b
    if sorted(la) != sorted(lb) or len(ea) != len(eb):
        return False
    n = len(la)
    for perm in itertools.permutations(range(n)):
        if all(la[i] == lb[perm[i]] for i in range(n)) and \
                {(perm[i], perm[j]) for i, j in ea} == set(eb):
            return True
    return False


def _random_dag(rng: random.Random, n: int, labels: str = "ab"):
    lab = [rng.choice(labels) for _ in range(n)]
    edges = {(i, j) for j in range(n) for i in range(j) if rng.random() < 0.4}
    return lab, edges


def test_relabelled_graphs_share_the_form():
    rng = random.Random(0)
    for _ in range(50):
        lab, edges = _random_dag(rng, 6)
        perm = list(range(6))
        rng.shuffle(perm)
        assert canonical_dag(lab, edges) == canonical_dag(*_relabel(lab, edges, perm))


def test_forms_agree_with_brute_force_isomorphism():
    """Equal forms if and only if isomorphic, over many random small DAG pairs."""
    rng = random.Random(1)
    graphs = [_random_dag(rng, 5) for _ in range(120)]
    forms = [canonical_dag(*g) for g in graphs]
    checked = 0
    for i in range(len(graphs)):
        for j in range(i + 1, len(graphs)):
            if sorted(graphs[i][0]) != sorted(graphs[j][0]) or \
                    len(graphs[i][1]) != len(graphs[j][1]):
                continue
            assert (forms[i] == forms[j]) == _isomorphic(graphs[i], graphs[j])
            checked += 1
    assert checked > 100


def test_prune_keeps_only_source_to_sink_paths():
    nodes, edges = prune_dag(5, {(0, 1), (1, 4), (0, 2), (3, 4)}, 0, 4)
    assert nodes == [0, 1, 4] and edges == {(0, 1), (1, 4)}
    assert prune_dag(3, {(0, 1)}, 0, 2) == ([], set())


def test_digest_is_stable_and_short():
    assert digest("abc") == digest("abc") and len(digest("abc")) == 16
    assert digest("abc") != digest("abd")


def test_too_symmetric_graphs_are_refused():
    with pytest.raises(ValueError, match="too symmetric"):
        canonical_dag(["a"] * 12, set(), max_orderings=1000)
    with pytest.raises(ValueError, match="index"):
        canonical_dag(["a"], {(0, 3)})
