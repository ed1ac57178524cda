"""The NAS-Bench-201 cell (Dong & Yang 2020, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search").

A cell is a 4-node DAG whose 6 edges ``j -> i`` (``j < i``) each carry one of 5 operations;
all ``5^6 = 15,625`` cells are enumerable. As in MetaD2A and DiffusionNAG (An et al. 2024),
the graph view puts operations on nodes: 8 nodes ``input, op(0->1), op(0->2), op(1->2),
op(0->3), op(1->3), op(2->3), output`` with a fixed wiring (operation ``j -> i`` feeds every
operation leaving node ``i``; the three operations into node 3 feed the output), and 7 node
types (``input``, ``output`` and the 5 operations). Only the node types diffuse.

String form: NAS-Bench-201's own, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

Validity: node 0 is ``input``, node 7 ``output``, nodes 1-6 operations.

Canonical form: ``none`` operations are removed, then every node that is not on an
input -> output path, and the remaining labelled DAG is canonised exactly
(:func:`~polydiff.graphnas.hashing.canonical_dag`); cells whose output is unreachable all
compute zero and share one form.

Exact properties: the parameter count of the CIFAR-10 network NAS-Bench-201 trains (stem,
three stages of 5 cells with 16/32/64 channels, two residual reduction blocks, classifier;
ReLU-Conv-BN operations with affine BN), which spans 0.073-1.53 M parameters; and the depth
(the most non-identity operations on one input -> output path).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polydiff.core.nn.graph import GraphLayout
from polydiff.graphnas.hashing import canonical_dag, prune_dag
from polydiff.graphnas.spaces.base import InvalidArchitecture, SearchSpace

__all__ = ["NB201_OPS", "NB201Cell", "NB201Space", "EDGES"]

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODE_TYPES = ("input", "output") + NB201_OPS
# cell edges (from, to) in NAS-Bench-201's string order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
_CONV_PARAMS = {"nor_conv_3x3": (9, 2), "nor_conv_1x1": (1, 2)}  # (k*k, BN affine per channel)


@dataclass(frozen=True)
class NB201Cell:
    """Six operations, one per edge of :data:`EDGES`."""

    ops: tuple[str, ...]


def _op_graph() -> Tensor:
    """Fixed wiring of the 8-node operation-on-node graph."""
    a = torch.zeros(8, 8)
    for k, (src, _) in enumerate(EDGES):
        node = k + 1
        if src == 0:
            a[0, node] = 1.0
        for m, (_, dst) in enumerate(EDGES):
            if dst == src:
                a[m + 1, node] = 1.0
    for m, (_, dst) in enumerate(EDGES):
        if dst == 3:
            a[m + 1, 7] = 1.0
    return a


class NB201Space(SearchSpace[NB201Cell]):
    """The NAS-Bench-201 cell space (module docstring)."""

    name = "nb201"
    node_types = NODE_TYPES
    n_nodes = 8

    def __init__(self) -> None:
        self._adj = _op_graph()

    def layout(self) -> GraphLayout:
        return GraphLayout(self.n_nodes, self.n_types, (), self._adj)

    def graph(self, arch: NB201Cell) -> tuple[list[str], Tensor]:
        return ["input", *arch.ops, "output"], self._adj.clone()

    def from_graph(self, types: Sequence[str], adj: Tensor) -> NB201Cell:
        if len(types) != 8:
            raise InvalidArchitecture(f"nb201: expected 8 nodes, got {len(types)}")
        if types[0] != "input" or types[7] != "output":
            raise InvalidArchitecture("nb201: node 0 must be 'input' and node 7 'output'")
        if not torch.equal(torch.as_tensor(adj, dtype=torch.float32), self._adj):
            raise InvalidArchitecture("nb201: the wiring of a cell is fixed")
        return NB201Cell(tuple(types[1:7]))

    # ------------------------------------------------------------------ strings
    def parse(self, text: str) -> NB201Cell:
        s = text.strip()
        parts = s.split("+")
        if len(parts) != 3:
            raise InvalidArchitecture(f"nb201: {text!r} is not '|op~0|+|op~0|op~1|+"
                                      "|op~0|op~1|op~2|'")
        ops = []
        for node, part in enumerate(parts, start=1):
            if not (part.startswith("|") and part.endswith("|")):
                raise InvalidArchitecture(f"nb201: node {node} of {text!r} must be written "
                                          "between '|'")
            items = part[1:-1].split("|")
            if len(items) != node:
                raise InvalidArchitecture(f"nb201: node {node} needs {node} input edge(s), "
                                          f"got {len(items)}")
            for src, item in enumerate(items):
                op, sep, idx = item.partition("~")
                if not sep or idx != str(src):
                    raise InvalidArchitecture(f"nb201: edge {item!r} must be written "
                                              f"'op~{src}'")
                ops.append(op)
        return self.validate(NB201Cell(tuple(ops)))

    def format(self, arch: NB201Cell) -> str:
        o = arch.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    # ------------------------------------------------------------------ rules
    def validate(self, arch: NB201Cell) -> NB201Cell:
        if len(arch.ops) != 6:
            raise InvalidArchitecture(f"nb201: a cell has 6 operations, got {len(arch.ops)}")
        bad = [o for o in arch.ops if o not in NB201_OPS]
        if bad:
            raise InvalidArchitecture(f"nb201: unknown operation {bad[0]!r}; expected one of "
                                      f"{', '.join(NB201_OPS)}")
        return arch

    def canonical(self, arch: NB201Cell) -> str:
        labels, adj = self.graph(self.validate(arch))
        edges = {(int(i), int(j)) for i, j in adj.nonzero().tolist()
                 if labels[i] != "none" and labels[j] != "none"}
        nodes, kept = prune_dag(8, edges, 0, 7)
        if not nodes:
            return "nb201:zero"
        pos = {v: k for k, v in enumerate(nodes)}
        return "nb201:" + canonical_dag([labels[v] for v in nodes],
                                        {(pos[i], pos[j]) for i, j in kept})

    # ------------------------------------------------------------------ sampling
    def random(self, rng: random.Random) -> NB201Cell:
        return NB201Cell(tuple(rng.choice(NB201_OPS) for _ in range(6)))

    def enumerate(self) -> Iterator[NB201Cell]:
        for ops in itertools.product(NB201_OPS, repeat=6):
            yield NB201Cell(ops)

    # ------------------------------------------------------------------ properties
    def properties(self, arch: NB201Cell) -> dict[str, float]:
        return {"params": float(nb201_params(arch)), "depth": float(nb201_depth(arch))}


def _relu_conv_bn(c_in: int, c_out: int, kk: int) -> int:
    return kk * c_in * c_out + 2 * c_out


def nb201_params(arch: NB201Cell, channels: int = 16, cells_per_stage: int = 5,
                 classes: int = 10) -> int:
    """Exact parameter count of the NAS-Bench-201 CIFAR network built from ``arch``."""
    c = channels
    total = 3 * 9 * c + 2 * c  # stem: conv3x3 (no bias) + BN
    for stage in range(3):
        cs = c * 2**stage
        per_cell = sum(_relu_conv_bn(cs, cs, _CONV_PARAMS[o][0]) for o in arch.ops
                       if o in _CONV_PARAMS)
        total += cells_per_stage * per_cell
        if stage < 2:  # residual reduction block cs -> 2 cs
            co = 2 * cs
            total += _relu_conv_bn(cs, co, 9) + _relu_conv_bn(co, co, 9) + cs * co
    c_last = c * 4
    return total + 2 * c_last + c_last * classes + classes  # last BN, classifier


def nb201_depth(arch: NB201Cell) -> int:
    """The most non-identity operations (convolutions, pooling) on one input -> output path
    of the cell (0 if the output is unreachable)."""
    best = {0: 0}
    for (src, dst), op in zip(EDGES, arch.ops):  # EDGES are in topological order of dst
        if op == "none" or src not in best:
            continue
        val = best[src] + (0 if op == "skip_connect" else 1)
        best[dst] = max(best.get(dst, -1), val)
    return best.get(3, 0)
