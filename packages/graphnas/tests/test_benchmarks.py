"""The offline NAS-Bench-Graph tables, lookups through canonical forms, the safe unpickler,
the NAS-Bench-201 table loader, and query accounting."""

from __future__ import annotations

import io
import json
import pickle

import pytest

from polydiff.graphnas.benchmarks import (
    NBG_DATASETS,
    NASBenchGraph,
    Oracle,
    _TableUnpickler,
    load_nb201_table,
    parse_benchmark,
)
from polydiff.graphnas.spaces import NB201Space, NBGraphSpace
from polydiff.graphnas.spaces.nbgraph import GraphArch


def test_tables_load_and_match_the_package_reader():
    from nas_bench_graph import light_read

    cora = NASBenchGraph("cora")
    assert len(cora) == 26206
    ref = light_read("cora")  # the package's own (unrestricted) reader, as the reference
    rec = cora.records[100]
    assert rec.test == pytest.approx(float(ref[cora.keys[100]]["perf"]))
    assert rec.valid == pytest.approx(float(ref[cora.keys[100]]["valid_perf"]))
    assert len(NASBenchGraph("proteins")) == 2021


def test_any_encoding_finds_its_entry():
    cora, space = NASBenchGraph("cora"), NBGraphSpace()
    a = space.parse("0,1,2,0:gcn,skip,gat,sage")
    b = space.parse("0,0,1,2:sage,gcn,skip,gat")
    assert cora.lookup(a) is not None and cora.lookup(a) == cora.lookup(b)
    proteins = NASBenchGraph("proteins")
    assert proteins.lookup(space.parse("0,0,0,0:gat,gat,gat,gat")) is None  # gat: not run
    assert proteins.lookup(space.parse("0,0,0,0:gcn,gcn,gcn,gcn")) is not None
    assert cora.quantile(0.0) == min(r.test for r in cora)
    assert cora.quantile(1.0) == max(r.test for r in cora)


def test_unpickler_refuses_objects():
    evil = pickle.dumps({"x": print})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _TableUnpickler(io.BytesIO(evil)).load()


def test_parse_benchmark_errors():
    assert parse_benchmark("nas-bench-graph:cora") == ("nas-bench-graph", "cora")
    with pytest.raises(ValueError, match="unknown benchmark 'nas-bench-201:cifar10'"):
        parse_benchmark("nas-bench-201:cifar10")
    with pytest.raises(ValueError, match="unknown NAS-Bench-Graph dataset 'imagenet'"):
        parse_benchmark("nas-bench-graph:imagenet")
    with pytest.raises(ValueError, match="unknown NAS-Bench-Graph dataset"):
        NASBenchGraph("mnist")
    assert len(NBG_DATASETS) == 9


def test_oracle_counts_queries_once_per_architecture():
    cora = NASBenchGraph("cora")
    oracle = Oracle(cora)
    a = cora.records[0].arch
    assert oracle.query(a) == cora.records[0] and oracle.queries == 1
    assert oracle.seen(a) and not oracle.seen(cora.records[1].arch)
    assert oracle.query(GraphArch((0, 0, 0, 0), ("gcn",) * 4)) is not None


def test_nb201_table_loader(tmp_path):
    """The loader reads a flat export (CSV or JSON) and merges isomorphic cells."""
    s = NB201Space()
    b = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"
    b_iso = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|" \
            "nor_conv_1x1~2|"
    (tmp_path / "t.csv").write_text(f"arch,test_acc\n{b},90.0\n{b_iso},92.0\n")
    table = load_nb201_table(tmp_path / "t.csv")
    assert table == {s.canonical(s.parse(b)): {"test_acc": 91.0}}
    (tmp_path / "t.json").write_text(json.dumps({b: {"valid_acc": 80}}))
    assert load_nb201_table(tmp_path / "t.json")[s.canonical(s.parse(b))] == {"valid_acc": 80}
    (tmp_path / "bad.csv").write_text("arch,test_acc\n|conv~0|+|x~0|y~1|+|a~0|b~1|c~2|,1\n")
    with pytest.raises(ValueError, match="unknown operation"):
        load_nb201_table(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no such"):
        load_nb201_table(tmp_path / "missing.csv")
