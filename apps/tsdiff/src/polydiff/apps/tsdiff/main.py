"""The ``tsdiff`` command: train, forecast, refine, synthesize and evaluate TSDiff models.

TSDiff (Kollovieh et al. 2023, "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for
Probabilistic Time Series Forecasting") is one unconditional diffusion model over windows of a
series; forecasting is self-guidance towards the observed context, refinement improves another
model's forecast with the model's implicit density, synthesis draws new windows.

Only the standard library and core's CLI helpers are imported here, so ``tsdiff --help`` is
instant; each verb imports torch, numpy and pandas inside :mod:`polydiff.apps.tsdiff.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, add_demo_verb, run_commands
from polydiff.core.samplers.registry import sampler_names

__all__ = ["build_parser", "main"]

PROG = "tsdiff"
_DATA_HELP = ("an offline dataset (pedestrian, vic_elec, aus_livestock, warsaw_air), a gluonts "
              "benchmark name (needs a network or gluonts' cache), or a CSV/parquet file: a "
              "long table with columns item_id, timestamp, target or unique_id, ds, y (or "
              "name them with --id-col/--time-col/--target-col; --layout wide: a time column "
              "and one column per series)")


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", metavar="NAME|FILE", required=required, help=_DATA_HELP)
    p.add_argument("--freq", metavar="FREQ",
                   help="pandas frequency of a table (default: inferred), e.g. h, 30min, D")
    p.add_argument("--layout", choices=("long", "wide"), default="long",
                   help="table layout (default: %(default)s)")
    p.add_argument("--id-col", metavar="NAME",
                   help="column of the series id (default: item_id or unique_id; none: one "
                   "series)")
    p.add_argument("--time-col", metavar="NAME",
                   help="column of the timestamps (default: timestamp or ds)")
    p.add_argument("--target-col", metavar="NAME",
                   help="column of the values (default: target or y)")


def _table_args(p: argparse.ArgumentParser) -> None:
    """Output options of the verbs that write forecast tables and fan charts."""
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="table format (default: %(default)s)")
    p.add_argument("--plots", type=int, default=4, metavar="K",
                   help="fan charts for the first K series (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("self-guided sampling (defaults: the defaults table's for the "
                             "model's frequency)")
    g.add_argument("--num-samples", type=int, default=None, metavar="S",
                   help="sample paths per series (default: 100)")
    g.add_argument("--guidance", choices=("mse", "quantile"), default=None,
                   help="observation self-guidance (default: quantile)")
    g.add_argument("--scale", type=float, default=None,
                   help="guidance scale s (default: the table's for the frequency, e.g. 2 "
                   "for hourly data)")
    g.add_argument("--spread", type=float, default=None,
                   help="recalibration factor of the samples' spread around their median "
                   "(default: the table's for the frequency)")
    g.add_argument("--sampler", choices=sampler_names(), default=None, metavar="NAME",
                   help="ddim (guided DDIM, the default), ddpm (ancestral), or another "
                   "sampler of core's registry: " + ", ".join(sampler_names()))
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="sampler steps (default: 20 for ddim, the model's 100 for ddpm)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tsdiff`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="TSDiff: probabilistic forecasting, forecast refinement and "
        "synthetic series from one self-guiding diffusion model (Kollovieh et al. 2023).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a TSDiff model on a dataset",
                       description="Train TSDiff on random windows of every series (the "
                       "polydiff training loop; EMA weights; safetensors). Writes OUT/model/, "
                       "OUT/tsdiff.json, stats.jsonl and a loss curve.")
    _data_args(p)
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run directory")
    p.add_argument("--preset", choices=("tiny", "small", "paper"), default=None,
                   help="model size (default: small)")
    p.add_argument("--prediction-length", type=int, metavar="H",
                   help="forecast horizon (default: the defaults table's for the frequency, "
                   "e.g. 24 for hourly data)")
    p.add_argument("--context-length", type=int, metavar="C",
                   help="context (default: the table's, e.g. 72 for hourly data)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="optimizer steps (default: the table's)")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help="windows per step (default: the table's)")
    p.add_argument("--holdout", type=int, metavar="K",
                   help="leave the last K horizons of every series out of training, for "
                   "'tsdiff evaluate --windows K' (default: 0)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its newest intact checkpoint (its saved "
                   "train.toml is the base settings; pass the same data)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the run in OUT over (deletes its checkpoints, logs, model and "
                   "settings; other files stay)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_args(p)

    p = sub.add_parser("forecast", help="forecast the end of every series",
                       description="Forecast the next prediction-length steps of every "
                       "series with self-guidance. Writes OUT/forecast.csv (item_id, "
                       "timestamp, q0.1 ... q0.9, mean) and fan charts "
                       "OUT/forecast_NN_<item>.png.")
    p.add_argument("--model", metavar="DIR", required=True, help="run or model directory")
    _data_args(p)
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    _sampling_args(p)
    _table_args(p)

    p = sub.add_parser("refine", help="refine a base forecaster's forecast with TSDiff",
                       description="Refine the forecasts of a base model (seasonal naive, the "
                       "linear model, or a table of your own) with the model's implicit "
                       "density (TSDiff Sec. 4.2). Writes OUT/refined.csv and fan charts "
                       "OUT/refined_NN_<item>.png.")
    p.add_argument("--model", metavar="DIR", required=True, help="run or model directory")
    _data_args(p)
    p.add_argument("--base", metavar="seasonal_naive|linear|FILE", default="seasonal_naive",
                   help="base forecasts: a baseline name, or a CSV/parquet table item_id, "
                   "timestamp and q0.1..q0.9 or a 'mean'/'forecast' column (default: "
                   "%(default)s)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    p.add_argument("--method", choices=("langevin", "ml"), default=None,
                   help="Langevin sampling (keeps the base forecast's spread) or maximum "
                   "likelihood (moves every sample to the mode) (default: langevin)")
    p.add_argument("--iterations", type=int, default=None,
                   help="refinement steps (default: 20)")
    p.add_argument("--lr", type=float, default=None, help="step size (default: 0.1)")
    p.add_argument("--prox-weight", type=float, default=None,
                   help="weight of the tie to the base forecast (default: 1)")
    p.add_argument("--keep-spread", action=argparse.BooleanOptionalAction, default=None,
                   help="tie each sample's offset from the mean to its base offset, which keeps "
                   "a sample forecast's spread (default: on)")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="Langevin noise scale gamma (default: 1)")
    p.add_argument("--prior", choices=("mse", "quantile"), default=None,
                   help="regulariser (default: mse)")
    p.add_argument("--num-samples", type=int, default=None, metavar="S",
                   help="samples of the baselines (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _table_args(p)

    p = sub.add_parser("synthesize", help="draw synthetic windows",
                       description="Draw N unconditional windows (mean-scaled units) and write "
                       "them as a long table item_id, timestamp, target. With --data, also the "
                       "linear predictive score (LPS, lower is better) against real windows.")
    p.add_argument("--model", metavar="DIR", required=True, help="run or model directory")
    p.add_argument("-n", "--num", type=int, default=100, metavar="N",
                   help="windows to draw (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="output .csv/.parquet")
    _data_args(p, required=False)
    p.add_argument("--sampler", choices=sampler_names(), default="ddpm", metavar="NAME",
                   help="a sampler of core's registry (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="sampler steps")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("evaluate", help="CRPS, MASE and coverage against the baselines",
                       description="Rolling-origin evaluation on the last K windows of every "
                       "series: TSDiff (self-guided), gluonts' SeasonalNaivePredictor (the "
                       "reference of the ratios), the probabilistic seasonal naive, the "
                       "linear model and the refined probabilistic seasonal naive; CRPS (= "
                       "gluonts mean_wQuantileLoss), MASE, 80% interval coverage.")
    p.add_argument("--model", metavar="DIR", required=True, help="run or model directory")
    _data_args(p)
    p.add_argument("--windows", type=int, default=None, metavar="K",
                   help="windows per series (default: the model's --holdout, at least 1)")
    _sampling_args(p)
    p.add_argument("--no-refine", action="store_true", help="skip the refined baseline")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    add_demo_verb(sub, help="the tour demo on offline data", default_output="tsdiff-demo",
                  quick_help="smallest settings (under a minute)",
                  description="Train a small TSDiff on real offline data (pedestrian "
                  "counts, Victorian electricity demand), forecast held-out windows and "
                  "compare with the baselines. Writes figures and prints the metrics.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_commands(build_parser, "polydiff.apps.tsdiff.commands", argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
