"""The ``unidiffuser`` command: train UniDiffuser and sample every image-text distribution.

UniDiffuser (Bao et al. 2023, "One Transformer Fits All Distributions in Multi-Modal Diffusion
at Scale") perturbs images and texts with a timestep each and learns to predict both noises;
text-to-image, image-to-text, joint pairs and both marginals then come from one network by
choosing the timesteps.

Only the standard library and core's CLI helpers are imported here, so ``unidiffuser --help``
is instant; each verb imports torch inside :mod:`polydiff.apps.unidiffuser.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, add_demo_verb, run_commands

__all__ = ["build_parser", "main", "MODES"]

PROG = "unidiffuser"
MODES = ("t2i", "i2t", "joint", "image", "text", "i2t2i", "t2i2t")
_MODEL_HELP = ("model folder (from 'unidiffuser train': RUN or RUN/model); default: the "
               "starter weights shipped with the app (trained on captioned digits)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--guidance", type=float, default=None, metavar="S",
                   help="classifier-free guidance scale s of the paper (0 = the conditional "
                   "model; the unconditional branch is the model's own marginal); default: "
                   "the value chosen on validation data for the starter weights, else 0")
    g.add_argument("--steps", type=int, default=20, metavar="N",
                   help="DPM-Solver++(2M) steps (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``unidiffuser`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="UniDiffuser: one diffusion transformer for text->image, "
        "image->text, joint image-text pairs and both marginals (Bao et al. 2023).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a text autoencoder and a UniDiffuser model",
                       description="Train the text autoencoder (captions <-> latent tokens) "
                       "and the joint network on image-caption pairs with the polydiff "
                       "training loop (EMA, safetensors, resumable). Writes OUT/model/ (the "
                       "model folder), OUT/text/ and OUT/diffusion/ (training runs with "
                       "stats.jsonl and checkpoints), OUT/train.toml and a loss curve.")
    p.add_argument("--data", metavar="digits|DIR", default=None,
                   help="'digits' (scikit-learn's digits with captions generated from the "
                   "label and measured thickness, slant and size; offline) or an image-"
                   "caption folder: Flickr (captions.txt + Images/), COCO (annotations/"
                   "captions_*.json) or images with same-named .txt captions "
                   "(default: digits)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run folder")
    p.add_argument("--task", choices=("joint", "t2i", "i2t"), default=None,
                   help="joint = UniDiffuser; t2i / i2t = a dedicated conditional baseline "
                   "(default: joint)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: 4000)")
    p.add_argument("--batch-size", type=int, metavar="B", help="pairs per step (default: 128)")
    p.add_argument("--text-steps", type=int, metavar="N",
                   help="text-autoencoder steps (default: 800)")
    p.add_argument("--text-encoder", choices=("gru", "minilm"), default=None,
                   help="gru (trained here) or minilm (the bundled sentence encoder, "
                   "frozen; needs the 'minilm' extra) (default: gru)")
    p.add_argument("--text-model", metavar="DIR",
                   help="reuse a trained text autoencoder (a RUN/model/text folder)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="images are resized to S x S (folders only; default: 8)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="1 (grey) or 3 (RGB) for folders (default: 1)")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N images of a folder")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUT from its checkpoints")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_args(p)

    p = sub.add_parser("sample", help="sample one of the modes",
                       description="t2i: images for --prompt; i2t: captions for --image; "
                       "joint: image-caption pairs; image / text: the marginals; i2t2i / "
                       "t2i2t: the chains. Writes OUT/samples.json, OUT/samples.png and one "
                       "PNG per generated image.")
    p.add_argument("--mode", choices=MODES, required=True, help="what to sample")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a caption (t2i, t2i2t); repeat for several")
    p.add_argument("--image", action="append", metavar="FILE",
                   help="an image file (i2t, i2t2i); repeat for several")
    p.add_argument("-n", "--num", type=int, default=4, metavar="N",
                   help="samples per prompt (t2i) or in total (joint, image, text) "
                   "(default: %(default)s)")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("-o", "--output", metavar="OUT", default="unidiffuser-samples",
                   help="output folder (default: %(default)s)")
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("evaluate", help="score every mode on held-out captioned digits",
                       description="On held-out captioned digits: t2i accuracy of a digit "
                       "classifier trained on real digits (and attribute agreement), i2t "
                       "caption accuracy (digit and attributes), joint-pair consistency and "
                       "the marginal class histograms against the data.")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("--split", choices=("val", "test"), default="test",
                   help="held-out split (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score the first N held-out digits only (default: all 360)")
    _sampling_args(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")

    add_demo_verb(sub, help="the tour demo", default_output="unidiffuser-demo",
                  quick_help="fewer samples (seconds)",
                  description="Sample every mode of the starter UniDiffuser on held-out "
                  "digits, next to the dedicated t2i / i2t models trained with the same "
                  "compute. Writes figures and prints the scores.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_commands(build_parser, "polydiff.apps.unidiffuser.commands", argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
