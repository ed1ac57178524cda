"""The ``prodiff`` command: fast diffusion text-to-speech (train, distil, speak, score, demo).

Huang et al. (2022), "ProDiff: Progressive Fast Diffusion Model for High-Quality
Text-to-Speech". The work is done by ``polydiff-speech`` (:mod:`polydiff.speech.prodiff`);
this module only parses arguments. It imports the standard library and
:mod:`polydiff.core.cli` only, so ``prodiff <verb> --help`` is instant; each verb imports
torch inside :mod:`polydiff.apps.prodiff.commands`.

Exit codes: 0 success, 2 bad input (one line ``prodiff: error: ...``), 1 an unexpected failure
(with a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import run_cli

__all__ = ["PROG", "build_parser", "main"]

PROG = "prodiff"
METHODS = ("student-2", "student-1", "teacher-4", "ddpm-50", "regression")
VOCODERS = ("griffin-lim", "diffusion")


def _csv(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        vals = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if not vals or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of "
                                             f"{', '.join(choices)}, got {text!r}")
        return vals
    return parse


def _voice(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voice", metavar="DIR", help="a voice folder (RUN/voice of 'prodiff "
                   "distill', or a run folder); default: the starter voice shipped with the app")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")


def _temperature(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, metavar="T",
                   help="sampling temperature of the DDIM methods (teacher-4, students): the "
                   "scale of their initial noise, >= 0; 1 is the plain sampler, 0 a "
                   "deterministic start from zero (default: the voice's, see voice.json)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``prodiff`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="ProDiff fast diffusion text-to-speech (Huang et al. 2022): "
        "phonemes from espeak-ng for any language it speaks, a FastSpeech 2-style encoder "
        "and variance adaptor, an x0-predicting WaveNet decoder distilled from 4 to 2 and 1 "
        "sampling steps, Griffin-Lim or a few-step diffusion vocoder.",
        epilog="Default voice: a real Mexican-Spanish speaker (Debian's voice prompts), "
        "8 kHz. Set POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train-teacher", help="train the teacher (and baseline, vocoder)",
                       description="Stage 1 of a voice: build the corpus (real prompts of "
                       "--speaker, a folder in the LJSpeech layout, or espeak-ng formant "
                       "speech), align it by monotonic alignment search, and train the 4-step "
                       "teacher, the regression baseline of the same size and budget, and the "
                       "diffusion vocoder. Writes RUN/settings.json and RUN/{teacher,"
                       "regression,vocoder}/ (each with checkpoints/ and model/).")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    p.add_argument("--speaker", metavar="NAME", help="realspeech speaker (default "
                   "es_MX_f_Allison), or 'formant' for espeak-ng speech")
    p.add_argument("--language", metavar="CODE", help="espeak-ng language of the texts "
                   "(default es-419)")
    p.add_argument("--ljspeech", metavar="DIR", help="train on a folder in the LJSpeech layout "
                   "(metadata.csv + wavs/) instead")
    p.add_argument("--steps", type=int, metavar="N", help="teacher (and baseline) steps")
    p.add_argument("--vocoder-steps", type=int, metavar="N", help="vocoder steps")
    p.add_argument("--batch-size", type=int, metavar="B", help="utterances per step (16)")
    p.add_argument("--lr", type=float, metavar="LR", help="learning rate (1e-3)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda, ...")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (0)")
    p.add_argument("--no-baseline", action="store_true", help="skip the regression baseline")
    p.add_argument("--no-vocoder", action="store_true", help="skip the diffusion vocoder")
    p.add_argument("--resume", action="store_true", help="continue RUN from its checkpoints "
                   "(its settings.json is the base settings)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override settings, e.g. --set hidden=96 denoiser_layers=8")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("distill", help="distil the teacher to 2 and 1 steps; write RUN/voice",
                       description="Stage 2: progressive distillation (Salimans & Ho 2022, as "
                       "ProDiff uses it) of the teacher's decoder from 4 DDIM steps to 2, then "
                       "1 (RUN/distill/4to2, 2to1), then the voice folder RUN/voice.")
    p.add_argument("run", metavar="RUN", help="the run folder of train-teacher")
    p.add_argument("--steps", type=int, metavar="N", help="steps per round (1000)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("synthesize", help="speak text into a WAV file (or lines -> folder)",
                       description="Speak TEXT into OUT.wav, or every line of --file into "
                       "OUT/line-0001.wav, ... Long text is split into sentences (no cap on "
                       "its length). Numbers and abbreviations are read out.")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to speak")
    p.add_argument("-f", "--file", metavar="TXT", help="a UTF-8 text file: one output per line")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .wav file (TEXT) or folder (--file)")
    _voice(p)
    p.add_argument("--method", choices=METHODS, default="student-2",
                   help="sampling method (default: %(default)s)")
    p.add_argument("--vocoder", choices=VOCODERS, help="vocoder (default: the voice's)")
    p.add_argument("--pace", type=float, default=1.0, metavar="X",
                   help="duration scale, >1 slower (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (0)")
    _temperature(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("evaluate", help="score a voice on held-out recordings",
                       description="Synthesise the voice's held-out prompts (never seen in "
                       "training) and score them against the recordings: MCD after DTW, F0 "
                       "RMSE (cents), voicing error, duration errors and real-time factor.")
    _voice(p)
    p.add_argument("--methods", type=_csv(METHODS), metavar="M,M",
                   help="methods (default: all the voice has)")
    p.add_argument("--vocoders", type=_csv(VOCODERS), metavar="V,V",
                   help="vocoders (default: all the voice has)")
    p.add_argument("--max-prompts", type=int, metavar="N", help="score at most N prompts")
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="held-out split (default: test)")
    _temperature(p)
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON result here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("bench", help="real-time factor of every method and vocoder",
                       description="Speed on SENTENCES sentences of the held-out prompts' "
                       "text, on --threads CPU threads (default 2): seconds of audio per "
                       "second of compute, acoustic model alone and with each vocoder (median of "
                       "--repeats; speed_x from wall time, cpu_speed_x from the process's CPU "
                       "time, which a shared machine does not inflate).")
    _voice(p)
    p.add_argument("--methods", type=_csv(METHODS), metavar="M,M",
                   help="methods (default: all the voice has)")
    p.add_argument("--vocoders", type=_csv(VOCODERS), metavar="V,V",
                   help="vocoders (default: all the voice has)")
    p.add_argument("--sentences", type=int, default=8, metavar="N",
                   help="sentences to time (default 8)")
    p.add_argument("--repeats", type=int, default=3, metavar="R", help="timing repeats (3)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON result here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("demo", help="speak and score with the starter voice",
                       description="The tour demo: the starter voice reads held-out prompts "
                       "with the teacher (4 steps), the students (2 and 1 steps) and the "
                       "regression baseline; audio, mel figure, MCD and speed.")
    p.add_argument("-o", "--output", default="prodiff-demo", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer prompts and methods (seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from polydiff.apps.prodiff import commands

    return {"train-teacher": commands.cmd_train_teacher, "distill": commands.cmd_distill,
            "synthesize": commands.cmd_synthesize, "evaluate": commands.cmd_evaluate,
            "bench": commands.cmd_bench, "demo": commands.cmd_demo}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
