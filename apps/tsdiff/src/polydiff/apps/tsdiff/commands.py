"""The ``tsdiff`` verbs (imported by :mod:`polydiff.apps.tsdiff.main` when a command runs).

Every verb checks its input before it writes anything, computes everything, then writes its
files atomically, so bad input leaves no partial output.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.apps.tsdiff import workflow as wf
from polydiff.core.cli import CLIError, emit, emit_demo, load_config, save_config
from polydiff.core.cli import require_at_least as _positive

__all__ = ["TrainSettings", "cmd_train", "cmd_forecast", "cmd_refine", "cmd_synthesize",
           "cmd_evaluate", "cmd_demo"]


@dataclass
class TrainSettings:
    """``tsdiff train`` settings (TOML via ``--config``, ``--set key=value``; flags win).

    ``prediction_length``, ``context_length``, ``lags``, ``steps``, ``batch_size`` and ``lr``
    left at 0 / ``None`` come from the defaults table for the data's frequency
    (:func:`polydiff.timeseries.tsdiff.defaults.defaults_for`)."""

    preset: str = "small"
    prediction_length: int = 0
    context_length: int = 0
    lags: list[int] | None = None
    steps: int = 0
    batch_size: int = 0
    lr: float = 0.0
    holdout: int = 0
    seed: int = 0


def _check_lengths(dataset: Any, need: int, what: str) -> None:
    from polydiff.timeseries.data import SeriesTooShortError

    for s in dataset:
        if len(s) < need:
            raise SeriesTooShortError(f"item {s.item_id!r} has {len(s)} steps, {what} needs at "
                                      f"least {need}")
        if not np.isfinite(s.target).any():
            raise CLIError(f"item {s.item_id!r} has no observed value")


def _load(args: argparse.Namespace, split: str) -> Any:
    """The ``--data`` dataset, with the column and layout options."""
    return wf.load_data(args.data, freq=args.freq, layout=args.layout, split=split,
                        id_col=args.id_col, time_col=args.time_col,
                        target_col=args.target_col)


def _new_output(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CLIError(f"output path '{path}' exists and is not a directory")


# ----------------------------------------------------------------------------- train
TRAIN_FILE = "train.toml"


def cmd_train(args: argparse.Namespace) -> int:
    """``tsdiff train``. The run folder is the engine's
    (:func:`polydiff.core.training.start_run`): locked while training, refused when not empty
    unless ``--resume`` (continue from the newest intact checkpoint; the saved ``train.toml``
    is the base settings) or ``--overwrite`` (start over); the model is built under the seed
    and a checkpoint is written every tenth of the run."""
    from polydiff.core.training.runs import start_run

    with start_run(args.output, resume=args.resume, overwrite=args.overwrite,
                   settings_name=TRAIN_FILE, outputs=("model", wf.META_NAME, "loss.png")) as run:
        if run.saved_settings is not None and args.config is None:
            args.config = str(run.saved_settings)
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    s = load_config(TrainSettings, args.config, args.set)
    for key in ("preset", "prediction_length", "context_length", "steps", "batch_size",
                "holdout", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(s, key, value)
    _positive("--steps", s.steps, 0)
    _positive("--batch-size", s.batch_size, 0)
    _positive("--prediction-length", s.prediction_length, 0)
    _positive("--context-length", s.context_length, 0)
    _positive("--holdout", s.holdout, 0)
    out = Path(args.output)
    _new_output(out)
    data = _load(args, "train")
    table = _defaults(data.freq)
    s.steps, s.batch_size = s.steps or table.train_steps, s.batch_size or table.batch_size
    s.lr = s.lr or table.lr
    horizon = s.prediction_length or wf.default_horizon(data)
    try:
        cfg = wf.make_config(s.preset, data.freq, horizon, s.context_length or None, s.lags)
    except ValueError as exc:
        raise CLIError(f"invalid model settings: {exc}") from None
    need = cfg.window_length + s.holdout * horizon
    _check_lengths(data, need, f"context {cfg.context_length} + prediction {horizon}"
                   + (f" + holdout {s.holdout}x{horizon}" if s.holdout else ""))
    series = [x.target[: len(x.target) - s.holdout * horizon] for x in data]
    meta = {"freq": data.freq, "data": str(args.data), "dataset": data.name,
            "prediction_length": horizon, "context_length": cfg.context_length,
            "lags": list(cfg.lags), "preset": s.preset, "holdout": s.holdout,
            "items": data.item_ids, "steps": s.steps}
    save_config(s, out / TRAIN_FILE)  # before training: what --resume of a killed run reads
    tic = time.perf_counter()
    model = wf.train_model(cfg, series, out, steps=s.steps, batch_size=s.batch_size, lr=s.lr,
                           seed=s.seed, meta=meta, resume=args.resume,
                           ckpt_every=max(1, s.steps // 10))
    figures = _loss_curve(out)
    losses = _losses(out)
    emit({"run": str(out), "model": str(out / "model"), "freq": data.freq,
          "prediction_length": horizon, "context_length": cfg.context_length,
          "lags": list(cfg.lags), "series": len(data), "steps": s.steps,
          "parameters": sum(p.numel() for p in model.parameters()),
          "final_loss": losses[-1][1] if losses else math.nan,
          "seconds": round(time.perf_counter() - tic, 2),
          "figures": [str(f) for f in figures]}, args.json)
    return 0


def _losses(run: Path) -> list[tuple[int, float]]:
    from polydiff.core.training.rundir import read_stats

    return [(int(r["step"]), float(r["loss"])) for r in read_stats(run)]


def _loss_curve(run: Path) -> list[Path]:
    from polydiff.core.plots import line_plot, plots_available

    losses = _losses(run)
    if len(losses) < 2 or not plots_available():
        return []
    x, y = zip(*losses, strict=True)
    return [line_plot(run / "loss.png", {"training loss": (x, y)}, xlabel="step",
                      ylabel="epsilon MSE", title="TSDiff training loss")]


# ----------------------------------------------------------------------------- helpers
def _defaults(freq: str) -> Any:
    """The defaults table's row for ``freq``."""
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    return defaults_for(freq)


def _model_and_data(args: argparse.Namespace, split: str = "test") -> tuple[Any, Any, dict]:
    model = wf.load_model(args.model)
    meta = wf.model_meta(args.model)
    data = _load(args, split)
    if meta.get("freq") and meta["freq"] != data.freq:
        print(f"tsdiff: warning: the model was trained on frequency "
              f"{meta['freq']!r}, the data has {data.freq!r}", file=sys.stderr)
    return model, data, meta


def _write_table(frame: Any, path: Path) -> Path:
    from polydiff.timeseries.data import write_table

    return write_table(frame, path)


def _season(freq: str) -> int:
    from polydiff.timeseries.data import seasonal_period

    return seasonal_period(freq)


def _forecast_out(args: argparse.Namespace, data: Any, samples: np.ndarray, stem: str,
                  title: str) -> tuple[Path, list[Path]]:
    out = Path(args.output)
    starts = [s.start + len(s) for s in data]
    frame = wf.quantile_frame(data.item_ids, starts, samples, data.freq)
    if args.plots < 0:
        raise CLIError(f"--plots must be >= 0, got {args.plots}")
    table = _write_table(frame, out / f"{stem}.{args.format}")
    figs = wf.fan_charts(out, [s.target for s in data], samples,
                         [f"{title}: {i}" for i in data.item_ids], max_plots=args.plots,
                         prefix=stem, starts=starts)
    return table, figs


# ----------------------------------------------------------------------------- forecast
def _sampling(args: argparse.Namespace, freq: str | None) -> dict[str, Any]:
    """The self-guided forecast settings: the flags given, else the defaults table's for the
    model's frequency (guided DDIM, 20 steps, 100 samples, the table's guidance scale)."""
    d = _defaults(freq or "h")
    sampler = args.sampler or d.sampler
    out = {"num_samples": d.num_samples if args.num_samples is None else args.num_samples,
           "guidance": args.guidance or d.guidance,
           "scale": d.scale if args.scale is None else args.scale,
           "spread": d.spread if args.spread is None else args.spread, "sampler": sampler,
           "steps": args.steps if args.steps is not None else (
               d.sampling_steps if sampler == "ddim" else None)}
    _positive("--num-samples", out["num_samples"])
    _positive("--steps", out["steps"])
    if not math.isfinite(out["scale"]) or out["scale"] < 0:
        raise CLIError(f"--scale must be a finite number >= 0, got {out['scale']}")
    if not math.isfinite(out["spread"]) or out["spread"] <= 0:
        raise CLIError(f"--spread must be a finite number > 0, got {out['spread']}")
    return out


def cmd_forecast(args: argparse.Namespace) -> int:
    _new_output(Path(args.output))
    model, data, meta = _model_and_data(args)
    kw = _sampling(args, meta.get("freq") or data.freq)
    cfg = model.config
    _check_lengths(data, cfg.context_length, f"the model's context ({cfg.context_length} steps)")
    tic = time.perf_counter()
    samples = wf.tsdiff_samples(model, [s.target for s in data], seed=args.seed, **kw)
    if not np.isfinite(samples).all():
        raise RuntimeError("the model produced non-finite forecasts")
    seconds = time.perf_counter() - tic
    table, figs = _forecast_out(args, data, samples, "forecast", "TSDiff forecast")
    emit({"forecast": str(table), "series": len(data), "prediction_length":
          cfg.prediction_length, **kw, "seconds": round(seconds, 2),
          "figures": [str(f) for f in figs]}, args.json)
    return 0


# ----------------------------------------------------------------------------- refine
def _base_from_table(path: str, data: Any, horizon: int) -> np.ndarray:
    import pandas as pd

    from polydiff.timeseries.data import DataError, read_table

    df = read_table(path)
    if "item_id" not in df.columns and {"unique_id", "ds"} <= set(df.columns):
        df = df.rename(columns={"unique_id": "item_id", "ds": "timestamp"})
    for col in ("item_id", "timestamp"):
        if col not in df.columns:
            raise DataError(f"{path}: column {col!r} not found (columns: "
                            f"{', '.join(map(str, df.columns))})")
    qcols = [c for c in df.columns if str(c).startswith("q")]
    cols = qcols or [c for c in ("mean", "forecast", "target") if c in df.columns][:1]
    if not cols:
        raise DataError(f"{path}: no forecast columns (want q0.1..q0.9, 'mean' or 'forecast')")
    for c in cols:
        vals = pd.to_numeric(df[c], errors="coerce")
        if vals.isna().any():
            raise DataError(f"{path}: column {c!r} holds a missing or non-numeric value")
        df[c] = vals
    df["item_id"] = df["item_id"].astype(str)
    df["timestamp"] = pd.to_datetime(df["timestamp"], errors="coerce")
    out = []
    for s in data:
        rows = df[df["item_id"] == s.item_id].sort_values("timestamp")
        if len(rows) < horizon:
            raise DataError(f"{path}: item {s.item_id!r} has {len(rows)} forecast rows, the "
                            f"model forecasts {horizon} steps")
        start = (s.start + len(s)).to_timestamp(how="start")
        rows = rows[rows["timestamp"] >= start].head(horizon)
        if len(rows) < horizon or rows["timestamp"].iloc[0] != start:
            raise DataError(f"{path}: the forecast of item {s.item_id!r} must start at {start}")
        out.append(rows[cols].to_numpy(dtype=np.float64).T)
    return np.stack(out)  # (N, S, H)


def _refine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The refinement flags given, else the defaults (Langevin, tied to each base sample)."""
    from polydiff.timeseries.tsdiff.defaults import REFINE_DEFAULTS as R

    out: dict[str, Any]
    out = {"method": args.method or R.method,
           "steps": R.steps if args.iterations is None else args.iterations,
           "lr": R.lr if args.lr is None else args.lr,
           "prox_weight": R.prox_weight if args.prox_weight is None else args.prox_weight,
           "noise_scale": R.noise_scale if args.noise_scale is None else args.noise_scale,
           "prior": args.prior or R.prior,
           "keep_spread": R.keep_spread if args.keep_spread is None else args.keep_spread}
    if out["prior"] != "mse":
        out["keep_spread"] = False
    _positive("--iterations", out["steps"], 0)
    if not out["lr"] > 0 or not out["prox_weight"] >= 0 or not out["noise_scale"] >= 0:
        raise CLIError("--lr must be > 0, --prox-weight and --noise-scale >= 0")
    return out


def cmd_refine(args: argparse.Namespace) -> int:
    _positive("--num-samples", args.num_samples)
    settings = _refine_settings(args)
    _new_output(Path(args.output))
    model, data, meta = _model_and_data(args)
    num_samples = args.num_samples or _defaults(meta.get("freq") or data.freq).num_samples
    cfg = model.config
    h = cfg.prediction_length
    _check_lengths(data, cfg.context_length, f"the model's context ({cfg.context_length} steps)")
    contexts = [s.target for s in data]
    if args.base == "seasonal_naive":
        base = wf.seasonal_naive_samples(contexts, h, _season(data.freq),
                                         num_samples=num_samples, seed=args.seed)
    elif args.base == "linear":
        base = wf.linear_samples(contexts, contexts, h, data.freq,
                                 num_samples=num_samples, seed=args.seed)
    else:
        base = _base_from_table(args.base, data, h)
    tic = time.perf_counter()
    refined = wf.refine_samples(model, contexts, base, seed=args.seed, **settings)
    seconds = time.perf_counter() - tic
    table, figs = _forecast_out(args, data, refined, "refined", f"refined {args.base}")
    emit({"refined": str(table), "base": args.base, "series": len(data), **settings,
          "change": float(np.mean(np.abs(refined - base)) / max(np.mean(np.abs(base)), 1e-12)),
          "seconds": round(seconds, 2), "figures": [str(f) for f in figs]}, args.json)
    return 0


# ----------------------------------------------------------------------------- synthesize
def cmd_synthesize(args: argparse.Namespace) -> int:
    import pandas as pd

    from polydiff.timeseries.tsdiff.synth import linear_predictive_score, synthesize

    _positive("-n", args.num)
    _positive("--steps", args.steps)
    out = Path(args.output)
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise CLIError(f"output {out} must end in .csv or .parquet")
    model = wf.load_model(args.model)
    meta = wf.model_meta(args.model)
    cfg = model.config
    data = None
    if args.data is not None:
        data = _load(args, "test")
        _check_lengths(data, 2 * cfg.window_length, "the linear predictive score")
    tic = time.perf_counter()
    windows = synthesize(model.denoiser(), args.num, cfg.window_length, sampler=args.sampler,
                         steps=args.steps, seed=args.seed, channel_dim=True,
                         batch_size=256).double().cpu().numpy()
    seconds = time.perf_counter() - tic
    freq = meta.get("freq") or "h"
    stamps = pd.period_range("2000-01-01", periods=cfg.window_length, freq=freq)
    stamps = stamps.to_timestamp(how="start")
    frame = pd.DataFrame({"item_id": np.repeat([f"synthetic_{i:05d}" for i in range(args.num)],
                                               cfg.window_length),
                          "timestamp": np.tile(stamps, args.num), "target": windows.ravel()})
    result: dict[str, Any] = {"output": str(out), "windows": args.num,
                              "length": cfg.window_length, "seconds": round(seconds, 2),
                              "units": "mean-scaled (divided by the mean |value| of the "
                                       "context)"}
    if data is not None:
        real = _real_windows(data, cfg.window_length)
        half = len(real) // 2
        c = cfg.context_length
        result["lps_synthetic"] = linear_predictive_score(windows, real[half:], c,
                                                          scaling="mean")
        if half >= 2:
            result["lps_real_train"] = linear_predictive_score(real[:half], real[half:], c,
                                                               scaling="mean")
    _write_table(frame, out)
    emit(result, args.json)
    return 0


def _real_windows(data: Any, length: int, per_series: int = 64) -> np.ndarray:
    """Non-overlapping fully observed windows from the end of every series."""
    out = []
    for s in data:
        y = s.target
        for k in range(per_series):
            end = len(y) - k * length
            if end - length < 0:
                break
            w = y[end - length: end]
            if np.isfinite(w).all():
                out.append(w)
    if len(out) < 2:
        raise CLIError("the data has fewer than 2 fully observed windows for the score")
    return np.stack(out[::-1])


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    model, data, meta = _model_and_data(args)
    kw = _sampling(args, meta.get("freq") or data.freq)
    cfg = model.config
    h = cfg.prediction_length
    k = args.windows if args.windows is not None else max(1, int(meta.get("holdout", 0)))
    _positive("--windows", k)
    if k > int(meta.get("holdout", 0)) and meta.get("data") == str(args.data):
        print(f"tsdiff: warning: the model was trained with --holdout "
              f"{int(meta.get('holdout', 0))}: {k} windows overlap its training data",
              file=sys.stderr)
    _check_lengths(data, cfg.context_length + k * h,
                   f"{k} evaluation window{'s' if k != 1 else ''} after a context of "
                   f"{cfg.context_length}")
    wins = wf.windows_for(data, h, k)
    res = evaluate_all(model, wins, data.freq, seed=args.seed, refine_base=not args.no_refine,
                       **kw)
    head = {"windows": len(wins), "series": len(data), "prediction_length": h,
            "reference": "seasonal_naive (gluonts SeasonalNaivePredictor)", **kw}
    if args.json:
        emit({**head, "results": res}, True)
    else:
        rows = [{"model": name, **r} for name, r in res.items()]
        emit({**head, "results": rows}, False)
    return 0


def evaluate_all(model: Any, wins: list, freq: str, *, num_samples: int, guidance: str,
                 scale: float, sampler: str, steps: int | None, seed: int,
                 spread: float = 1.0, refine_base: bool = True,
                 train: list[np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of TSDiff and the baselines on forecast windows (``train``: the linear model's
    fitting data, default the windows' contexts). ``seasonal_naive`` is gluonts'
    ``SeasonalNaivePredictor`` (a point forecast), the reference of ``crps_ratio``;
    ``seasonal_naive_prob`` is the probabilistic seasonal naive that ``refined_seasonal_naive``
    starts from."""
    h = model.config.prediction_length
    m = _season(freq)
    ctx = [w.context.target for w in wins]
    tg = [w.target for w in wins]
    out: dict[str, dict[str, float]] = {}
    tic = time.perf_counter()
    ts = wf.tsdiff_samples(model, ctx, num_samples=num_samples, guidance=guidance, scale=scale,
                           sampler=sampler, steps=steps, seed=seed, spread=spread)
    out["tsdiff"] = {**wf.score(tg, ts, ctx, m),
                     "seconds_per_window": (time.perf_counter() - tic) / len(wins)}
    sn = wf.gluonts_seasonal_naive_samples(ctx, [w.context.start for w in wins], freq, h, m)
    out["seasonal_naive"] = wf.score(tg, sn, ctx, m)
    snp = wf.seasonal_naive_samples(ctx, h, m, num_samples=num_samples, seed=seed)
    out["seasonal_naive_prob"] = wf.score(tg, snp, ctx, m)
    lin = wf.linear_samples(train or _unique_contexts(wins), ctx, h, freq,
                            num_samples=num_samples, seed=seed)
    out["linear"] = wf.score(tg, lin, ctx, m)
    if refine_base:
        tic = time.perf_counter()
        ref = wf.refine_samples(model, ctx, snp, seed=seed)
        out["refined_seasonal_naive"] = {**wf.score(tg, ref, ctx, m), "seconds_per_window":
                                         (time.perf_counter() - tic) / len(wins)}
    base = out["seasonal_naive"]["crps"]
    for r in out.values():
        r["crps_ratio"] = r["crps"] / base if base > 0 else math.nan
    return out


def _unique_contexts(wins: list) -> list[np.ndarray]:
    """The first window's context of every item (the longest series no window target is in)."""
    seen: dict[str, np.ndarray] = {}
    for w in wins:
        seen.setdefault(w.item_id, w.context.target)
    return list(seen.values())


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from polydiff.apps.tsdiff.demo import DEMO

    out = Path(args.output)
    _new_output(out)
    with wf.stdout_to_stderr():
        rep = DEMO.demo(out, quick=args.quick)
    emit_demo(rep, args.json)
    return 0
