#!/usr/bin/env python3
"""Package a trained ``prodiff`` run as the app's starter voice (maintainer tool).

    uv run python tools/prodiff_starter.py RUN [--bench JSON] [--commit SHA] [--device TEXT]

1. chooses the default vocoder of the voice on its *validation* prompts (the lower MCD of the
   2-step student through Griffin-Lim or the diffusion vocoder);
2. writes ``apps/prodiff/src/polydiff/apps/prodiff/weights/voice`` in float16 (refusing more
   than 8 MB of weights);
3. copies the recordings of the 3 shortest *test* prompts of at least 1.5 s to
   ``weights/heldout`` with their texts and scores the shipped voice on them
   (``heldout_slice``: MCD of student-2 and of the regression decoder through Griffin-Lim,
   seed 0; the app's test re-scores these);
4. writes ``weights/manifest.json``: the exact train and distill commands, commit, device,
   wall time, settings, the held-out metrics (from ``--bench``, the JSON of
   ``tools/bench/prodiff.py`` on the full test split) and the vocoder choice.
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
    ap.add_argument("run")
    ap.add_argument("--bench", help="JSON of tools/bench/prodiff.py on this voice")
    ap.add_argument("--commit", default="", help="commit the voice was trained at")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-command", default="")
    ap.add_argument("--distill-command", default="")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from polydiff.core.utils import atomic_write
    from polydiff.speech.audio import write_audio
    from polydiff.speech.prodiff.evaluate import evaluate_voice, summarize
    from polydiff.speech.prodiff.features import compare_dtw
    from polydiff.speech.prodiff.recipe import read_settings, split_corpus
    from polydiff.speech.prodiff.synth import Voice

    torch.set_num_threads(1)
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
    index, slice_scores = [], {}
    for i in order:
        name = test.names[i]
        fname = name.replace("/", "_") + ".wav"
        ref = test.items[i]["wave"].numpy()
        write_audio(held / fname, ref, shipped.sample_rate)
        index.append({"name": name, "text": texts[name], "file": fname})
        slice_scores[name] = {}
        for method in ("student-2", "regression"):
            toks = shipped.tokens(texts[name])
            wave = np.concatenate([shipped.vocode(shipped.mel(t, method, seed=0)[0],
                                                  "griffin-lim") for _, t in toks])
            from polydiff.speech.audio import read_audio

            ref16, _ = read_audio(held / fname, sample_rate=shipped.sample_rate)
            slice_scores[name][method] = round(
                compare_dtw(ref16, wave, shipped.mel_config)["mcd_db"], 4)
    atomic_write(held / "prompts.json", json.dumps(index, indent=2, ensure_ascii=False) + "\n")

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
        "heldout_slice": slice_scores,
        "heldout_metrics": bench["results"] if bench else None,
        "heldout_targets": bench["targets"] if bench else None,
    }
    atomic_write(WEIGHTS / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({"weights_mb": round(size / 2**20, 2), "default_vocoder": choice["vocoder"],
                      "heldout_slice": slice_scores}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
