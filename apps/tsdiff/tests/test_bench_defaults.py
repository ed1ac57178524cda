"""The benchmark (tools/bench/tsdiff.py) takes every TSDiff and DeepAR setting from the
defaults table, as the estimator and the CLI do."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("tsdata")

BENCH = Path(__file__).resolve().parents[3] / "tools" / "bench" / "tsdiff.py"


def test_bench_reads_the_defaults_table():
    from polydiff.apps.tsdiff import workflow as wf
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    spec = importlib.util.spec_from_file_location("bench_tsdiff", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in ("pedestrian", "aus_livestock"):
        ds, d, cfg = bench.setup(name)
        assert d == defaults_for(ds.freq) and cfg == d.config()
        assert cfg == wf.make_config(None, ds.freq)  # what `tsdiff train` builds
    assert set(bench.DATASETS) == {"pedestrian", "vic_elec", "warsaw_air", "aus_livestock"}
