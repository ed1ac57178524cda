#!/usr/bin/env python3
"""Install the diffusionnag starter weights from training runs and write their manifest.

Each run folder ``RUNS/<name>`` comes from ``diffusionnag train ... -o <name> --json`` (its
summary saved as ``RUNS/<name>.json``; optionally ``RUNS/<name>.time`` from ``/usr/bin/time
-v``). The run's ``model/`` is copied to the app's ``weights/<name>/`` and the manifest
records the exact command, the commit, the device, wall and CPU time, and the held-out
metrics of :func:`polydiff.apps.diffusionnag.workflow.rescore`.

    python tools/diffusionnag_starter.py --runs /path/to/runs --commit <sha>
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

from polydiff.apps.diffusionnag import workflow as wf


def _command(settings: dict) -> str:
    cmd = ["diffusionnag", "train", "--space", settings["space"], "--target",
           settings["target"]]
    if settings.get("heldout"):
        cmd += ["--heldout", settings["heldout"]]
    defaults = wf.DEFAULTS[(settings["space"], settings["target"])]
    if settings["steps"] != defaults["steps"]:
        cmd += ["--steps", str(settings["steps"])]
    return " ".join(cmd)


def _cpu_seconds(path: Path) -> float | None:
    if not path.is_file():
        return None
    total = 0.0
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith(("User time (seconds):", "System time (seconds):")):
            total += float(line.rsplit(":", 1)[1])
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="folder of diffusionnag train runs")
    p.add_argument("--commit", required=True, help="the commit the runs were trained at")
    p.add_argument("--device", default=f"cpu ({platform.processor() or platform.machine()}), "
                   "1 torch thread, shared 2-core machine")
    args = p.parse_args()
    runs = Path(args.runs)
    entries = {}
    for run in sorted(d for d in runs.iterdir() if (d / "model").is_dir()):
        name = run.name
        settings = json.loads((run / "train.json").read_text())
        summary = json.loads((runs / f"{name}.json").read_text())
        dest = wf.WEIGHTS / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(run / "model", dest)
        metrics = wf.rescore(name, dest)
        entries[name] = {
            "command": _command(settings) + f" -o {name}",
            "settings": settings, "commit": args.commit, "device": args.device,
            "wall_seconds": summary["seconds"],
            "cpu_seconds": _cpu_seconds(runs / f"{name}.time"),
            "parameters": summary["parameters"], "final_loss": summary["final_loss"],
            "metrics": metrics,
        }
        print(name, metrics, file=sys.stderr, flush=True)
    doc = {"about": "Starter weights of the diffusionnag app; 'metrics' are the held-out "
                    "scores of workflow.rescore, re-computed by tests/test_starter.py.",
           "weights": entries}
    wf.MANIFEST.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
