"""The graph layout and the masked graph transformer: packing round trips, masking that
provably cuts information flow, conditioning, save/load, and a regression it must learn."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.nn import from_pretrained
from polydiff.core.nn.graph import (
    GraphLayout,
    GraphTransformer,
    GraphTransformerConfig,
    dag_free_edges,
)


def _chain(n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[torch.arange(n - 1), torch.arange(1, n)] = 1.0
    return a


def test_dag_free_edges_is_the_strict_upper_triangle():
    edges = dag_free_edges(4)
    assert len(edges) == 6 and all(i < j for i, j in edges)
    assert set(edges) == {(i, j) for i in range(4) for j in range(4) if i < j}
    assert all(i >= 1 for i, _ in dag_free_edges(4, first=1))


def test_layout_round_trip_keeps_fixed_entries():
    fixed = _chain(5) * 3.0
    lay = GraphLayout(5, 3, [(0, 2), (1, 4)], fixed)
    assert lay.dim == 5 * 3 + 2
    g = torch.Generator().manual_seed(0)
    nodes = torch.randn(4, 5, 3, generator=g)
    adj = torch.randn(4, 5, 5, generator=g)
    z = lay.pack(nodes, adj)
    assert z.shape == (4, lay.dim)
    n2, a2 = lay.unpack(z)
    assert torch.equal(n2, nodes)
    # free entries come back, every other entry is the fixed wiring
    assert torch.equal(a2[:, 0, 2], adj[:, 0, 2]) and torch.equal(a2[:, 1, 4], adj[:, 1, 4])
    free = lay.free_mask
    assert torch.equal(a2[:, ~free], fixed.expand(4, -1, -1)[:, ~free])
    assert torch.equal(lay.pack(n2, a2), z)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="duplicates"):
        GraphLayout(3, 2, [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="index nodes"):
        GraphLayout(3, 2, [(0, 3)])
    lay = GraphLayout(3, 2, [(0, 1)])
    with pytest.raises(ValueError, match="adj must be"):
        lay.pack(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="graph state"):
        lay.unpack(torch.zeros(1, 99))


def _tiny(**kw) -> GraphTransformer:
    torch.manual_seed(0)
    base = dict(n_nodes=5, node_channels=4, free_edges=dag_free_edges(5), hidden_size=16,
                depth=2, num_heads=2, edge_size=8, time_embed_dim=16)
    return GraphTransformer(GraphTransformerConfig(**{**base, **kw}))


def test_state_and_graph_outputs_have_the_right_shapes():
    net = _tiny()
    x = torch.randn(3, net.layout.dim)
    assert net(x, torch.rand(3)).shape == (3, net.layout.dim)
    reg = _tiny(output="graph")
    assert reg(x, torch.rand(3)).shape == (3,)
    multi = _tiny(output="graph", graph_outputs=4)
    assert multi(x, 0.5).shape == (3, 4)
    fixed_only = _tiny(free_edges=(), fixed_adjacency=tuple(map(tuple, _chain(5).tolist())))
    assert fixed_only(torch.randn(2, 20), torch.rand(2)).shape == (2, 20)


def test_graph_attention_mask_cuts_information_flow():
    """With attention masked to a chain and one block, node 4's output cannot depend on node 0
    (not adjacent) but does depend on node 3; dense attention sees everything."""
    cfg = dict(free_edges=(), fixed_adjacency=tuple(map(tuple, _chain(5).tolist())), depth=1)
    masked, dense = _tiny(attention="graph", **cfg), _tiny(attention="dense", **cfg)
    for blk in list(masked.blocks) + list(dense.blocks):  # leave adaLN-Zero's zero gates
        torch.nn.init.normal_(blk.modulation[-1].weight, std=0.5)
    for net in (masked, dense):
        torch.nn.init.normal_(net.head_mod[-1].weight, std=0.5)
    x = torch.randn(1, 20)
    t = torch.tensor([0.3])

    def node4_after(change: int, net: GraphTransformer) -> torch.Tensor:
        y = x.clone()
        y[0, change * 4:(change + 1) * 4] += 1.0
        return net(y, t).reshape(1, 5, 4)[0, 4]

    base_m = masked(x, t).reshape(1, 5, 4)[0, 4]
    assert torch.allclose(node4_after(0, masked), base_m, atol=1e-6)
    assert not torch.allclose(node4_after(3, masked), base_m, atol=1e-4)
    base_d = dense(x, t).reshape(1, 5, 4)[0, 4]
    assert not torch.allclose(node4_after(0, dense), base_d, atol=1e-4)


def test_condition_is_required_and_used():
    net = _tiny(cond_dim=3, output="graph")
    for blk in net.blocks:
        torch.nn.init.normal_(blk.modulation[-1].weight, std=0.5)
    x, t = torch.randn(2, net.layout.dim), torch.rand(2)
    with pytest.raises(ValueError, match="cond must have shape"):
        net(x, t)
    a = net(x, t, cond=torch.zeros(2, 3))
    b = net(x, t, cond=torch.ones(2, 3))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="cond_dim=0"):
        _tiny()(x, t, cond=torch.zeros(2, 3))


def test_save_and_load_pretrained(tmp_path):
    net = _tiny(cond_dim=2, fixed_adjacency=tuple(map(tuple, (_chain(5) * 0.5).tolist())))
    net.save_pretrained(tmp_path / "g")
    back = from_pretrained(tmp_path / "g")
    assert isinstance(back, GraphTransformer) and back.config == net.config
    x, t, c = torch.randn(2, net.layout.dim), torch.rand(2), torch.randn(2, 2)
    assert torch.allclose(back(x, t, cond=c), net.eval()(x, t, cond=c))


def test_config_validation():
    with pytest.raises(ValueError, match="attention"):
        GraphTransformerConfig(attention="sparse")
    with pytest.raises(ValueError, match="divisible"):
        GraphTransformerConfig(hidden_size=10, num_heads=4)


def test_regressor_learns_the_number_of_edges():
    """A graph property the readout must compute from the free adjacency entries: the
    trained regressor beats the constant predictor by a wide margin."""
    g = torch.Generator().manual_seed(1)
    net = _tiny(output="graph", depth=2)
    lay = net.layout

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        adj = (torch.rand(n, 5, 5, generator=g) < 0.5).float()
        nodes = torch.nn.functional.one_hot(torch.randint(0, 4, (n, 5), generator=g), 4)
        x = lay.pack(2 * nodes.float() - 1, 2 * adj - 1)
        return x, lay.edge_values(adj).sum(1)

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        x, y = batch(64)
        loss = (net(x, torch.zeros(64)) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(512)
    with torch.no_grad():
        mse = (net(x, torch.zeros(512)) - y).square().mean()
    assert mse < 0.1 * y.var()
