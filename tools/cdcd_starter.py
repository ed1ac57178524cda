#!/usr/bin/env python3
"""Train the cdcd starter weights with the app's own ``cdcd train`` and write the manifest.

Trains ``cdcd`` (sample-wise auxiliary contrastive term, inter-sample negatives) and
``vanilla`` with the same steps, batch and seed, scores both on the held-out test digits
(one digit per test label, 25 sampler jumps, seeds 100 and 101) and installs
``RUN/model`` as ``apps/cdcd/src/polydiff/apps/cdcd/weights/<name>/`` with
``weights/manifest.json``.

    python tools/cdcd_starter.py --steps 1200 --runs /tmp/cdcd-starter
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "apps/cdcd/src/polydiff/apps/cdcd/weights"
VARIANTS = {"cdcd": ["--variant", "sample", "--negatives", "inter"],
            "vanilla": ["--variant", "vanilla"]}
SEEDS = (100, 101)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--runs", type=Path, required=True)
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from polydiff.apps.cdcd.main import main as cdcd
    from polydiff.multimodal.cdcd import DigitJudge, load_cdcd, load_digit_tokens, score_digits

    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    splits = load_digit_tokens()
    judge = DigitJudge.fit(splits.train, splits.num_tokens)
    man: dict = {"train_commands": {}, "commit": commit,
                 "device": f"CPU ({platform.machine()}, 2-core shared, one torch thread)",
                 "wall_seconds": {}, "cpu_seconds": {}, "sampling_steps": 25,
                 "score_seeds": list(SEEDS), "held_out_split": "test",
                 "held_out_metrics": {}}
    for name, flags in VARIANTS.items():
        run = args.runs / name
        argv = ["train", "--task", "digits", *flags, "--steps", str(args.steps),
                "--batch-size", "32", "--seed", "0", "-o", str(run), "--overwrite", "--json"]
        tic, c0 = time.perf_counter(), time.process_time()
        if cdcd(argv) != 0:
            return 1
        man["wall_seconds"][name] = round(time.perf_counter() - tic, 1)
        man["cpu_seconds"][name] = round(time.process_time() - c0, 1)
        man["train_commands"][name] = "cdcd " + " ".join(
            a for a in argv[:-4]) + f" -o {name}"
        model = load_cdcd(run / "model")
        scores = [score_digits(model, splits.test, judge, steps=25, seed=s) for s in SEEDS]
        man["held_out_metrics"][name] = {
            k: float(np.mean([sc[k] for sc in scores])) for k in
            ("accuracy", "nn_distance", "level_tv")} | {
            "accuracy_per_seed": [sc["accuracy"] for sc in scores]}
        dest = WEIGHTS / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(run / "model", dest)
    man["real_test_accuracy"] = judge.accuracy(splits.test.tokens, splits.test.labels)
    (WEIGHTS / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    print(json.dumps(man, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
