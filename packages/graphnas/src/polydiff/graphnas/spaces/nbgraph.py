"""The NAS-Bench-Graph space (Qin et al. 2022, "NAS-Bench-Graph: Benchmarking Graph Neural
Architecture Search").

An architecture is a DAG of an input node and 4 computing nodes; computing node ``i``
(1-4) reads exactly one earlier node ``link[i-1]`` (0 = the input) and applies one of 9
operations (``gat gcn gin cheb sage arma graph fc skip``); the outputs of the computing nodes
that no other node reads form the output. Graph view: 5 nodes, 10 node types (``input`` and
the operations), and the wiring varies, so the 10 upper-triangular adjacency entries diffuse
with the node types.

String form: ``"0,1,2,1:gcn,gin,fc,cheb"`` (links, then operations).

Validity: node 0 is ``input``, nodes 1-4 operations, every computing node has exactly one
incoming edge from an earlier node, and not every operation is ``skip``. The benchmark's
ogbn-proteins table covers 5 of the operations only (``gcn sage arma fc skip``).

Canonical form (the benchmark's notion of equivalence): ``skip`` nodes are identities, so
they are contracted into the node they read; the remaining operations form a tree rooted at
the input; every output leaf marks the node its value comes from; marks on the input itself
are dropped (the raw input never reaches the output). The tree with its marks is canonised
(sorted nested children). On the 157,464 raw encodings this partition coincides exactly with
the benchmark's own hashing: 26,206 classes, one per table entry (a test checks it against
the ``nas-bench-graph`` package).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polydiff.core.nn.graph import GraphLayout, dag_free_edges
from polydiff.graphnas.spaces.base import InvalidArchitecture, SearchSpace

__all__ = ["NBG_OPS", "PROTEINS_OPS", "GraphArch", "NBGraphSpace"]

NBG_OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")
PROTEINS_OPS = ("gcn", "sage", "arma", "fc", "skip")
NODE_TYPES = ("input",) + NBG_OPS
N_COMPUTE = 4


@dataclass(frozen=True)
class GraphArch:
    """``links[i]``: the node computing node ``i + 1`` reads; ``ops[i]``: its operation."""

    links: tuple[int, ...]
    ops: tuple[str, ...]


class NBGraphSpace(SearchSpace[GraphArch]):
    """The NAS-Bench-Graph space (module docstring)."""

    name = "nbgraph"
    node_types = NODE_TYPES
    n_nodes = N_COMPUTE + 1

    def layout(self) -> GraphLayout:
        return GraphLayout(self.n_nodes, self.n_types, dag_free_edges(self.n_nodes))

    def graph(self, arch: GraphArch) -> tuple[list[str], Tensor]:
        adj = torch.zeros(self.n_nodes, self.n_nodes)
        for i, src in enumerate(arch.links):
            adj[src, i + 1] = 1.0
        return ["input", *arch.ops], adj

    def from_graph(self, types: Sequence[str], adj: Tensor) -> GraphArch:
        if len(types) != self.n_nodes:
            raise InvalidArchitecture(f"nbgraph: expected {self.n_nodes} nodes, got "
                                      f"{len(types)}")
        if types[0] != "input":
            raise InvalidArchitecture("nbgraph: node 0 must be 'input'")
        adj = torch.as_tensor(adj)
        if bool(torch.tril(adj).ne(0).any()):
            raise InvalidArchitecture("nbgraph: edges must go from earlier to later nodes")
        links = []
        for j in range(1, self.n_nodes):
            src = adj[:j, j].nonzero().flatten().tolist()
            if len(src) != 1:
                raise InvalidArchitecture(f"nbgraph: computing node {j} must read exactly one "
                                          f"earlier node, got {len(src)}")
            links.append(int(src[0]))
        return GraphArch(tuple(links), tuple(types[1:]))

    # ------------------------------------------------------------------ strings
    def parse(self, text: str) -> GraphArch:
        links_s, sep, ops_s = text.strip().partition(":")
        if not sep:
            raise InvalidArchitecture(f"nbgraph: {text!r} is not 'l1,l2,l3,l4:op1,op2,op3,op4'")
        try:
            links = tuple(int(v) for v in links_s.split(","))
        except ValueError:
            raise InvalidArchitecture(f"nbgraph: links {links_s!r} must be 4 integers") from None
        ops = tuple(o.strip() for o in ops_s.split(","))
        return self.validate(GraphArch(links, ops))

    def format(self, arch: GraphArch) -> str:
        return ",".join(map(str, arch.links)) + ":" + ",".join(arch.ops)

    # ------------------------------------------------------------------ rules
    def validate(self, arch: GraphArch, ops: Sequence[str] = NBG_OPS) -> GraphArch:
        if len(arch.links) != N_COMPUTE or len(arch.ops) != N_COMPUTE:
            raise InvalidArchitecture(f"nbgraph: need {N_COMPUTE} links and {N_COMPUTE} "
                                      f"operations, got {len(arch.links)} and {len(arch.ops)}")
        for i, src in enumerate(arch.links):
            if not 0 <= src <= i:
                raise InvalidArchitecture(f"nbgraph: computing node {i + 1} can read nodes "
                                          f"0..{i}, got {src}")
        bad = [o for o in arch.ops if o not in ops]
        if bad:
            raise InvalidArchitecture(f"nbgraph: unknown operation {bad[0]!r}; expected one of "
                                      f"{', '.join(ops)}")
        if all(o == "skip" for o in arch.ops):
            raise InvalidArchitecture("nbgraph: at least one operation must not be 'skip'")
        return arch

    def canonical(self, arch: GraphArch) -> str:
        links, ops = self.validate(arch).links, arch.ops
        n = len(links)
        has_child = [False] * (n + 1)
        for src in links:
            has_child[src] = True

        def resolve(v: int) -> int:  # follow skip nodes up to a real operation or the input
            while v != 0 and ops[v - 1] == "skip":
                v = links[v - 1]
            return v

        marks = [0] * (n + 1)
        children: list[list[int]] = [[] for _ in range(n + 1)]
        for v in range(1, n + 1):
            if not has_child[v]:
                marks[resolve(v)] += 1
            if ops[v - 1] != "skip":
                children[resolve(links[v - 1])].append(v)

        def form(v: int) -> str:
            kids = ",".join(sorted(form(c) for c in children[v]))
            if v == 0:
                return f"in[{kids}]"
            return f"{ops[v - 1]}{'*' * marks[v]}[{kids}]"

        return "nbgraph:" + form(0)

    # ------------------------------------------------------------------ sampling
    def random(self, rng: random.Random) -> GraphArch:
        while True:
            links = tuple(rng.randint(0, i) for i in range(N_COMPUTE))
            ops = tuple(rng.choice(NBG_OPS) for _ in range(N_COMPUTE))
            if not all(o == "skip" for o in ops):
                return GraphArch(links, ops)

    def properties(self, arch: GraphArch) -> dict[str, float]:
        """Depth: the most non-skip operations on one path; ``n_ops``: non-skip operations."""
        self.validate(arch)
        depth = [0] * (N_COMPUTE + 1)
        for i, (src, op) in enumerate(zip(arch.links, arch.ops)):
            depth[i + 1] = depth[src] + (op != "skip")
        return {"depth": float(max(depth)),
                "n_ops": float(sum(o != "skip" for o in arch.ops))}
