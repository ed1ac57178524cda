"""The ``sgmse`` command: SGMSE+ speech enhancement (train, enhance, evaluate, bench, demo).

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+). The work is done by ``polydiff-speech``; this
module only parses arguments. It imports the standard library and
:mod:`polydiff.core.cli` only, so ``sgmse <verb> --help`` is instant; each verb imports
torch inside :mod:`polydiff.apps.sgmse.commands`.

Exit codes: 0 success, 2 bad input (one line ``sgmse: error: ...``; for a folder of files,
after processing the others), 1 an unexpected failure (with a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polydiff.core.cli import run_cli
from polydiff.core.samplers.registry import sampler_names

__all__ = ["PROG", "build_parser", "main"]

PROG = "sgmse"


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _common(p: argparse.ArgumentParser, *, example: str = "") -> None:
    if example:
        p.add_argument("--config", metavar="TOML", help="settings file (keys at top level)")
        p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                       help=f"override settings, e.g. --set {example}")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sgmse`` and its verbs."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="SGMSE+ score-based speech enhancement and dereverberation "
        "(Richter et al. 2023) and its predictive baseline: train on paired folders, enhance "
        "recordings, score them (PESQ, ESTOI, SI-SDR), benchmark speed and quality.",
        epilog="Data layout: ROOT/{train,valid,test}/{clean,noisy}/NAME.wav (denoising) or "
        "ROOT/{split}/{anechoic,reverb}/NAME.wav (dereverberation). Set POLYDIFF_DEBUG=1 to "
        "see tracebacks for input errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train SGMSE+ (or the predictive baseline) on a folder",
                       description="Train SGMSE+ or its predictive baseline on paired "
                       "folders. Writes a run folder (config.json, stats.jsonl, log.txt, "
                       "checkpoints/, sgmse.toml) and the EMA weights in OUT/model for "
                       "'sgmse enhance --model OUT'.")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root folder")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    p.add_argument("--preset", choices=("tiny", "small", "paper"),
                   help="network size (default: small)")
    p.add_argument("--objective", choices=("score", "epsilon", "data", "edm"),
                   help="training objective of the diffusion model (default: score, "
                   "SGMSE+'s; edm: EDM preconditioning, better for small networks)")
    p.add_argument("--predictive", action="store_true",
                   help="train the predictive baseline instead of the diffusion model")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: 10000)")
    p.add_argument("--batch-size", type=int, metavar="B", help="examples per step (default 8)")
    p.add_argument("--lr", type=float, metavar="LR", help="learning rate (default: 1e-4)")
    p.add_argument("--segment-frames", type=int, metavar="F",
                   help="STFT frames per example (default: 256 = 2.04 s at 16 kHz)")
    p.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: 0)")
    p.add_argument("--center", choices=("noisy", "predictive"),
                   help="what the diffusion process reverts to and is conditioned on: the "
                   "noisy input (SGMSE+, default) or a predictive model's estimate "
                   "(StoRM-style; needs --center-on)")
    p.add_argument("--center-on", metavar="RUN",
                   help="the predictive baseline (run or model folder) of --center predictive")
    p.add_argument("--init", metavar="RUN",
                   help="start from these weights (model folder, or a run folder: its model/ "
                   "or its latest checkpoint's EMA weights)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop at this wall-clock time (the step reached is checkpointed and "
                   "reported; --resume continues towards --steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN from its newest intact checkpoint (its saved "
                   "sgmse.toml is the base settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the run in RUN over (deletes its checkpoints, logs, model and "
                   "settings; other files stay)")
    _common(p, example="lr=3e-4 network.base_channels=48")

    p = sub.add_parser("corpus", help="build the real-speech corpus (fetched once)",
                       description="Build a denoising corpus of real recorded speech from "
                       "Debian's voice-prompt packages (fetched once into the cache): splits by "
                       "speaker (train: es, it, it; validation: fr; test: ru, a language no "
                       "training speaker speaks), real babble, coloured, non-stationary, "
                       "speech-shaped and music-like noise, reverberation in training. Writes "
                       "OUT/sources/ (a compact pack that training mixes on the fly), "
                       "OUT/{valid,test}/{clean,noisy}/ at 0, 5 and 10 dB and manifest.json; "
                       "'sgmse train --data OUT' trains on it.")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="corpus folder")
    p.add_argument("--sample-rate", type=int, choices=(8000, 16000), default=8000,
                   help="corpus rate (default: 8000, the recordings' own)")
    p.add_argument("--sources", metavar="DIR",
                   help="reuse this sources pack (OUT/sources of another corpus) instead of "
                   "fetching the packages")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    _common(p, example="n_test=40 eval_snrs=[0,5,10,15]")

    p = sub.add_parser("enhance", help="enhance a file or every audio file of a folder",
                       description="Enhance INPUT (a WAV/FLAC/OGG file or a folder of them) "
                       "with a trained model; outputs keep the input's name and sample rate. "
                       "Multi-channel input is averaged to mono (the output is mono); other "
                       "sample rates are resampled to the model's and back. A file that "
                       "cannot be used (not audio, empty, silent, NaN samples, shorter than "
                       "one STFT frame) is reported on one line; in a folder the others are "
                       "still processed and the exit code is 2 at the end. Outputs are "
                       "written atomically (never half-written).")
    p.add_argument("input", metavar="INPUT", help="noisy audio file or folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (for a file input, if it ends in .wav/.flac/.ogg) or "
                   "folder")
    p.add_argument("--model", metavar="DIR",
                   help="a run folder of 'sgmse train', its model/ folder, or a folder with "
                   "sgmse/ and predictive/ (default: the starter weights shipped with sgmse, "
                   "8 kHz, with their recommended sampler settings)")
    p.add_argument("--predictive", metavar="DIR",
                   help="a predictive model (run folder) whose output starts --sampler storm")
    p.add_argument("--sampler", metavar="NAME",
                   help="pc (default for a model folder), storm (predictive estimate, then "
                   "a base sampler from --t-start), or another sampler of core's registry: "
                   + ", ".join(n for n in sampler_names() if n != "pc"))
    p.add_argument("--t-start", type=float, metavar="T",
                   help="start the reverse process at this time in (0, 1] (storm: 0.5)")
    p.add_argument("--storm-base", metavar="NAME",
                   help="the sampler storm runs from --t-start (pc, or euler, dpmpp_2m, ...)")
    p.add_argument("--steps", type=int, metavar="N", help="reverse steps (default: 30)")
    p.add_argument("--snr", type=float, metavar="R", help="PC corrector step size r (0.5)")
    p.add_argument("--corrector-steps", type=int, metavar="K",
                   help="PC corrector steps per step (default: 1)")
    p.add_argument("--chunk-seconds", type=float, metavar="S",
                   help="process files in chunks of S seconds, cross-faded (default: 6; "
                   "memory stays bounded whatever the length; --set chunk_seconds=none "
                   "for whole files)")
    p.add_argument("--overlap-seconds", type=float, metavar="S",
                   help="chunk overlap (default: 0.5)")
    p.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, ...")
    p.add_argument("--seed", type=int, metavar="S", help="sampling seed (default: 0)")
    _common(p, example="sampler=ode overlap_seconds=0.5")

    p = sub.add_parser("evaluate", help="score enhanced files: PESQ, ESTOI, SI-SDR",
                       description="Score every file of --enhanced against the same-named "
                       "file of --clean (and the --noisy input, for the improvement); writes "
                       "metrics.csv and metrics.json after every file. A file that cannot be "
                       "scored (unreadable, silent, too short for PESQ/ESTOI, a length "
                       "mismatch) is reported on one line and left out of the metrics; the "
                       "exit code is then 2.")
    p.add_argument("--clean", required=True, metavar="DIR", help="clean reference folder")
    p.add_argument("--enhanced", required=True, metavar="DIR", help="enhanced folder")
    p.add_argument("--noisy", metavar="DIR", help="unprocessed input folder (optional)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where metrics.csv/json go (default: the enhanced folder)")
    p.add_argument("--pesq", choices=("auto", "nb", "wb"), default="auto",
                   help="PESQ mode: nb (narrow-band, P.862), wb (wide-band, P.862.2; refused "
                   "for material below 16 kHz), auto (default: nb below 16 kHz, else wb)")
    p.add_argument("--align", action="store_true",
                   help="zero-pad or crop an estimate whose length differs from its "
                   "reference's (default: such a file is an error)")
    _common(p)

    p = sub.add_parser("bench", help="real-time factor (and quality) vs number of steps",
                       description="Real-time factor of a model at several step counts on "
                       "SECONDS of audio; with --data, also PESQ/ESTOI/SI-SDR on the test "
                       "split against the noisy input.")
    p.add_argument("--model", metavar="DIR",
                   help="run folder, model folder or sgmse/+predictive/ folder (default: the "
                   "starter weights)")
    p.add_argument("--predictive", metavar="DIR",
                   help="predictive model for --sampler storm (default: the pair's)")
    p.add_argument("--data", metavar="ROOT", help="dataset root (scores its test split)")
    p.add_argument("--split", default="test", metavar="NAME", help="split (default: test)")
    p.add_argument("--steps", type=_positive_int_list, default=[5, 10, 30], metavar="N,N,...",
                   help="step counts (default: 5,10,30)")
    p.add_argument("--sampler", default="pc", metavar="NAME", help="sampler (default: pc)")
    p.add_argument("--seconds", type=float, default=4.0, metavar="S",
                   help="audio length for the timing (default: 4)")
    p.add_argument("--max-files", type=int, metavar="N", help="score at most N test files")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, ...")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the JSON result here")
    _common(p)

    p = sub.add_parser("demo", help="train a tiny model on synthetic speech and report",
                       description="The tour demo: build an offline synthetic corpus "
                       "(espeak-ng voices, held-out voices and noise types in test), train "
                       "SGMSE+ and the predictive baseline briefly on the CPU (cached after "
                       "the first run), enhance held-out files and report PESQ, ESTOI, "
                       "SI-SDR and real-time factors with spectrograms and audio.")
    p.add_argument("-o", "--output", default="sgmse-demo", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smallest settings (seconds)")
    _common(p)
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from polydiff.apps.sgmse import commands

    return {"train": commands.cmd_train, "corpus": commands.cmd_corpus,
            "enhance": commands.cmd_enhance,
            "evaluate": commands.cmd_evaluate, "bench": commands.cmd_bench,
            "demo": commands.cmd_demo}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
