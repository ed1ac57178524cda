#!/usr/bin/env python3
"""Install the diffusionnag starter weights from training runs and write their manifest.

Each run folder ``RUNS/<name>`` comes from ``diffusionnag train ... -o <name> --json`` (its
summary saved as ``RUNS/<name>.json``; optionally ``RUNS/<name>.time`` from ``/usr/bin/time
-v``; optionally ``RUNS/<name>.commit``, the commit the run was trained at when it differs
from ``--commit``). The run's ``model/`` is copied to the app's ``weights/<name>/`` and the
manifest records the exact command, the commit, the device, the training wall time (summed
over the run's segments when it was resumed: ``stats.jsonl`` restarts its clock at each
resume), the number of processes, the CPU time (only for runs trained in one process; the
``/usr/bin/time`` file covers the last process only) and the held-out metrics of
:func:`polydiff.apps.diffusionnag.workflow.rescore`.

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


def _segments(stats: Path) -> list[float]:
    """Training seconds of each process that trained the run (the clock in ``stats.jsonl``
    restarts at every resume)."""
    segments: list[float] = []
    last = None
    for line in stats.read_text().splitlines():
        t = float(json.loads(line)["time"])
        if last is None or t < last:
            segments.append(t)
        else:
            segments[-1] = t
        last = t
    return segments


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
        segments = _segments(run / "stats.jsonl")
        # every process that trained (or, resumed at the last step, only exported) the run
        processes = sum(" steps from step " in line
                        for line in (run / "log.txt").read_text().splitlines())
        commit_file = runs / f"{name}.commit"
        commit = commit_file.read_text().strip() if commit_file.is_file() else args.commit
        entries[name] = {
            "command": _command(settings) + f" -o {name}",
            "settings": settings, "commit": commit, "device": args.device,
            "wall_seconds": round(sum(segments), 1),
            "processes": processes,
            "cpu_seconds": _cpu_seconds(runs / f"{name}.time") if processes == 1 else None,
            "parameters": summary["parameters"], "final_loss": summary["final_loss"],
            "metrics": metrics,
        }
        print(name, metrics, file=sys.stderr, flush=True)
    doc = {"about": "Starter weights of the diffusionnag app; 'metrics' are the held-out "
                    "scores of workflow.rescore, re-computed by tests/test_starter.py. Wall "
                    "times are training seconds on a 2-core machine shared with several other "
                    "jobs (a training process often got 10-25% of one core); CPU seconds "
                    "(user + system, whole process) are the better cost measure where given.",
           "weights": entries}
    wf.MANIFEST.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
