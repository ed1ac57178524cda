"""Canonical forms of small labelled DAGs, so isomorphic architectures get the same hash.

:func:`canonical_dag` is an exact canonical labelling: node colours are refined by
Weisfeiler-Lehman iterations over in- and out-neighbourhoods (isomorphism-invariant), nodes
are ordered by colour, and every ordering inside a colour class is tried, keeping the
lexicographically smallest ``(labels, edges)`` encoding. Two DAGs therefore get the same form
if and only if they are isomorphic as labelled graphs. The classes left after refinement are
tiny for architecture cells (at most a few nodes), so the search is cheap; graphs whose
classes would need more than ``max_orderings`` orderings raise instead of hashing silently
inexactly.

:func:`digest` turns a canonical form into a short stable hex string (SHA-1).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Sequence

__all__ = ["canonical_dag", "digest", "prune_dag"]


def digest(form: str, length: int = 16) -> str:
    """A stable short hex digest of a canonical form."""
    return hashlib.sha1(form.encode("utf-8")).hexdigest()[:length]


def prune_dag(n: int, edges: Iterable[tuple[int, int]], source: int, sink: int
              ) -> tuple[list[int], set[tuple[int, int]]]:
    """Nodes (sorted) and edges that lie on some ``source -> sink`` path (the computation
    that reaches the output); empty if ``sink`` is unreachable."""
    edges = set(edges)
    succ: dict[int, list[int]] = {i: [] for i in range(n)}
    pred: dict[int, list[int]] = {i: [] for i in range(n)}
    for i, j in edges:
        succ[i].append(j)
        pred[j].append(i)

    def reach(start: int, nbrs: dict[int, list[int]]) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            for w in nbrs[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        return seen

    keep = reach(source, succ) & reach(sink, pred)
    if sink not in keep:
        return [], set()
    return sorted(keep), {(i, j) for i, j in edges if i in keep and j in keep}


def _refine(labels: Sequence[str], edges: set[tuple[int, int]]) -> list[int]:
    """Stable WL colours (integers ordered by their signatures: invariant under isomorphism)."""
    n = len(labels)
    succ = [[j for i, j in edges if i == v] for v in range(n)]
    pred = [[i for i, j in edges if j == v] for v in range(n)]
    sigs = [str(lab) for lab in labels]
    colours = _rank(sigs)
    for _ in range(n + 1):
        sigs = [f"{colours[v]}|{sorted(colours[u] for u in pred[v])}|"
                f"{sorted(colours[w] for w in succ[v])}" for v in range(n)]
        new = _rank(sigs)
        if len(set(new)) == len(set(colours)):
            return new
        colours = new
    return colours


def _rank(sigs: Sequence[str]) -> list[int]:
    order = {s: k for k, s in enumerate(sorted(set(sigs)))}
    return [order[s] for s in sigs]


def canonical_dag(labels: Sequence[str], edges: Iterable[tuple[int, int]], *,
                  max_orderings: int = 100_000) -> str:
    """The canonical form of a node-labelled directed graph (module docstring).

    Args:
        labels: one string label per node.
        edges: directed edges ``(i, j)``.
        max_orderings: refuse graphs whose colour classes need more orderings.
    """
    labels = [str(lab) for lab in labels]
    n = len(labels)
    edges = {(int(i), int(j)) for i, j in edges}
    if any(not (0 <= i < n and 0 <= j < n) for i, j in edges):
        raise ValueError("edges must index the labelled nodes")
    if n == 0:
        return "()"
    colours = _refine(labels, edges)
    classes: dict[int, list[int]] = {}
    for v, c in enumerate(colours):
        classes.setdefault(c, []).append(v)
    groups = [classes[c] for c in sorted(classes)]
    count = math.prod(math.factorial(len(g)) for g in groups)
    if count > max_orderings:
        raise ValueError(f"graph too symmetric to canonise exactly ({count} orderings)")
    best: tuple | None = None
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [v for p in perms for v in p]
        pos = {v: k for k, v in enumerate(order)}
        enc = tuple(sorted((pos[i], pos[j]) for i, j in edges))
        if best is None or enc < best:
            best = enc
    ordered = [labels[v] for g in groups for v in g]  # labels are constant within a class
    return "(" + ",".join(ordered) + ")" + ";".join(f"{i}>{j}" for i, j in best or ())
