"""The search-space protocol: architectures as graphs with encode/decode, validity rules,
canonical hashing, and the dense diffusion state.

Every space describes its architectures as graphs of ``n_nodes`` nodes, each with one of
``node_types``, and an adjacency matrix (``A[i, j] = 1``: edge ``i -> j``). Three views:

* the architecture object itself (a frozen dataclass per space) and its string form
  (:meth:`SearchSpace.parse` / :meth:`SearchSpace.format`);
* a PyTorch Geometric ``Data`` (:meth:`SearchSpace.encode` / :meth:`SearchSpace.decode`):
  ``x`` the ``(N, T)`` node-type one-hots, ``edge_index`` the edges, ``adj`` the dense
  ``(N, N)`` adjacency;
* the diffusion state (:meth:`SearchSpace.to_state` / :meth:`SearchSpace.from_state`): node
  one-hots and the adjacency entries the space varies, mapped to ``{-1, +1}`` and packed by a
  :class:`~polydiff.core.nn.graph.GraphLayout`. ``from_state`` is the discretisation (argmax
  of the node types, threshold 0 of the edges) followed by the validity rules, so an invalid
  sample comes back as ``None``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from polydiff.core.nn.graph import GraphLayout
from polydiff.graphnas.hashing import digest

__all__ = ["InvalidArchitecture", "SearchSpace", "Arch"]

Arch = TypeVar("Arch")


class InvalidArchitecture(ValueError):
    """An architecture (or its string) that breaks the space's rules; the message is one line."""


class SearchSpace(ABC, Generic[Arch]):
    """Base class of the search spaces (module docstring)."""

    name: str
    node_types: tuple[str, ...]
    n_nodes: int

    # ------------------------------------------------------------------ structure
    @property
    def n_types(self) -> int:
        return len(self.node_types)

    @abstractmethod
    def layout(self) -> GraphLayout:
        """The dense layout of the diffusion state (free adjacency entries, fixed wiring)."""

    @abstractmethod
    def graph(self, arch: Arch) -> tuple[list[str], Tensor]:
        """``(node type names (N,), adjacency (N, N) float 0/1)`` of a valid architecture."""

    @abstractmethod
    def from_graph(self, types: Sequence[str], adj: Tensor) -> Arch:
        """The architecture of a discrete graph; raises :class:`InvalidArchitecture`."""

    # ------------------------------------------------------------------ strings
    @abstractmethod
    def parse(self, text: str) -> Arch:
        """The architecture written as ``text``; raises :class:`InvalidArchitecture`."""

    @abstractmethod
    def format(self, arch: Arch) -> str:
        """The string form of ``arch`` (``parse(format(a)) == a``)."""

    # ------------------------------------------------------------------ rules
    @abstractmethod
    def validate(self, arch: Arch) -> Arch:
        """``arch`` if it obeys the rules, else raise :class:`InvalidArchitecture`."""

    def is_valid(self, arch: Arch | None) -> bool:
        if arch is None:
            return False
        try:
            self.validate(arch)
        except InvalidArchitecture:
            return False
        return True

    @abstractmethod
    def canonical(self, arch: Arch) -> str:
        """A canonical form: equal for isomorphic (equivalent) architectures only."""

    def hash(self, arch: Arch) -> str:
        """A short digest of :meth:`canonical`."""
        return digest(self.canonical(arch))

    # ------------------------------------------------------------------ sampling
    @abstractmethod
    def random(self, rng: random.Random) -> Arch:
        """One architecture drawn uniformly from the space's raw encodings."""

    def sample(self, n: int, seed: int = 0) -> list[Arch]:
        rng = random.Random(seed)
        return [self.random(rng) for _ in range(n)]

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture (spaces small enough to list); default: not enumerable."""
        raise NotImplementedError(f"the {self.name} space is too large to enumerate")

    def properties(self, arch: Arch) -> dict[str, float]:
        """Exactly computable properties (parameter count, depth, ...)."""
        return {}

    # ------------------------------------------------------------------ PyG view
    def encode(self, arch: Arch) -> Any:
        """A ``torch_geometric.data.Data`` with ``x`` (one-hots), ``edge_index``, ``adj``."""
        from torch_geometric.data import Data

        types, adj = self.graph(self.validate(arch))
        x = torch.zeros(self.n_nodes, self.n_types)
        x[torch.arange(self.n_nodes), torch.tensor([self.node_types.index(t) for t in types])] = 1
        edge_index = adj.nonzero().T.contiguous()
        return Data(x=x, edge_index=edge_index, adj=adj.clone(), num_nodes=self.n_nodes)

    def decode(self, data: Any) -> Arch:
        """The architecture of a ``Data`` (one-hot rows, ``edge_index`` or ``adj``)."""
        x = data.x
        if x is None or x.ndim != 2 or tuple(x.shape) != (self.n_nodes, self.n_types):
            raise InvalidArchitecture(f"{self.name}: node features must be "
                                      f"({self.n_nodes}, {self.n_types}) one-hots")
        types = [self.node_types[int(i)] for i in x.argmax(dim=1)]
        adj = getattr(data, "adj", None)
        if adj is None:
            adj = torch.zeros(self.n_nodes, self.n_nodes)
            if data.edge_index is not None and data.edge_index.numel():
                adj[data.edge_index[0], data.edge_index[1]] = 1.0
        return self.validate(self.from_graph(types, adj))

    # ------------------------------------------------------------------ diffusion state
    def to_state(self, archs: Iterable[Arch]) -> Tensor:
        """``(B, D)`` clean diffusion states of valid architectures (one-hots and edges in
        ``{-1, +1}``)."""
        lay = self.layout()
        idx, adjs = [], []
        for a in archs:
            types, adj = self.graph(self.validate(a))
            idx.append([self.node_types.index(t) for t in types])
            adjs.append(adj)
        if not idx:
            return torch.zeros(0, lay.dim)
        nodes = torch.nn.functional.one_hot(torch.tensor(idx), self.n_types).float()
        return lay.pack(2 * nodes - 1, 2 * torch.stack(adjs).float() - 1)

    def discretise(self, state: Tensor, type_mask: Tensor | None = None
                   ) -> tuple[list[list[str]], Tensor]:
        """Node types (argmax, restricted to ``type_mask`` ``(T,)`` or ``(N, T)`` where given)
        and the 0/1 adjacency (threshold 0 on free entries, the fixed wiring elsewhere)."""
        lay = self.layout()
        nodes, adj = lay.unpack(state.detach().float().cpu())
        if type_mask is not None:
            nodes = nodes.masked_fill(~type_mask.to(torch.bool), float("-inf"))
        idx = nodes.argmax(dim=-1)
        types = [[self.node_types[int(i)] for i in row] for row in idx]
        binary = lay.fixed_adjacency.expand_as(adj).clone()
        free = lay.free_mask.expand_as(adj)
        binary[free] = (adj[free] > 0).float()
        return types, binary

    def from_state(self, state: Tensor, type_mask: Tensor | None = None) -> list[Arch | None]:
        """Discretise ``(B, D)`` states; ``None`` where a graph breaks the rules."""
        types, adj = self.discretise(state, type_mask)
        out: list[Arch | None] = []
        for ty, a in zip(types, adj):
            try:
                out.append(self.validate(self.from_graph(ty, a)))
            except InvalidArchitecture:
                out.append(None)
        return out
