"""Search spaces: round trips (strings, PyG Data, diffusion states) over every NAS-Bench-201
cell, validity rules, canonical hashing against brute force and against the NAS-Bench-Graph
package's own hashing, exact properties against known values."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest
import torch

from polydiff.graphnas.spaces import (
    MBV3Arch,
    MobileNetV3Space,
    NB201Cell,
    NB201Space,
    NBGraphSpace,
    get_space,
)
from polydiff.graphnas.spaces.base import InvalidArchitecture
from polydiff.graphnas.spaces.nbgraph import GraphArch

NB201 = NB201Space()
NBG = NBGraphSpace()
MBV3 = MobileNetV3Space()
ALL_CELLS = list(NB201.enumerate())
_HASHES: dict[NB201Cell, str] = {}


def _hashes() -> dict[NB201Cell, str]:
    if not _HASHES:
        _HASHES.update({c: NB201.hash(c) for c in ALL_CELLS})
    return _HASHES


# --------------------------------------------------------------------------- NAS-Bench-201
def test_all_cells_round_trip_through_strings_states_and_pyg():
    assert len(ALL_CELLS) == 5**6 == len(set(ALL_CELLS))
    for cell in ALL_CELLS:
        assert NB201.parse(NB201.format(cell)) == cell
    states = NB201.to_state(ALL_CELLS)
    assert states.shape == (15625, 8 * 7)
    assert set(states.unique().tolist()) == {-1.0, 1.0}
    assert NB201.from_state(states) == ALL_CELLS
    for cell in ALL_CELLS:
        data = NB201.encode(cell)
        assert NB201.decode(data) == cell
    # decode also reads edge_index alone
    data = NB201.encode(ALL_CELLS[123])
    del data.adj
    assert NB201.decode(data) == ALL_CELLS[123]


def test_nb201_string_format_matches_the_benchmark():
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" \
        "skip_connect~2|"
    cell = NB201.parse(s)
    assert cell.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect",
                        "nor_conv_3x3", "skip_connect")
    assert NB201.format(cell) == s


@pytest.mark.parametrize("text,match", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "is not"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be written 'op~0'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "needs 2 input edge"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "between '|'"),
])
def test_nb201_malformed_strings_fail_with_one_line(text, match):
    with pytest.raises(InvalidArchitecture, match=match) as err:
        NB201.parse(text)
    assert "\n" not in str(err.value)


def _nx_cell(cell: NB201Cell) -> nx.DiGraph:
    """The pruned operation-on-node graph of a cell, built independently of the hashing."""
    types, adj = NB201.graph(cell)
    g = nx.DiGraph()
    for v, t in enumerate(types):
        if t != "none":
            g.add_node(v, t=t)
    for i, j in adj.nonzero().tolist():
        if types[i] != "none" and types[j] != "none":
            g.add_edge(i, j)
    if 7 not in nx.descendants(g, 0):
        return nx.DiGraph()
    keep = (nx.descendants(g, 0) | {0}) & (nx.ancestors(g, 7) | {7})
    return g.subgraph(keep).copy()


def test_nb201_hash_classes_are_isomorphism_classes():
    """Equal hashes iff the pruned graphs are isomorphic (networkx VF2, node labels)."""
    rng = random.Random(0)
    by_hash: dict[str, list[NB201Cell]] = {}
    for c, h in _hashes().items():
        by_hash.setdefault(h, []).append(c)
    assert len(by_hash) == 8765  # isomorphism classes of the 15,625 cells
    match = nx.algorithms.isomorphism.categorical_node_match("t", None)
    multi = [v for v in by_hash.values() if len(v) > 1]
    for group in rng.sample(multi, 60):  # members of one class are isomorphic
        a, b = rng.sample(group, 2)
        assert nx.is_isomorphic(_nx_cell(a), _nx_cell(b), node_match=match)
    keys = list(by_hash)
    tested = 0
    for _ in range(4000):  # members of different classes with equal op counts are not
        k1, k2 = rng.sample(keys, 2)
        a, b = by_hash[k1][0], by_hash[k2][0]
        ga, gb = _nx_cell(a), _nx_cell(b)
        if ga.number_of_nodes() != gb.number_of_nodes() or \
                ga.number_of_edges() != gb.number_of_edges():
            continue
        assert not nx.is_isomorphic(ga, gb, node_match=match)
        tested += 1
    assert tested > 50


def test_nb201_hash_invariants():
    """Isomorphic cells have equal depth; cells whose output is unreachable all collide."""
    by_hash: dict[str, set[float]] = {}
    for c, h in _hashes().items():
        by_hash.setdefault(h, set()).add(NB201.properties(c)["depth"])
    assert all(len(v) == 1 for v in by_hash.values())
    dead = NB201Cell(("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "none", "none"))
    assert NB201.canonical(dead) == NB201.canonical(NB201Cell(("none",) * 6)) == "nb201:zero"


def test_nb201_exact_parameter_counts():
    """The network's parameter range is NAS-Bench-201's published 0.073 M - 1.531 M; each
    3x3 convolution adds 5 cells x sum_C (9 C^2 + 2 C) over C = 16, 32, 64."""
    p = [NB201.properties(c)["params"] for c in ALL_CELLS]
    assert min(p) == 73306 and max(p) == 1531546
    base = NB201.properties(NB201Cell(("none",) * 6))["params"]
    one = NB201.properties(NB201Cell(("nor_conv_3x3",) + ("none",) * 5))["params"]
    assert one - base == 5 * sum(9 * c * c + 2 * c for c in (16, 32, 64))
    deep = NB201Cell(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "avg_pool_3x3"))
    assert NB201.properties(deep)["depth"] == 3


def test_nb201_validity_of_discretised_graphs():
    types = ["input", *ALL_CELLS[5].ops, "output"]
    adj = NB201.graph(ALL_CELLS[5])[1]
    assert NB201.from_graph(types, adj) == ALL_CELLS[5]
    with pytest.raises(InvalidArchitecture, match="node 0 must be 'input'"):
        NB201.from_graph(["output"] + types[1:], adj)
    with pytest.raises(InvalidArchitecture, match="fixed"):
        NB201.from_graph(types, torch.zeros(8, 8))
    # an operation type on the output node makes a sample invalid -> None
    state = NB201.to_state([ALL_CELLS[5]])
    nodes, _ = NB201.layout().unpack(state)
    nodes[0, 7] = -1.0
    nodes[0, 7, NB201.node_types.index("nor_conv_3x3")] = 1.0
    assert NB201.from_state(NB201.layout().pack(nodes)) == [None]


# --------------------------------------------------------------------------- NAS-Bench-Graph
def _raw_encodings():
    from nas_bench_graph.architecture import gnn_list

    for links in itertools.product(*[range(i + 1) for i in range(4)]):
        for ops in itertools.product(gnn_list, repeat=4):
            if not all(o == "skip" for o in ops):
                yield list(links), list(ops)


def _partition_check(encodings):
    from nas_bench_graph.architecture import Arch

    mine: dict[str, set[int]] = {}
    theirs: dict[int, set[str]] = {}
    for links, ops in encodings:
        h = Arch(links[:], ops[:]).valid_hash()
        k = NBG.canonical(GraphArch(tuple(links), tuple(ops)))
        mine.setdefault(k, set()).add(h)
        theirs.setdefault(h, set()).add(k)
    assert all(len(v) == 1 for v in mine.values())
    assert all(len(v) == 1 for v in theirs.values())
    return len(mine)


def test_nbgraph_canonical_form_matches_the_benchmark_hash_on_a_sample():
    """The reference: nas-bench-graph's own Arch.valid_hash (its table keys)."""
    rng = random.Random(0)
    sample = [e for e in _raw_encodings() if rng.random() < 0.08]
    _partition_check(sample)


@pytest.mark.slow
def test_nbgraph_canonical_form_matches_the_benchmark_hash_everywhere():
    assert _partition_check(_raw_encodings()) == 26206


def test_nbgraph_round_trips_and_rules():
    archs = NBG.sample(300, seed=1)
    assert NBG.from_state(NBG.to_state(archs)) == archs
    for a in archs[:50]:
        assert NBG.parse(NBG.format(a)) == a
        assert NBG.decode(NBG.encode(a)) == a
    a = NBG.parse("0,1,2,1:gcn,gin,fc,cheb")
    assert a == GraphArch((0, 1, 2, 1), ("gcn", "gin", "fc", "cheb"))
    # wiring rules of discretised graphs: exactly one earlier input per computing node
    types, adj = NBG.graph(a)
    adj2 = adj.clone()
    adj2[0, 4] = 1.0
    with pytest.raises(InvalidArchitecture, match="exactly one"):
        NBG.from_graph(types, adj2)
    adj3 = adj.clone()
    adj3[3, 1] = 1.0
    with pytest.raises(InvalidArchitecture, match="earlier to later"):
        NBG.from_graph(types, adj3)


@pytest.mark.parametrize("text,match", [
    ("0,1,2,1 gcn,gin,fc,cheb", "is not"),
    ("0,1,x,1:gcn,gin,fc,cheb", "4 integers"),
    ("0,1,2:gcn,gin,fc,cheb", "need 4 links"),
    ("0,1,5,1:gcn,gin,fc,cheb", "can read nodes 0..2"),
    ("0,1,2,1:gcn,transformer,fc,cheb", "unknown operation 'transformer'"),
    ("0,1,2,1:skip,skip,skip,skip", "must not be 'skip'"),
])
def test_nbgraph_malformed_strings_fail_with_one_line(text, match):
    with pytest.raises(InvalidArchitecture, match=match) as err:
        NBG.parse(text)
    assert "\n" not in str(err.value)


def test_nbgraph_skip_equivalences():
    """A skip node that another node reads is an identity; a skip leaf adds its input to the
    output; sibling order does not matter."""
    a = NBG.parse("0,1,2,0:gcn,skip,gat,sage")  # outputs gat(gcn(x)), sage(x)
    b = NBG.parse("0,0,1,2:sage,gcn,skip,gat")  # the same outputs, other wiring and order
    assert NBG.canonical(a) == NBG.canonical(b)
    c = NBG.parse("0,1,1,0:gcn,skip,gat,sage")  # adds gcn(x) itself to the output
    assert NBG.canonical(a) != NBG.canonical(c)
    assert NBG.canonical(NBG.parse("0,0,0,0:gcn,gat,sage,gin")) == \
        NBG.canonical(NBG.parse("0,0,0,0:gin,sage,gcn,gat"))
    assert NBG.properties(a) == {"depth": 2.0, "n_ops": 3.0}


# --------------------------------------------------------------------------- MobileNetV3
def test_mbv3_round_trips_rules_and_params():
    archs = MBV3.sample(200, seed=2)
    assert MBV3.from_state(MBV3.to_state(archs)) == archs
    for a in archs[:20]:
        assert MBV3.parse(MBV3.format(a)) == a
        assert MBV3.decode(MBV3.encode(a)) == a
    good = ("k3e3", "k3e3", "none", "none")
    gap = MBV3Arch(("k3e3", "none", "k3e3", "none") + good * 4)
    with pytest.raises(InvalidArchitecture, match="only end a stage"):
        MBV3.validate(gap)
    short = MBV3Arch(("k3e3", "none", "none", "none") + good * 4)
    with pytest.raises(InvalidArchitecture, match="at least 2"):
        MBV3.validate(short)
    with pytest.raises(InvalidArchitecture, match="unknown operation 'k9e3'"):
        MBV3.parse("|".join(["k9e3,k3e3,none,none"] * 5))
    with pytest.raises(InvalidArchitecture, match="5 stages"):
        MBV3.parse("k3e3,k3e3,none,none")
    small = MBV3Arch(good * 5)
    big = MBV3Arch(("k7e6",) * 20)
    ps, pb = MBV3.properties(small), MBV3.properties(big)
    assert ps["depth"] == 10 and pb["depth"] == 20 and pb["params"] > 4 * ps["params"]
    # one layer by hand: 16 -> 24 channels, k3, e3 (mid 48): expand + BN, depthwise + BN,
    # project + BN, no squeeze-excitation in stage 1
    from polydiff.graphnas.spaces.mobilenet import mbconv_params

    assert mbconv_params(16, 24, 3, 3, False) == 16 * 48 + 96 + 9 * 48 + 96 + 48 * 24 + 48


def test_get_space_names():
    assert isinstance(get_space("nbgraph"), NBGraphSpace)
    with pytest.raises(ValueError, match="unknown search space 'nb101'"):
        get_space("nb101")
