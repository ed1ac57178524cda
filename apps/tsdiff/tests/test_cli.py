"""End-to-end tests of every ``tsdiff`` verb on a tiny model trained once per module."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polydiff.apps.tsdiff.main import main

H = 12


def sine_frame(n_items: int = 3, length: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_items):
        t = np.arange(length)
        y = 10 + 3 * np.sin(2 * np.pi * t / 24 + k) + 0.3 * rng.normal(size=length)
        rows.append(pd.DataFrame({"item_id": f"s{k}", "target": y,
                                  "timestamp": pd.date_range("2021-01-01", periods=length,
                                                             freq="h")}))
    df = pd.concat(rows, ignore_index=True)
    df.loc[150:153, "target"] = np.nan  # NaNs inside a context are handled
    return df


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    df = sine_frame()
    df.to_csv(d / "tiny.csv", index=False)
    df.to_parquet(d / "tiny.parquet", index=False)
    return d


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "--data", str(data / "tiny.csv"), "--preset", "tiny", "--steps", "20",
                 "--batch-size", "16", "--prediction-length", str(H), "--context-length", "36",
                 "--holdout", "1", "-o", str(out), "--json"])
    assert code == 0
    return out


def test_train_writes_a_run(run_dir):
    meta = json.loads((run_dir / "tsdiff.json").read_text())
    assert meta["freq"] == "h" and meta["prediction_length"] == H and meta["holdout"] == 1
    assert meta["items"] == ["s0", "s1", "s2"]
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "train.toml").is_file() and (run_dir / "loss.png").is_file()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_forecast_round_trip(run_dir, data, tmp_path, capsys, fmt):
    src = data / f"tiny.{'parquet' if fmt == 'csv' else 'csv'}"
    code, out, _ = run(["forecast", "--model", run_dir, "--data", src, "-o", tmp_path / "fc",
                        "--num-samples", 8, "--sampler", "ddim", "--steps", 4, "--format", fmt,
                        "--plots", 2, "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert len(summary["figures"]) == 2 and all(Path(f).is_file() for f in summary["figures"])
    table = tmp_path / "fc" / f"forecast.{fmt}"
    df = pd.read_csv(table) if fmt == "csv" else pd.read_parquet(table)
    assert list(df.columns) == ["item_id", "timestamp", *[f"q{q / 10:g}" for q in range(1, 10)],
                                "mean"]
    assert len(df) == 3 * H and np.isfinite(df.iloc[:, 2:].to_numpy()).all()
    first = df[df["item_id"] == "s0"]
    assert pd.Timestamp(first["timestamp"].iloc[0]) == pd.Timestamp("2021-01-01") + \
        pd.Timedelta(hours=200)
    q = df[[f"q{q / 10:g}" for q in range(1, 10)]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()  # quantiles are ordered
    # the forecast table is a valid refine base (round trip through the CLI)
    code, out, _ = run(["refine", "--model", run_dir, "--data", src, "--base", table,
                        "-o", tmp_path / "rf", "--iterations", 2, "--plots", 0, "--json"], capsys)
    assert code == 0 and json.loads(out)["series"] == 3


@pytest.mark.parametrize("base", ["seasonal_naive", "linear"])
def test_refine_baselines(run_dir, data, tmp_path, capsys, base):
    code, out, _ = run(["refine", "--model", run_dir, "--data", data / "tiny.csv", "--base", base,
                        "-o", tmp_path, "--iterations", 3, "--num-samples", 8, "--plots", 1,
                        "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert 0 < res["change"] < 1  # refinement moves the base forecast, but not far
    df = pd.read_csv(tmp_path / "refined.csv")
    assert len(df) == 3 * H and np.isfinite(df["mean"]).all()


def test_synthesize_with_lps(run_dir, data, tmp_path, capsys):
    out_file = tmp_path / "syn.csv"
    code, out, _ = run(["synthesize", "--model", run_dir, "-n", 6, "-o", out_file,
                        "--data", data / "tiny.csv", "--sampler", "ddim", "--steps", 4,
                        "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["windows"] == 6 and np.isfinite(res["lps_synthetic"])
    df = pd.read_csv(out_file)
    assert df["item_id"].nunique() == 6 and len(df) == 6 * (36 + H)
    # synthetic windows are a valid dataset for the app itself
    from polydiff.timeseries.data import load_table

    assert len(load_table(out_file)) == 6


def test_evaluate_table_and_json(run_dir, data, capsys):
    code, out, _ = run(["evaluate", "--model", run_dir, "--data", data / "tiny.csv",
                        "--num-samples", 8, "--sampler", "ddim", "--steps", 4, "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["windows"] == 3  # the model's holdout: one window per series
    assert set(res["results"]) == {"tsdiff", "seasonal_naive", "seasonal_naive_prob", "linear",
                                   "refined_seasonal_naive"}
    for r in res["results"].values():
        assert np.isfinite([r["crps"], r["mase"], r["coverage80"], r["crps_ratio"]]).all()
    # the reference row is gluonts' SeasonalNaivePredictor (a point forecast: no interval)
    assert res["results"]["seasonal_naive"]["crps_ratio"] == 1.0
    assert res["results"]["seasonal_naive"]["coverage80"] == 0.0
    assert "gluonts" in res["reference"]
    code, out, _ = run(["evaluate", "--model", run_dir, "--data", data / "tiny.csv",
                        "--num-samples", 4, "--steps", 2, "--sampler", "ddim", "--no-refine"],
                       capsys)
    assert code == 0 and "seasonal_naive" in out and "coverage80" in out


# ----------------------------------------------------------------------------- bad input
def write(tmp_path, name, df):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def bad_tables(tmp_path):
    df = sine_frame(1, 100)
    non_numeric = df.astype({"target": object})
    non_numeric.loc[10, "target"] = "abc"
    irregular = df.drop(index=[5]).copy()
    irregular.loc[50, "timestamp"] = irregular.loc[50, "timestamp"] + pd.Timedelta(minutes=7)
    dup = pd.concat([df, df.iloc[[20]]], ignore_index=True)
    all_nan = df.assign(target=np.nan)
    return {
        "non-numeric": (write(tmp_path, "nn.csv", non_numeric), "non-numeric"),
        "irregular": (write(tmp_path, "irr.csv", irregular), "grid"),
        "duplicate": (write(tmp_path, "dup.csv", dup), "times"),
        "all-nan": (write(tmp_path, "nan.csv", all_nan), "no observed"),
        "short": (write(tmp_path, "short.csv", df.iloc[:20]), "needs at least"),
        "missing": (tmp_path / "nope.csv", "no such file"),
    }


@pytest.mark.parametrize("case", ["non-numeric", "irregular", "duplicate", "all-nan", "short",
                                  "missing"])
def test_bad_data_is_one_line_exit_2(tmp_path, capsys, case):
    path, words = bad_tables(tmp_path)[case]
    out = tmp_path / "out"
    code, _, err = run(["train", "--data", path, "--preset", "tiny", "--steps", 1,
                        "--prediction-length", H, "-o", out], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsdiff: error:") and words in lines[0], err
    assert not out.exists()  # nothing half-written


def test_bad_input_to_other_verbs(run_dir, data, tmp_path, capsys):
    short = write(tmp_path, "short.csv", sine_frame(2, 30))
    cases = [
        (["forecast", "--model", run_dir, "--data", short, "-o", tmp_path / "a"], "needs at least"),
        (["forecast", "--model", tmp_path / "none", "--data", data / "tiny.csv", "-o",
          tmp_path / "b"], "no such model"),
        (["forecast", "--model", run_dir, "--data", data / "tiny.csv", "-o", tmp_path / "c",
          "--num-samples", 0], "--num-samples"),
        (["train", "--data", data / "tiny.csv", "--freq", "bogus", "-o", tmp_path / "d"],
         "frequency"),
        (["refine", "--model", run_dir, "--data", data / "tiny.csv", "--base", short, "-o",
          tmp_path / "e"], "must start at"),
        (["train", "--data", "not_a_dataset", "-o", tmp_path / "f"], "unknown dataset"),
    ]
    for argv, words in cases:
        code, _, err = run(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], (argv, err)
    for d in "abcdef":
        assert not (tmp_path / d).exists()


def test_corrupt_config_and_unknown_option(data, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("steps = [oops")
    code, _, err = run(["train", "--data", data / "tiny.csv", "--config", cfg, "-o",
                        tmp_path / "o"], capsys)
    assert code == 2 and "not valid TOML" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["train", "--data", data / "tiny.csv", "--set", "stepz=3", "-o",
                        tmp_path / "o"], capsys)
    assert code == 2 and "did you mean 'steps'" in err
    code, _, err = run(["forecast", "--bogus"], capsys)
    assert code == 2 and "unrecognized arguments" in err or "required" in err
    assert not (tmp_path / "o").exists()


def test_help_text():
    import argparse

    from polydiff.apps.tsdiff.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["evaluate"].format_help()
    assert "80% interval" in text and "%%" not in text
    assert "forecast_NN_<item>.png" in sub.choices["forecast"].format_help()
    for verb in ("train", "forecast", "refine", "evaluate"):
        assert "--id-col" in sub.choices[verb].format_help()


def test_help_is_fast():
    # fast = nothing heavy imported by --help (a structural check: a wall-clock limit fails
    # on a busy machine for reasons that are not the CLI's)
    code = ("import sys; from polydiff.apps.tsdiff.main import main; sys.argv = ['tsdiff']\n"
            "try:\n    main(['{verb}', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('heavy:', 'torch' in sys.modules, 'pandas' in sys.modules)")
    for verb in ("train", "forecast", "refine", "synthesize", "evaluate", "demo"):
        res = subprocess.run([sys.executable, "-c", code.format(verb=verb)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "usage: tsdiff" in res.stdout, res.stderr
        assert "heavy: False False" in res.stdout, (verb, res.stdout[-200:])
    res = subprocess.run([sys.executable, "-c", "import sys; import polydiff.apps.tsdiff.main;"
                          " print('torch' in sys.modules, 'pandas' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- columns, defaults
def test_nixtla_layout_and_named_columns(run_dir, tmp_path, capsys):
    df = sine_frame()
    nixtla = df.rename(columns={"item_id": "unique_id", "timestamp": "ds", "target": "y"})
    nixtla.to_csv(tmp_path / "nixtla.csv", index=False)
    custom = df.rename(columns={"item_id": "sensor", "timestamp": "when", "target": "count"})
    custom.to_csv(tmp_path / "custom.csv", index=False)
    base = ["forecast", "--model", run_dir, "--num-samples", 4, "--steps", 2, "--plots", 0,
            "--json"]
    code, out, _ = run([*base, "--data", tmp_path / "nixtla.csv", "-o", tmp_path / "a"],
                       capsys)
    assert code == 0 and json.loads(out)["series"] == 3
    code, _, err = run([*base, "--data", tmp_path / "custom.csv", "-o", tmp_path / "b"], capsys)
    assert code == 2 and "--id-col" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run([*base, "--data", tmp_path / "custom.csv", "-o", tmp_path / "b",
                        "--id-col", "sensor", "--time-col", "when", "--target-col", "count"],
                       capsys)
    assert code == 0 and json.loads(out)["series"] == 3
    a = pd.read_csv(tmp_path / "a" / "forecast.csv")
    b = pd.read_csv(tmp_path / "b" / "forecast.csv")
    pd.testing.assert_frame_equal(a, b)  # same data, same seeded forecast


def test_train_and_forecast_read_the_defaults_table(data, tmp_path, capsys, monkeypatch):
    from polydiff.apps.tsdiff import workflow as wf
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    d = defaults_for("h")
    seen = {}
    real_train = wf.train_model

    def spy(cfg, series, run_dir, *, steps, batch_size, lr, **kw):
        seen.update(cfg=cfg, steps=steps, batch_size=batch_size, lr=lr)
        return real_train(cfg, series, run_dir, steps=2, batch_size=4, lr=lr, **kw)

    monkeypatch.setattr(wf, "train_model", spy)
    df = sine_frame(2, 400)
    df.to_csv(tmp_path / "long.csv", index=False)
    code, out, _ = run(["train", "--data", tmp_path / "long.csv", "-o", tmp_path / "run",
                        "--json"], capsys)
    assert code == 0
    assert seen["cfg"] == d.config() and seen["steps"] == d.train_steps
    assert seen["batch_size"] == d.batch_size and seen["lr"] == d.lr
    code, out, _ = run(["forecast", "--model", tmp_path / "run", "--data", tmp_path / "long.csv",
                        "-o", tmp_path / "fc", "--plots", 0, "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and (res["sampler"], res["steps"], res["num_samples"], res["scale"]) == (
        d.sampler, d.sampling_steps, d.num_samples, d.scale)


def test_fan_charts_have_date_axes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from polydiff.apps.tsdiff import workflow as wf

    start = pd.Period("2021-03-01 00:00", freq="h")
    hist = np.sin(np.arange(48) / 4)
    samples = np.random.default_rng(0).normal(size=(1, 16, 12))
    captured = {}
    import polydiff.core.plots as plots

    real = plots.fan_chart

    def spy(path, history, quantiles, **kw):
        captured.update(kw)
        return real(path, history, quantiles, **kw)

    plots.fan_chart = spy
    try:
        paths = wf.fan_charts(tmp_path, [hist], samples, ["x"], starts=[start])
    finally:
        plots.fan_chart = real
    assert paths[0].name == "fan_00_x.png" and paths[0].is_file()
    assert captured["xlabel"] == "date"
    assert captured["forecast_x"][0] == pd.Timestamp("2021-03-01 00:00")
    assert captured["history_x"][-1] == pd.Timestamp("2021-02-28 23:00")
