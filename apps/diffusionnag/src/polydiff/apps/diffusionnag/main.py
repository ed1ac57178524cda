"""The ``diffusionnag`` command: train, generate, search and evaluate with predictor-guided
neural architecture generation (An et al. 2024, "DiffusionNAG: Predictor-guided Neural
Architecture Generation with Diffusion Models").

Only the standard library and core's CLI helpers are imported here, so ``diffusionnag --help``
is instant; each verb imports torch inside :mod:`polydiff.apps.diffusionnag.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_demo_verb, run_commands

__all__ = ["build_parser", "main"]

PROG = "diffusionnag"
SPACES = ("nbgraph", "nb201", "mbv3")
_SPACE_HELP = ("search space: nbgraph (NAS-Bench-Graph: 4 computing nodes, varying wiring, "
               "9 ops), nb201 (NAS-Bench-201 cell), mbv3 (MobileNetV3 chain, 20 layers)")
_BENCH_HELP = ("benchmark nas-bench-graph:<dataset>, dataset one of cora citeseer pubmed cs "
               "physics photo computers arxiv proteins (offline tables)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", choices=("pc", "ddpm", "euler_maruyama"), default="pc",
                   help="predictor-corrector (reverse diffusion + Langevin), DDPM ancestral or "
                   "Euler-Maruyama (default: %(default)s)")
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="sampler steps (default: 100; 40 for mbv3)")
    g.add_argument("--snr", type=float, default=0.16,
                   help="Langevin corrector signal-to-noise ratio (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def _guidance_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("predictor guidance")
    g.add_argument("--scale", type=float, default=None,
                   help="guidance strength (default: 10 for accuracy, 5 for properties)")
    g.add_argument("--schedule", choices=("constant", "linear", "cosine"), default="constant",
                   help="guidance weight over diffusion time (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``diffusionnag`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="DiffusionNAG: generate neural architectures with a graph "
        "diffusion model steered by a property predictor (An et al. 2024).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train", help="train a diffusion model or a predictor",
        description="Train, with the polydiff training loop (EMA, safetensors, resumable), "
        "the architecture diffusion model of a search space (--target arch), the "
        "dataset-aware meta-predictor of NAS-Bench-Graph (--target meta, on every dataset but "
        "--heldout), or a predictor of an exact property (--target params/depth). Writes "
        "OUT/model/, OUT/train.json, stats.jsonl, log.txt, checkpoints/.")
    p.add_argument("--space", choices=SPACES, required=True, help=_SPACE_HELP)
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run directory")
    p.add_argument("--target", choices=("arch", "meta", "params", "depth"), default="arch",
                   help="what to train (default: %(default)s)")
    p.add_argument("--heldout", metavar="DATASET", default=None,
                   help="meta-predictor: the NAS-Bench-Graph dataset left out (default: none)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps")
    p.add_argument("--batch-size", type=int, metavar="B", help="batch size (default: 256)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its latest checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser(
        "generate", help="generate architectures (optionally predictor-guided)",
        description="Sample architectures from a diffusion model (default: the starter "
        "weights of the space), guided by a predictor if --guide is given. Writes "
        "OUT/archs.txt (one architecture per line, best predicted first when guided), "
        "OUT/generated.json and OUT/cells.png.")
    p.add_argument("--space", choices=SPACES, required=True, help=_SPACE_HELP)
    p.add_argument("--model", metavar="DIR", help="diffusion model (default: starter weights)")
    p.add_argument("--guide", metavar="PREDICTOR",
                   help="a predictor directory, or a starter predictor: 'params' or 'depth' "
                   "(nb201, mbv3), 'accuracy' (nbgraph, needs --dataset)")
    p.add_argument("--dataset", metavar="NAME",
                   help="NAS-Bench-Graph dataset the accuracy predictor is conditioned on")
    p.add_argument("--minimize", action="store_true",
                   help="guide towards low instead of high predicted values")
    p.add_argument("-n", "--num", type=int, default=64, metavar="N",
                   help="architectures to generate (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    _guidance_args(p)
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser(
        "search", help="search a benchmark with a query budget",
        description="Search NAS-Bench-Graph for the best architecture of a dataset within "
        "--budget benchmark queries. diffusionnag (default): the dataset-aware predictor, "
        "meta-trained on the other datasets, guides generation; generated architectures are "
        "ranked by the predictor, the best unqueried ones are queried, the task embedding "
        "adapts to what was observed. Baselines: sample-then-filter, random, evolution. "
        "Searches observe validation accuracy; test accuracy is reported. Writes "
        "OUT/trace.csv, OUT/search.json and OUT/curve.png.")
    p.add_argument("--benchmark", metavar="NAME", required=True, help=_BENCH_HELP)
    p.add_argument("--budget", type=int, required=True, metavar="N", help="benchmark queries")
    p.add_argument("--method", default="diffusionnag",
                   choices=("diffusionnag", "sample-then-filter", "random", "evolution"),
                   help="search method (default: %(default)s)")
    p.add_argument("--model", metavar="DIR", help="diffusion model (default: starter weights)")
    p.add_argument("--predictor", metavar="DIR",
                   help="meta-predictor (default: the starter one that left this dataset out)")
    p.add_argument("--per-round", type=int, default=5, metavar="K",
                   help="queries per generation round (default: %(default)s)")
    p.add_argument("--generate", type=int, default=128, metavar="N",
                   help="architectures generated per round (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    _guidance_args(p)
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser(
        "evaluate", help="validity, uniqueness, novelty, properties and accuracies",
        description="Evaluate architectures from a file (one per line, the space's string "
        "form; lines starting with '#' are ignored): validity, uniqueness and novelty (against "
        "the training set of the space's starter model), exact properties, and benchmark "
        "accuracies with --benchmark (nbgraph). With --model, N fresh samples are evaluated "
        "instead of a file.")
    p.add_argument("--space", choices=SPACES, required=True, help=_SPACE_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--archs", metavar="FILE", help="architectures, one per line")
    src.add_argument("--model", metavar="DIR|starter",
                     help="a diffusion model to sample from ('starter': the shipped one)")
    p.add_argument("-n", "--num", type=int, default=256, metavar="N",
                   help="samples with --model (default: %(default)s)")
    p.add_argument("--benchmark", metavar="NAME", help=_BENCH_HELP)
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    add_demo_verb(sub, help="the tour demo (offline, starter weights)",
                  default_output="diffusionnag-demo", quick_help="smallest settings (seconds)",
                  description="Generate NAS-Bench-Graph architectures for a dataset the "
                  "predictor never saw, compare them with random ones, search with a "
                  "small budget, and draw the generated cells.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_commands(build_parser, "polydiff.apps.diffusionnag.commands", argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
