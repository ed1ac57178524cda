"""The ``cdcd`` command: Conditional Discrete Contrastive Diffusion on token data.

CDCD (Zhu et al. 2022, "Discrete Contrastive Diffusion for Cross-Modal Music and Image
Generation") trains a discrete (mask-and-replace) diffusion model with an extra contrastive
term that raises the mutual information between the condition and the output: the model's
likelihood of the real sample under its condition must beat that of negatives (other
samples of the batch, or the sample's own shuffled chunks).

Only the standard library and core's CLI helpers are imported here, so ``cdcd --help`` is
instant; each verb imports torch inside :mod:`polydiff.apps.cdcd.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import add_config_args, add_demo_verb, run_commands

__all__ = ["build_parser", "main"]

PROG = "cdcd"
_MODEL_HELP = ("model folder (from 'cdcd train': RUN or RUN/model); default: the starter "
               "CDCD weights shipped with the app (digits)")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CDCD (or vanilla) discrete diffusion model",
                       description="Train on class-conditional digit tokens (scikit-learn's "
                       "8x8 digits at 4 grey levels) with the polydiff training loop (EMA, "
                       "safetensors checkpoints, resumable). Writes OUT/model/ (the model "
                       "folder), OUT/train.toml, the engine's stats.jsonl / checkpoints and "
                       "a loss curve.")
    p.add_argument("--task", choices=("digits", "music"), default="digits",
                   help="digits (class -> digit tokens) or music (rhythm track -> melody, Bach "
                   "chorale sopranos from music21's corpus) (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="run folder")
    p.add_argument("--variant", choices=("vanilla", "step", "sample"), default=None,
                   help="vanilla (L_vb + aux L_x0), step (step-wise parallel contrastive "
                   "term) or sample (sample-wise auxiliary contrastive term) "
                   "(default: sample)")
    p.add_argument("--negatives", choices=("inter", "intra", "both"), default=None,
                   help="inter (other samples of the batch), intra (the sample's own rows "
                   "shuffled) or both (default: inter)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: 600)")
    p.add_argument("--batch-size", type=int, metavar="B", help="sequences per step (default: 32)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUT from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start the run in OUT over")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_args(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``cdcd`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="CDCD: discrete diffusion with a contrastive term that "
        "strengthens the condition -> output correspondence (Zhu et al. 2022).",
        epilog="Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _train_parser(sub)

    p = sub.add_parser("sample", help="generate digits of given classes (or melodies)",
                       description="Digit models: generate -n digits per --digit; writes "
                       "OUT/samples.png, OUT/samples.json (tokens per digit) and one PNG per "
                       "digit. Music models: one melody (MIDI) for each of the first -n "
                       "held-out rhythm tracks, with beat hit and coverage.")
    p.add_argument("--digit", type=int, action="append", metavar="D",
                   help="class 0-9 to generate; repeat for several (default: 0..9)")
    p.add_argument("-n", "--num", type=int, default=4, metavar="N",
                   help="samples per digit (default: %(default)s)")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("-o", "--output", metavar="OUT", default="cdcd-samples",
                   help="output folder (default: %(default)s)")
    p.add_argument("--sample-steps", type=int, default=25, metavar="N",
                   help="sampler jumps (default: %(default)s; the model's T at most)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("evaluate", help="score a model on held-out digits (or rhythms)",
                       description="One generated digit per held-out label: accuracy of a "
                       "digit classifier trained on real digits (correspondence), distance "
                       "to the nearest real digit and grey-level histogram distance "
                       "(quality). Music models: beat hit and coverage of melodies written "
                       "for held-out rhythm tracks, pitch-class histogram distance.")
    p.add_argument("--model", metavar="DIR", help=_MODEL_HELP)
    p.add_argument("--split", choices=("val", "test"), default="test",
                   help="held-out split (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score the first N held-out digits only (default: all)")
    p.add_argument("--sample-steps", type=int, default=25, metavar="N",
                   help="sampler jumps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")

    add_demo_verb(sub, help="the tour demo", default_output="cdcd-demo",
                  quick_help="fewer digits and sampler steps (seconds)",
                  description="Generate held-out digit classes with the starter CDCD model "
                  "and the vanilla model trained with the same steps; writes a figure and "
                  "prints correspondence and quality side by side.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 ok, 2 bad input (one line on stderr)."""
    return run_commands(build_parser, "polydiff.apps.cdcd.commands", argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
