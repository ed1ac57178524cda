#!/usr/bin/env python3
"""Package a trained ``prodiff`` run as the app's starter voice (maintainer tool).

    uv run python tools/prodiff_starter.py RUN [--bench JSON] [--commit SHA] [--device TEXT]
    uv run python tools/prodiff_starter.py --retune-temperature   # steps 2b and 3 only

1. chooses the default vocoder of the voice on its *validation* prompts (the lower MCD of the
   2-step student through Griffin-Lim or the diffusion vocoder);
2. writes ``apps/prodiff/src/polydiff/apps/prodiff/weights/voice`` in float16 (refusing more
   than 8 MB of weights);
2b. chooses the default sampling temperature of the shipped voice on its *validation* prompts
   (the lowest MCD of the 2-step student through the default vocoder over ``--grid``; the
   4-step teacher scored alongside for reference) and writes it to the voice's ``voice.json``;
3. copies the recordings of the 3 shortest *test* prompts of at least 1.5 s to
   ``weights/heldout`` with their texts and scores the shipped voice on them
   (``heldout_slice``: MCD of student-2 and of the regression decoder through Griffin-Lim,
   seed 0; the app's test re-scores these);
4. writes ``weights/manifest.json``: the exact train and distill commands, commit, device,
   wall time, settings, the held-out metrics (from ``--bench``, the JSON of
   ``tools/bench/prodiff.py`` on the full test split), the vocoder and temperature choices.

``--retune-temperature`` redoes step 2b on the shipped voice (no run folder, no retraining),
re-scores the shipped held-out slice with the new default (step 3's scores) and updates the
manifest's ``default_temperature`` and ``heldout_slice`` (``--bench`` also replaces its
held-out metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "apps" / "prodiff" / "src" / "polydiff" / "apps" / "prodiff" / "weights"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--retune-temperature", action="store_true",
                    help="only re-choose the shipped voice's sampling temperature")
    ap.add_argument("--grid", default="0,0.25,0.5,0.75,1",
                    help="temperatures to try (comma-separated)")
    ap.add_argument("--bench", help="JSON of tools/bench/prodiff.py on this voice")
    ap.add_argument("--commit", default="", help="commit the voice was trained at")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-command", default="")
    ap.add_argument("--distill-command", default="")
    args = ap.parse_args(argv)

    import torch

    from polydiff.core.utils import atomic_write
    from polydiff.speech.audio import write_audio
    from polydiff.speech.prodiff.evaluate import evaluate_voice, summarize
    from polydiff.speech.prodiff.recipe import read_settings, split_corpus
    from polydiff.speech.prodiff.synth import Voice

    torch.set_num_threads(1)
    grid = [float(v) for v in args.grid.split(",") if v.strip()]
    if args.retune_temperature:
        return retune(grid, args.bench)
    if not args.run:
        ap.error("RUN is required (or --retune-temperature)")
    run = Path(args.run)
    settings = read_settings(run)
    voice = Voice.load(run / "voice")
    valid = split_corpus(settings, "valid")
    rows = summarize(evaluate_voice(voice, valid, methods=["student-2"], threads=1))
    choice = min(rows, key=lambda r: r["mcd_db"])
    voice.info["default_vocoder"] = choice["vocoder"]
    out = WEIGHTS / "voice"
    if out.exists():
        shutil.rmtree(out)
    voice.save(out, half=True)
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    if size > 8 * 2**20:
        raise SystemExit(f"starter weights are {size / 2**20:.2f} MB > 8 MB")
    shipped = Voice.load(out)
    temp = choose_temperature(shipped, valid, grid)

    test = split_corpus(settings, "test")
    def seconds(i: int) -> float:
        return test.items[i]["wave"].numel() / shipped.sample_rate

    # the 3 shortest test prompts of at least 1.5 s (single words say little)
    order = sorted((i for i in range(len(test.items)) if seconds(i) >= 1.5), key=seconds)[:3]
    held = WEIGHTS / "heldout"
    if held.exists():
        shutil.rmtree(held)
    held.mkdir(parents=True)
    from polydiff.speech.realspeech import prompts

    texts = {p.name: p.text for p in prompts([settings.speaker], with_text=True)}
    index = []
    for i in order:
        name = test.names[i]
        fname = name.replace("/", "_") + ".wav"
        write_audio(held / fname, test.items[i]["wave"].numpy(), shipped.sample_rate)
        index.append({"name": name, "text": texts[name], "file": fname})
    atomic_write(held / "prompts.json", json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    slice_scores = score_slice(shipped)

    timing = {}
    for part in ("train", "distill"):
        f = run.parent / f"{run.name}-{part}.json"
        if f.is_file():
            timing[part] = json.loads(f.read_text()).get("seconds")
    bench = json.loads(Path(args.bench).read_text()) if args.bench else None
    manifest = {
        "voice": "es_MX_f_Allison (Debian asterisk-core-sounds-es, CC BY-SA 3.0), "
                 "read with espeak-ng's es-419 phonemes",
        "train_command": args.train_command, "distill_command": args.distill_command,
        "commit": args.commit, "device": args.device,
        "wall_time_s": {**timing, "total": sum(v for v in timing.values() if v)},
        "weights_bytes": size, "dtype": "float16",
        "settings": json.loads((run / "settings.json").read_text()),
        "default_vocoder": {"choice": choice["vocoder"], "validation": rows},
        "default_temperature": temp,
        "heldout_slice": slice_scores,
        "heldout_metrics": bench["results"] if bench else None,
        "heldout_targets": bench["targets"] if bench else None,
    }
    atomic_write(WEIGHTS / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({"weights_mb": round(size / 2**20, 2), "default_vocoder": choice["vocoder"],
                      "default_temperature": temp["choice"], "heldout_slice": slice_scores},
                     indent=2))
    return 0


def choose_temperature(voice, valid, grid: list[float]) -> dict:
    """Step 2b: tune on ``valid`` (the validation prompts), store the choice in the shipped
    ``voice.json``; returns the manifest's ``default_temperature`` entry."""
    from polydiff.core.utils import atomic_write
    from polydiff.speech.prodiff.evaluate import tune_temperature

    vocoder = voice.info.get("default_vocoder", "griffin-lim")
    res = tune_temperature(voice, valid, grid=grid, vocoder=vocoder, threads=1)
    voice.info["temperature"] = res["choice"]
    atomic_write(WEIGHTS / "voice" / "voice.json",
                 json.dumps(voice.info, indent=2, sort_keys=True) + "\n")
    for r in res["table"]:
        print(f"T={r['temperature']:<5} {r['method']:<10} MCD {r['mcd_db']:.3f} dB  "
              f"F0 {r['f0_rmse_cents']:.1f} c  VDE {r['vde']:.3f}", file=sys.stderr)
    return {"choice": res["choice"], "split": "valid", "prompts": len(valid.items),
            "chosen_by": f"lowest mean MCD of {res['method']} + {res['vocoder']}",
            "grid": grid, "validation": res["table"]}


def score_slice(voice) -> dict:
    """Step 3's scores: MCD of student-2 and regression through Griffin-Lim (seed 0, the
    voice's default temperature) on the shipped held-out recordings."""
    import numpy as np

    from polydiff.speech.audio import read_audio
    from polydiff.speech.prodiff.features import compare_dtw

    index = json.loads((WEIGHTS / "heldout" / "prompts.json").read_text())
    scores: dict = {}
    for p in index:
        ref, _ = read_audio(WEIGHTS / "heldout" / p["file"], sample_rate=voice.sample_rate)
        scores[p["name"]] = {}
        for method in ("student-2", "regression"):
            toks = voice.tokens(p["text"])
            wave = np.concatenate([voice.vocode(voice.mel(t, method, seed=0)[0], "griffin-lim")
                                   for _, t in toks])
            scores[p["name"]][method] = round(
                compare_dtw(ref, wave, voice.mel_config)["mcd_db"], 4)
    return scores


def retune(grid: list[float], bench: str | None) -> int:
    """``--retune-temperature``: step 2b (and 3's scores) on the shipped voice."""
    from polydiff.core.utils import atomic_write
    from polydiff.speech.prodiff.recipe import VoiceSettings, split_corpus
    from polydiff.speech.prodiff.synth import Voice

    voice = Voice.load(WEIGHTS / "voice")
    known = set(VoiceSettings.__dataclass_fields__)
    settings = VoiceSettings(**{k: v for k, v in voice.info["settings"].items() if k in known})
    valid = split_corpus(settings, "valid")
    temp = choose_temperature(voice, valid, grid)
    voice = Voice.load(WEIGHTS / "voice")  # as shipped, with the new default
    manifest = json.loads((WEIGHTS / "manifest.json").read_text())
    manifest["default_temperature"] = temp
    manifest["heldout_slice"] = score_slice(voice)
    if bench:
        data = json.loads(Path(bench).read_text())
        manifest["heldout_metrics"] = data["results"]
        manifest["heldout_targets"] = data["targets"]
    atomic_write(WEIGHTS / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({"default_temperature": temp["choice"],
                      "heldout_slice": manifest["heldout_slice"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
