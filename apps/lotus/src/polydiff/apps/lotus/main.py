"""The ``lotus`` command: train, predict, evaluate and demo single-step diffusion dense
prediction (depth and surface normals).

Lotus (He et al. 2024, "Lotus: Diffusion-based Visual Foundation Model for High-quality Dense
Prediction") adapts a pretrained image diffusion model to predict the annotation itself in a
single step at the last timestep, with a detail preserver (a task switch that also
reconstructs the input image).

Only the standard library and core's CLI helpers are imported here, so ``lotus --help`` is
instant; each verb imports torch inside :mod:`polydiff.apps.lotus.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, add_demo_verb, run_cli

__all__ = ["build_parser", "main"]

PROG = "lotus"
TASKS = ("depth", "normal")
VARIANTS = ("d", "g", "eps", "x0", "regression")
_MODEL_HELP = "a model folder from 'lotus train' (OUT/model; default: the starter weights)"


def _train_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="pretrain the image prior, then train the predictor",
                       description="Pretrain a small image diffusion prior on crops of the "
                       "bundled training photographs, adapt it (doubled input channels) and "
                       "train the dense predictor on rendered RGB-D scenes (the polydiff "
                       "training loop; EMA weights; safetensors). Writes OUT/model/ (with "
                       "manifest.json: command, CPU time, held-out metrics) and OUT/runs/.")
    p.add_argument("--task", choices=TASKS, required=True, help="what to predict")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run folder")
    p.add_argument("--variant", choices=VARIANTS,
                   help="d: single step from zeros (default); g: single step from noise; "
                   "eps/x0: multi-step diffusion; regression: d from random weights")
    p.add_argument("--no-detail-preserver", action="store_true",
                   help="train without the input-reconstruction task")
    p.add_argument("--steps", type=int, metavar="N", help="predictor steps (default 300)")
    p.add_argument("--prior-steps", type=int, metavar="N", help="prior steps (default 400)")
    p.add_argument("--batch-size", type=int, metavar="B", help="scenes per step (default 8)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT")
    p.add_argument("--overwrite", action="store_true", help="start the run in OUT over")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    add_config_args(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``lotus`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Lotus: depth and surface normals from one image in a single "
        "diffusion step (He et al. 2024).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _train_parser(sub)

    p = sub.add_parser("predict", help="depth or normals of an image",
                       description="Predict affine-invariant depth (disparity: bright = "
                       "near) or surface normals of IMAGE. Writes the colour-coded PNG OUT "
                       "and the raw prediction beside it as OUT with the suffix .npy "
                       "(depth: (H, W) float32 disparity up to scale and shift; normals: "
                       "(H, W, 3) unit vectors, x right, y up, z towards the camera).")
    p.add_argument("image", metavar="IMAGE", help="input image (any format Pillow reads)")
    p.add_argument("-o", "--output", metavar="OUT.png", required=True, help="output PNG")
    p.add_argument("--task", choices=TASKS, default="depth", help="default: %(default)s")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("--max-side", type=int, default=96, metavar="PX",
                   help="working size: longer side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("evaluate", help="held-out metrics against a trivial baseline",
                       description="Score the model on held-out rendered scenes (test "
                       "photographs as textures) and, for depth, the Middlebury motorcycle; "
                       "depth: AbsRel and delta1 after scale-and-shift alignment; normals: "
                       "angular error in degrees and the fractions within 11.25/22.5/30.")
    p.add_argument("--task", choices=TASKS, default="depth", help="default: %(default)s")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("--scenes", type=int, default=24, metavar="N",
                   help="held-out scenes (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    add_demo_verb(sub, description="Predict depth and normals of held-out rendered scenes and "
                  "the Middlebury motorcycle with the starter weights, next to trivial "
                  "baselines. Writes figures and prints the metrics.",
                  default_output="lotus-demo")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from polydiff.apps.lotus import commands

    return int(getattr(commands, f"cmd_{args.command}")(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
