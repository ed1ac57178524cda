"""The ``polydiff-med`` command: diffusion priors for medical imaging.

Train a 2-D diffusion prior on MNI152 template slices, reconstruct undersampled MRI or
sparse-view CT from a DICOM/NIfTI slice (the measurements are simulated from the slice:
magnitude-only, single-coil), choose k-space lines actively, map anomalies, evaluate against
the baselines, and run the tour demo.

Only the standard library and core's CLI helpers are imported here, so ``--help`` is instant;
the verbs import torch inside :mod:`polydiff.apps.medical.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, add_demo_verb, run_commands

__all__ = ["build_parser", "main"]

PROG = "polydiff-med"
METHODS = ("dc", "dps", "red_diff", "tv", "zero_filled")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR",
                   help="a trained prior (train-prior run folder or its model folder; "
                   "default: the starter weights shipped with the app)")


def _acq_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modality", choices=("mri", "ct"), default="mri",
                   help="simulated acquisition (default: %(default)s)")
    p.add_argument("--acceleration", type=float, default=4.0, metavar="R",
                   help="MRI: keep 1/R of the k-space lines; CT: 120/R views "
                   "(default: %(default)s)")
    p.add_argument("--views", type=int, metavar="N", help="CT: number of views (overrides "
                   "--acceleration)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``polydiff-med`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Diffusion priors for medical imaging: undersampled MRI and "
        "sparse-view CT reconstruction (DPS, RED-Diff, data-consistency sampling), active "
        "k-space subsampling, anomaly detection. Measurements are simulated from the input "
        "images: magnitude-only, single-coil.",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train-prior", help="train the diffusion prior on template slices",
                       description="Train the 2-D prior (core U-Net, VP cosine, v-prediction) "
                       "on augmented MNI152 template slices (training split) with the engine's "
                       "Trainer. Writes OUT/model/, OUT/prior.json, OUT/train.toml, "
                       "checkpoints, stats.jsonl, held-out.json and loss.png.")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run folder")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: 3000)")
    p.add_argument("--batch-size", type=int, metavar="B", help="slices per step (default: 12)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--device", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start the run in OUT over (deletes its checkpoints, logs and model)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_args(p)

    p = sub.add_parser("reconstruct", help="simulate an undersampled acquisition of a slice "
                       "and reconstruct it",
                       description="Read a 2-D DICOM or NIfTI slice, simulate MRI k-space "
                       "lines (--acceleration) or CT views from it, reconstruct with the "
                       "prior and write the result in the input's format (never over the "
                       "input), resized to the prior's 64x64 grid, plus a comparison PNG.")
    p.add_argument("input", metavar="IN", help="input slice (.dcm or .nii/.nii.gz)")
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output file (.dcm for DICOM input, .nii/.nii.gz for NIfTI)")
    _acq_args(p)
    p.add_argument("--method", choices=METHODS, default="dc",
                   help="solver (default: %(default)s)")
    p.add_argument("--steps", type=int, metavar="N", help="diffusion steps (default: the "
                   "solver's)")
    p.add_argument("--seed", type=int, default=0, help="mask, noise and sampler seed")
    _model_arg(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("subsample", help="choose k-space lines for a slice (ADS or a fixed "
                       "mask) and reconstruct",
                       description="Acquire MRI k-space lines of the slice with a policy at "
                       "the same budget: 'ads' (Active Diffusion Subsampling: posterior "
                       "particles, maximum-entropy line), 'random' or 'equispaced'. Writes "
                       "the reconstruction (input's format) and a PNG of image and mask.")
    p.add_argument("input", metavar="IN", help="input slice (.dcm or .nii/.nii.gz)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output file")
    p.add_argument("--policy", choices=("ads", "random", "equispaced"), default="ads",
                   help="line selection (default: %(default)s)")
    p.add_argument("--acceleration", type=float, default=8.0, metavar="R",
                   help="budget: 1/R of the lines (default: %(default)s)")
    p.add_argument("--particles", type=int, default=4, help="posterior particles (default: 4)")
    p.add_argument("--steps", type=int, default=60, help="diffusion steps (default: 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _model_arg(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("anomaly", help="anomaly maps by partial diffusion",
                       description="Noise each slice part of the way, denoise it back with "
                       "the prior of healthy anatomy and map the residual. Writes OUT/*.png "
                       "and OUT/anomaly.json (per-slice scores). Without inputs: synthetic "
                       "lesions on held-out template slices, with AUROC against baselines.")
    p.add_argument("inputs", metavar="IN", nargs="*", help="slices (.dcm or .nii/.nii.gz)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    p.add_argument("--t-start", type=float, default=0.35, help="noise level (process time, "
                   "default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _model_arg(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("evaluate", help="PSNR/SSIM of every solver and baseline on held-out "
                       "slices",
                       description="Reconstruct the held-out template slices and the real "
                       "bundled MR/CT slices at MRI 4x/8x and CT 30/60 views with every solver "
                       "and baseline; print the table.")
    _model_arg(p)
    p.add_argument("--methods", default="zero_filled,tv,dc,red_diff,dps",
                   help="comma-separated methods (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer slices and steps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    add_demo_verb(sub, help="the tour demo", default_output="medical-demo",
                  quick_help="smallest settings",
                  description="Reconstruct held-out and real slices with the starter "
                  "prior against zero-filled/FBP and TV; write figures and metrics.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_commands(build_parser, "polydiff.apps.medical.commands", argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
