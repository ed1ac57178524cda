#!/usr/bin/env python3
"""ProDiff on held-out prompts of a real voice: quality and speed of every method x vocoder.

Methods (one voice, one encoder/variance adaptor recipe): ``teacher-4`` (4 DDIM steps on
ProDiff's VP grid), ``student-2`` and ``student-1`` (progressively distilled decoders),
``ddpm-50`` (ancestral DDPM, 50 steps, the teacher network) and ``regression`` (a
FastSpeech 2-style regression decoder of the same size, trained with the same steps, batch and
learning rate); vocoders: Griffin-Lim and the few-step diffusion vocoder.

Measured on the voice's held-out test prompts (recordings never seen in training): MCD after
DTW (dB), F0 RMSE (cents) and voicing error along the DTW path, utterance-length error (%) and
per-token duration MAE (ms) against the recording's monotonic alignment, and speed (seconds of
audio per second of compute, acoustic model + vocoder, on ``--threads`` CPU threads, default 2).
The DDIM methods (teacher-4, students) sample at the voice's default temperature (chosen on the
validation prompts, ``voice.json``) unless ``--temperature`` is given; ddpm-50 and the
regression decoder have none.

Budgets:

* ``--budget cpu`` (default): score an existing voice (``--voice``, default the starter voice
  shipped with the ``prodiff`` app, trained by ``prodiff train-teacher`` + ``prodiff distill``
  with the budget in its manifest);
* ``--train RUN`` trains a voice first with ``--set KEY=VALUE`` settings (the app's recipe);
* ``--budget gpu``: train the larger GPU recipe on CUDA into ``--train`` (default
  ``runs/prodiff-gpu``), then score on the CPU as above.

Targets (issue): student-2 MCD within 5 % of teacher-4's and below the regression decoder's
(each with the same vocoder); acoustic model + vocoder >= 24x faster than real time on 2 CPU
threads for the default model (student-2 + the voice's default vocoder).

    uv run python tools/bench/prodiff.py --json --out tools/bench/results/prodiff_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The GPU recipe: 2x the steps, 4x the frames per step of the starter voice (one H200,
#: about 3 minutes of training). The
#: model keeps the starter voice's sizes so its weights stay under the 8 MB of package data.
GPU_SET = ["device=cuda", "teacher_steps=1500", "distill_steps=400", "vocoder_steps=1500",
           "batch_size=32", "segment_frames=128"]


def _log(msg: str) -> None:
    print(f"[prodiff bench] {msg}", file=sys.stderr, flush=True)


def targets(summary: list[dict], default_vocoder: str) -> dict:
    """The issue's targets from the summary rows."""
    by = {(r["method"], r["vocoder"]): r for r in summary}
    out = {}
    for voc in sorted({r["vocoder"] for r in summary}):
        s2, t4, reg = by.get(("student-2", voc)), by.get(("teacher-4", voc)), \
            by.get(("regression", voc))
        if s2 and t4:
            ratio = s2["mcd_db"] / t4["mcd_db"]
            out[f"student2_vs_teacher4_mcd_ratio[{voc}]"] = round(ratio, 4)
            out[f"student2_within_5pct_of_teacher4[{voc}]"] = bool(ratio <= 1.05)
        if s2 and reg:
            out[f"student2_beats_regression_mcd[{voc}]"] = bool(s2["mcd_db"] < reg["mcd_db"])
    default = by.get(("student-2", default_vocoder))
    if default:
        out["default_model"] = f"student-2 + {default_vocoder}"
        out["default_speed_x"] = round(default["speed_x"], 1)
        out["default_at_least_24x_real_time"] = bool(default["speed_x"] >= 24.0)
    return out


def default_machine() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()}-core CPU, {gpu}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voice", help="voice folder (default: the prodiff app's starter voice)")
    ap.add_argument("--budget", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--train", metavar="RUN", help="train a voice into RUN first")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="recipe settings for --train")
    ap.add_argument("--max-prompts", type=int, default=24, help="held-out prompts (24)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for scoring (2)")
    ap.add_argument("--temperature", type=float,
                    help="sampling temperature of the DDIM methods (default: the voice's)")
    ap.add_argument("--speed-1thread", metavar="JSON",
                    help="the JSON of 'prodiff bench --threads 1 --json' (or a bench result "
                    "holding a speed_1thread block) to embed as speed_1thread")
    ap.add_argument("--export-corpus", metavar="DIR",
                    help="only write the (compact) corpus of the recipe's settings into the "
                    "cache layout under DIR (for a machine without network: POLYDIFF_CACHE=DIR)")
    ap.add_argument("--machine", help="describe the machine in the JSON (default: the "
                    "architecture, CPU count and GPU found)")
    ap.add_argument("--json", action="store_true", help="print the JSON result")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args(argv)


    from polydiff.apps.prodiff.commands import _heldout, load_voice
    from polydiff.core.cli import load_config
    from polydiff.speech.prodiff.evaluate import evaluate_voice, summarize
    from polydiff.speech.prodiff.recipe import VoiceSettings, distill_stage, train_teacher_stage

    if args.export_corpus:
        import dataclasses

        from polydiff.speech.prodiff.features import MelConfig
        from polydiff.speech.prodiff.recipe import load_corpus

        settings = load_config(VoiceSettings, None, list(args.set))
        corpus, _ = load_corpus(settings)
        corpus.info.setdefault("mel", dataclasses.asdict(MelConfig()))
        path = Path(args.export_corpus) / "prodiff" / f"corpus-{settings.corpus_key()}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        corpus.save(path, compact=True)
        _log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    tic = time.perf_counter()
    train_s = None
    voice_dir = args.voice
    if args.budget == "gpu" and args.train is None:
        args.train = "runs/prodiff-gpu"
    if args.train:
        sets = (GPU_SET if args.budget == "gpu" else []) + list(args.set)
        settings = load_config(VoiceSettings, None, sets)
        _log(f"training a voice into {args.train} with {sets}")
        t0 = time.perf_counter()
        train_teacher_stage(settings, args.train, progress=False)
        voice_dir = str(distill_stage(settings, args.train, progress=False))
        train_s = round(time.perf_counter() - t0, 1)
    voice = load_voice(voice_dir)
    voice.acoustic.cpu()
    test = _heldout(voice, "test")
    _log(f"scoring {min(args.max_prompts, len(test.items))} held-out prompts x "
         f"{voice.methods()} x {voice.vocoders()} on {args.threads} threads")
    temperature = voice.temperature if args.temperature is None else args.temperature
    rows = evaluate_voice(voice, test, max_prompts=args.max_prompts, threads=args.threads,
                          temperature=temperature)
    summary = summarize(rows)
    default_voc = voice.info.get("default_vocoder", "griffin-lim")
    result = {
        "bench": "prodiff", "budget": args.budget,
        "machine": args.machine or default_machine(),
        "voice": str(voice_dir or "starter voice"), "speaker": voice.info.get("speaker"),
        "language": voice.acoustic.config.language,
        "prompts": len({r["prompt"] for r in rows}), "threads": args.threads,
        "temperature": temperature,
        "train_seconds": train_s, "results": summary,
        "targets": targets(summary, default_voc),
        "seconds": round(time.perf_counter() - tic, 1),
        "notes": "MCD on DCT-of-log-mel cepstra c1..c24 (8 kHz, 80 mel bins), not SPTK's; "
                 "comparable within polydiff only. Wall times on a shared machine.",
    }
    if args.speed_1thread:
        speed = json.loads(Path(args.speed_1thread).read_text())
        speed = speed.get("speed_1thread", speed)
        result["speed_1thread"] = speed
        one = {(r["method"], r["vocoder"]): r for r in speed.get("results", [])}
        row = one.get(("student-2", default_voc))
        if row:
            result["targets"]["default_cpu_speed_x_1thread"] = row.get("cpu_speed_x")
            result["targets"]["default_wall_speed_x_1thread"] = row.get("speed_x")
    cols = ("method", "vocoder", "mcd_db", "f0_rmse_cents", "vde", "dur_err_pct",
            "phone_dur_mae_ms", "speed_x")
    print(" | ".join(cols), file=sys.stderr)
    for r in summary:
        print(" | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols),
              file=sys.stderr)
    print(json.dumps(result["targets"], indent=1), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
