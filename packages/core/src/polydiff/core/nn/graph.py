"""Graph networks for diffusion over small graphs: one flat state for node features and the
free adjacency entries (:class:`GraphLayout`), and a masked graph transformer
(:class:`GraphTransformer`) that serves as a score network (``output="state"``) or as a
time-conditioned graph regressor for predictor guidance (``output="graph"``).

Graphs of a fixed maximum size ``N`` are handled densely (``N`` of a neural architecture
cell is 5-20): node features ``(B, N, F)`` (e.g. node-type one-hots) and an adjacency
``(B, N, N)`` (``A[i, j]`` = edge ``i -> j``). The layout says which adjacency entries are
variables of the diffusion (``free_edges``: e.g. the strictly upper triangle of a DAG whose
wiring varies) and what the other entries are (``fixed_adjacency``: the fixed wiring of a
cell, zero elsewhere); :meth:`GraphLayout.pack` keeps only the variables, so the diffusion
state is a plain ``(B, D)`` tensor that every polydiff sampler takes, and structurally
impossible edges are never noised nor generated (graph-aware masking).

The transformer follows the graph-transformer recipe of Dwivedi & Bresson (2021), "A
Generalization of Transformer Networks to Graphs" (attention between nodes biased by edge
features, edge features updated from their end nodes), with learned node-position
embeddings (the node index carries meaning in a cell), adaLN-Zero conditioning on time and a
graph-level condition vector (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), and optionally attention masked to the graph's possible edges (the
structure-masked attention of the DiffusionNAG score network, An et al. 2024, "DiffusionNAG:
Predictor-guided Neural Architecture Generation with Diffusion Models", Sec. 3.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.nn.embeddings import TIME_EMBEDDINGS, TimestepMLP, batch_time
from polydiff.core.nn.hub import PretrainedMixin, register_model

__all__ = ["GraphLayout", "GraphTransformerConfig", "GraphTransformer", "dag_free_edges"]


def dag_free_edges(n_nodes: int, *, first: int = 0) -> tuple[tuple[int, int], ...]:
    """The strictly upper-triangular entries ``(i, j)``, ``first <= i < j < n_nodes``: every
    possible edge of a DAG in topological node order."""
    return tuple((i, j) for j in range(n_nodes) for i in range(first, j))


class GraphLayout:
    """Which parts of a dense graph ``(nodes (B, N, F), adj (B, N, N))`` form the flat state.

    The state is ``[nodes.flatten(), adj[free_edges]]`` of size ``N F + E``. Adjacency entries
    outside ``free_edges`` take the values of ``fixed_adjacency`` (default 0) on unpacking.

    Args:
        n_nodes: ``N``.
        node_channels: ``F``.
        free_edges: the ``E`` adjacency entries ``(i, j)`` that are variables (no duplicates).
        fixed_adjacency: ``(N, N)`` values of the other entries (its values at free entries
            are ignored).
    """

    def __init__(self, n_nodes: int, node_channels: int,
                 free_edges: Sequence[Sequence[int]] = (),
                 fixed_adjacency: Sequence[Sequence[float]] | Tensor | None = None):
        if n_nodes < 1 or node_channels < 0:
            raise ValueError("a graph layout needs n_nodes >= 1 and node_channels >= 0")
        edges = tuple((int(i), int(j)) for i, j in free_edges)
        if len(set(edges)) != len(edges):
            raise ValueError("free_edges holds duplicates")
        if any(not (0 <= i < n_nodes and 0 <= j < n_nodes) for i, j in edges):
            raise ValueError(f"free_edges must index nodes 0..{n_nodes - 1}")
        self.n_nodes, self.node_channels, self.free_edges = n_nodes, node_channels, edges
        fixed = torch.zeros(n_nodes, n_nodes) if fixed_adjacency is None else \
            torch.as_tensor(fixed_adjacency, dtype=torch.float32).clone()
        if fixed.shape != (n_nodes, n_nodes):
            raise ValueError(f"fixed_adjacency must be ({n_nodes}, {n_nodes}), got "
                             f"{tuple(fixed.shape)}")
        free = torch.zeros(n_nodes, n_nodes, dtype=torch.bool)
        if edges:
            idx = torch.tensor(edges)
            free[idx[:, 0], idx[:, 1]] = True
        fixed[free] = 0.0
        self.fixed_adjacency, self.free_mask = fixed, free
        self._rows = torch.tensor([i for i, _ in edges], dtype=torch.long)
        self._cols = torch.tensor([j for _, j in edges], dtype=torch.long)

    @property
    def node_dim(self) -> int:
        return self.n_nodes * self.node_channels

    @property
    def dim(self) -> int:
        """Size ``D`` of the flat state."""
        return self.node_dim + len(self.free_edges)

    def possible_edges(self) -> Tensor:
        """``(N, N)`` bool: entries that are free or non-zero in the fixed adjacency."""
        return self.free_mask | (self.fixed_adjacency != 0)

    def pack(self, nodes: Tensor, adj: Tensor | None = None) -> Tensor:
        """``(B, N, F)`` nodes and ``(B, N, N)`` adjacency -> ``(B, D)`` state."""
        b = nodes.shape[0]
        if nodes.shape[1:] != (self.n_nodes, self.node_channels):
            raise ValueError(f"nodes must be (B, {self.n_nodes}, {self.node_channels}), got "
                             f"{tuple(nodes.shape)}")
        parts = [nodes.reshape(b, -1)]
        if self.free_edges:
            if adj is None or adj.shape != (b, self.n_nodes, self.n_nodes):
                raise ValueError(f"adj must be (B, {self.n_nodes}, {self.n_nodes}) when the "
                                 "layout has free edges")
            parts.append(adj[:, self._rows.to(adj.device), self._cols.to(adj.device)]
                         .to(nodes.dtype))
        return torch.cat(parts, dim=1)

    def unpack(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, D)`` state -> ``(nodes (B, N, F), adj (B, N, N))`` with the fixed entries."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"a graph state must be (B, {self.dim}), got {tuple(z.shape)}")
        b = z.shape[0]
        nodes = z[:, :self.node_dim].reshape(b, self.n_nodes, self.node_channels)
        adj = self.fixed_adjacency.to(device=z.device, dtype=z.dtype).expand(b, -1, -1).clone()
        if self.free_edges:
            adj[:, self._rows.to(z.device), self._cols.to(z.device)] = z[:, self.node_dim:]
        return nodes, adj

    def edge_values(self, adj: Tensor) -> Tensor:
        """``(B, E)`` values of the free entries of ``(B, N, N)`` adjacencies."""
        return adj[:, self._rows.to(adj.device), self._cols.to(adj.device)]


@dataclass
class GraphTransformerConfig:
    """Configuration of :class:`GraphTransformer`.

    Attributes:
        n_nodes, node_channels, free_edges, fixed_adjacency: the :class:`GraphLayout`
            (``fixed_adjacency`` as nested tuples, ``None`` for all zeros).
        hidden_size, depth, num_heads, mlp_ratio: node width, blocks, heads, MLP expansion.
        edge_size: width of the edge features (attention biases, edge outputs).
        attention: ``"dense"`` (every node attends to every node, biased by edge features) or
            ``"graph"`` (attention masked to possible edges in either direction and self).
        output: ``"state"`` (a ``(B, D)`` tensor like the input: a score network) or
            ``"graph"`` (``(B, graph_outputs)`` from a mean/max readout: a regressor).
        graph_outputs: outputs of the ``"graph"`` head (``1`` gives ``(B,)``).
        cond_dim: width of an optional graph-level condition vector (``0``: none), e.g. a
            task embedding; it is embedded and added to the time embedding.
        time_embedding, time_embed_dim, time_scale: the time trunk
            (:class:`~polydiff.core.nn.embeddings.TimestepMLP`).
        dropout: attention/MLP dropout.
    """

    n_nodes: int = 8
    node_channels: int = 7
    free_edges: tuple[tuple[int, int], ...] = ()
    fixed_adjacency: tuple[tuple[float, ...], ...] | None = None
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    edge_size: int = 16
    attention: Literal["dense", "graph"] = "dense"
    output: Literal["state", "graph"] = "state"
    graph_outputs: int = 1
    cond_dim: int = 0
    time_embedding: Literal["sinusoidal", "fourier"] = "sinusoidal"
    time_embed_dim: int = 64
    time_scale: float = 1000.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.free_edges = tuple(tuple(int(v) for v in e) for e in self.free_edges)  # type: ignore
        if self.fixed_adjacency is not None:
            self.fixed_adjacency = tuple(tuple(float(v) for v in row)
                                         for row in self.fixed_adjacency)
        if self.attention not in ("dense", "graph"):
            raise ValueError(f"attention must be 'dense' or 'graph', got {self.attention!r}")
        if self.output not in ("state", "graph"):
            raise ValueError(f"output must be 'state' or 'graph', got {self.output!r}")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}")
        if min(self.hidden_size, self.depth, self.num_heads, self.edge_size,
               self.graph_outputs) < 1 or self.cond_dim < 0:
            raise ValueError("hidden_size, depth, num_heads, edge_size and graph_outputs must "
                             "be >= 1 and cond_dim >= 0")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")

    def layout(self) -> GraphLayout:
        return GraphLayout(self.n_nodes, self.node_channels, self.free_edges,
                           self.fixed_adjacency)


def _zero_linear(m: nn.Module) -> None:
    """Zero a linear layer's weight and bias (adaLN-Zero)."""
    assert isinstance(m, nn.Linear)
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class GraphAttention(nn.Module):
    """Multi-head attention over ``(B, N, d)`` nodes with an additive per-head bias from edge
    features ``(B, N, N, e)`` and an optional boolean mask ``(N, N)`` (True = may attend)."""

    def __init__(self, dim: int, edge_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Linear(edge_size, num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: Tensor, e: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.num_heads, d // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.bias(e).permute(0, 3, 1, 2)  # (B, H, N, N)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class GraphTransformerBlock(nn.Module):
    """adaLN-Zero graph-transformer block: edge-biased attention, an MLP, messages from the
    edges (``h_i <- h_i + W [mean_j e_ij, mean_j e_ji]``) and an edge update
    ``e_ij <- e_ij + MLP(e_ij, h_i, h_j)`` (Dwivedi & Bresson 2021)."""

    def __init__(self, dim: int, edge_size: int, num_heads: int, mlp_ratio: float,
                 dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = GraphAttention(dim, edge_size, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.edge_norm = nn.LayerNorm(edge_size, eps=1e-6)
        self.edge_src, self.edge_dst = nn.Linear(dim, edge_size), nn.Linear(dim, edge_size)
        self.edge_mlp = nn.Sequential(nn.SiLU(), nn.Linear(edge_size, edge_size))
        self.edge_to_node = nn.Linear(2 * edge_size, dim)

    def forward(self, h: Tensor, e: Tensor, c: Tensor, mask: Tensor | None) -> tuple[Tensor,
                                                                                     Tensor]:
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation(c).chunk(6, dim=-1)
        h = h + g1.unsqueeze(1) * self.attn(_modulate(self.norm1(h), sh1, sc1), e, mask)
        h = h + g2.unsqueeze(1) * self.mlp(_modulate(self.norm2(h), sh2, sc2))
        en = self.edge_norm(e)
        h = h + self.edge_to_node(torch.cat([en.mean(dim=2), en.mean(dim=1)], dim=-1))
        pair = self.edge_src(h).unsqueeze(2) + self.edge_dst(h).unsqueeze(1)
        e = e + self.edge_mlp(en + pair)
        return h, e


@register_model
class GraphTransformer(PretrainedMixin, nn.Module):
    """Masked graph transformer over a :class:`GraphLayout` state (module docstring).

    Called as ``model(x, t, *, cond=None)`` with ``x`` the flat ``(B, D)`` state (noisy node
    features and free adjacency entries), ``t`` per-sample times ``(B,)`` and ``cond`` an
    optional ``(B, cond_dim)`` graph-level condition. Returns ``(B, D)`` for
    ``output="state"`` (fixed adjacency entries are not outputs) or ``(B, graph_outputs)``
    (``(B,)`` when ``graph_outputs == 1``) for ``output="graph"``.
    """

    config_class = GraphTransformerConfig
    fixed_adjacency: Tensor  # buffers
    free_mask: Tensor
    attend: Tensor
    node_out: nn.Linear | None  # output="state" heads
    edge_out: nn.Sequential | None
    graph_out: nn.Sequential | None  # output="graph" head

    def __init__(self, config: GraphTransformerConfig):
        super().__init__()
        self.config = cfg = config
        self.layout = layout = cfg.layout()
        d, de, n = cfg.hidden_size, cfg.edge_size, cfg.n_nodes
        self.register_buffer("fixed_adjacency", layout.fixed_adjacency.clone(), persistent=False)
        self.register_buffer("free_mask", layout.free_mask.clone(), persistent=False)
        possible = layout.possible_edges()
        attend = possible | possible.T | torch.eye(n, dtype=torch.bool)
        self.register_buffer("attend", attend, persistent=False)
        self.node_in = nn.Linear(cfg.node_channels, d)
        self.pos = nn.Parameter(torch.zeros(1, n, d))
        # edge inputs: A_ij, A_ji, free_ij, free_ji, fixed-nonzero_ij, fixed-nonzero_ji
        self.edge_in = nn.Linear(6, de)
        self.time = TimestepMLP(cfg.time_embed_dim, d, kind=cfg.time_embedding,
                                time_scale=cfg.time_scale)
        self.cond = nn.Linear(cfg.cond_dim, d) if cfg.cond_dim else None
        self.blocks = nn.ModuleList([
            GraphTransformerBlock(d, de, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
            for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.head_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        if cfg.output == "state":
            self.node_out = nn.Linear(d, cfg.node_channels)
            self.edge_out = nn.Sequential(nn.LayerNorm(de + 2 * d, eps=1e-6),
                                          nn.Linear(de + 2 * d, d), nn.SiLU(), nn.Linear(d, 1))
            self.graph_out = None
        else:
            self.node_out = self.edge_out = None
            self.graph_out = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(),
                                           nn.Linear(d, cfg.graph_outputs))
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier linears with zero biases; adaLN-Zero modulations start at zero (DiT)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for blk in self.blocks:
            assert isinstance(blk, GraphTransformerBlock)
            _zero_linear(blk.modulation[-1])
        _zero_linear(self.head_mod[-1])

    def block_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def named_blocks(self):  # noqa: ANN201 - same surface as the other backbones
        for name in self.block_names():
            yield name, self.get_submodule(name)

    def forward(self, x: Tensor, t: Tensor | float, *, cond: Tensor | None = None) -> Tensor:
        cfg, layout = self.config, self.layout
        if x.ndim != 2 or x.shape[1] != layout.dim:
            raise ValueError(f"expected a graph state (B, {layout.dim}), got {tuple(x.shape)}")
        b = x.shape[0]
        nodes, adj = layout.unpack(x)
        fixed = (self.fixed_adjacency != 0).to(x.dtype).expand(b, -1, -1)
        free = self.free_mask.to(x.dtype).expand(b, -1, -1)
        e = self.edge_in(torch.stack([adj, adj.transpose(1, 2), free, free.transpose(1, 2),
                                      fixed, fixed.transpose(1, 2)], dim=-1))
        h = self.node_in(nodes) + self.pos
        c = self.time(batch_time(t, b, x.device))
        if self.cond is not None:
            if cond is None or cond.shape != (b, cfg.cond_dim):
                raise ValueError(f"cond must have shape ({b}, {cfg.cond_dim})")
            c = c + self.cond(cond.to(c.dtype))
        elif cond is not None:
            raise ValueError("this model was built with cond_dim=0: cond is not accepted")
        mask = self.attend if cfg.attention == "graph" else None
        for blk in self.blocks:
            h, e = blk(h, e, c, mask)
        shift, scale = self.head_mod(c).chunk(2, dim=-1)
        h = _modulate(self.norm(h), shift, scale)
        if self.graph_out is not None:
            pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)
            out = self.graph_out(pooled)
            return out[:, 0] if cfg.graph_outputs == 1 else out
        assert self.node_out is not None and self.edge_out is not None  # output="state"
        node_part = self.node_out(h)
        if not layout.free_edges:
            return node_part.reshape(b, -1)
        rows, cols = layout._rows.to(x.device), layout._cols.to(x.device)
        pair = torch.cat([e[:, rows, cols], h[:, rows], h[:, cols]], dim=-1)
        edge_part = self.edge_out(pair)[..., 0]
        return torch.cat([node_part.reshape(b, -1), edge_part], dim=1)
