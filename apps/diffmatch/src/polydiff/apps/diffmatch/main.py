"""The ``diffmatch`` command: train, match, evaluate and demo DiffMatch.

DiffMatch (Nam et al. 2024, "Diffusion Model for Dense Matching") finds, for every pixel of
one image, its match in another by conditional diffusion over the flow field, fed by a
matching cost volume.

Only the standard library and core's CLI helpers are imported here, so ``diffmatch --help``
is instant; each verb imports torch inside :mod:`polydiff.apps.diffmatch.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, run_cli

__all__ = ["build_parser", "main"]

PROG = "diffmatch"
_MODEL_HELP = "a model folder from 'diffmatch train' (default: the shipped starter weights)"


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--hypotheses", type=int, default=None, metavar="K",
                   help="flow samples averaged per pair (default: the model's, 4)")
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="DDIM steps (default: the model's, 5)")
    g.add_argument("--no-sr", action="store_true", help="skip the x2 super-resolution stage")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``diffmatch`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="DiffMatch: dense matching by conditional diffusion over the "
        "flow field, fed by a matching cost volume (Nam et al. 2024).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train the features, denoisers and the regressor",
                       description="Train every stage on synthetic homography, affine and "
                       "thin-plate-spline warps of the bundled training photographs: the "
                       "feature CNN, the coarse denoiser, the same network as a direct "
                       "regressor, and the x2 super-resolution denoiser (the polydiff "
                       "training loop; EMA weights; safetensors). Writes OUT/model/ (with "
                       "manifest.json: settings, wall time, held-out metrics), OUT/runs/.")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run folder")
    p.add_argument("--feature-steps", type=int, metavar="N", help="feature CNN steps")
    p.add_argument("--coarse-steps", type=int, metavar="N",
                   help="coarse denoiser steps (and regressor steps)")
    p.add_argument("--sr-steps", type=int, metavar="N", help="super-resolution steps")
    p.add_argument("--batch-size", type=int, metavar="B", help="pairs per step")
    p.add_argument("--features", choices=("cnn", "daisy"),
                   help="matching features (default: cnn)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--rescore-pairs", type=int, default=16, metavar="N",
                   help="held-out pairs scored into the manifest (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT")
    p.add_argument("--overwrite", action="store_true", help="start the run in OUT over")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    add_config_args(p)

    p = sub.add_parser("match", help="dense flow from image A to image B",
                       description="Match every pixel of A to B. Writes the flow as a "
                       "Middlebury .flo file (A's size, pixels), a colour-coded PNG "
                       "(OUT.png), B warped onto A (OUT-warped.png) and the hypotheses' "
                       "spread (OUT-uncertainty.png). Images of different sizes: B is "
                       "resized to A's size (a note says so); colour images are matched on "
                       "their luminance.")
    p.add_argument("image_a", metavar="A.png", help="first image (the flow is defined on it)")
    p.add_argument("image_b", metavar="B.png", help="second image")
    p.add_argument("-o", "--output", metavar="FLOW.flo", required=True, help="output .flo")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("evaluate", help="AEPE and PCK against the baselines",
                       description="Score DiffMatch, the cost-volume argmax (CNN and DAISY "
                       "features), the direct regressor and OpenCV's DIS and Farneback flow "
                       "on held-out warps of the test photographs and on the Middlebury "
                       "motorcycle pair, clean and corrupted. AEPE in pixels (lower is "
                       "better), PCK-1/3/5 (higher is better).")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("--pairs", type=int, default=16, metavar="N",
                   help="held-out warped pairs (default: %(default)s)")
    p.add_argument("--corruptions", default="clean,noise,blur,jpeg,contrast",
                   metavar="LIST", help="comma-separated: clean, noise, blur, jpeg, contrast "
                   "(default: %(default)s)")
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6), metavar="1-5",
                   help="corruption severity (default: %(default)s)")
    p.add_argument("--no-middlebury", action="store_true", help="skip the Middlebury pair")
    p.add_argument("--no-opencv", action="store_true", help="skip OpenCV's DIS and Farneback")
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = sub.add_parser("demo", help="the tour demo on offline data",
                       description="Match held-out warped photographs and the Middlebury "
                       "motorcycle pair with the starter weights, next to the baselines. "
                       "Writes figures and prints the metrics.")
    p.add_argument("-o", "--output", metavar="OUT", default="diffmatch-demo",
                   help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smallest settings (seconds)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from polydiff.apps.diffmatch import commands

    return int(getattr(commands, f"cmd_{args.command}")(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
