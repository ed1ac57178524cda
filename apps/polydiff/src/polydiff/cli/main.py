"""The umbrella ``polydiff`` command.

``polydiff list`` shows the installed apps (entry-point group ``polydiff.apps``);
``polydiff tour`` runs every app's demo, each in its own folder, and writes one
self-contained HTML report. Only the standard library is imported until a command runs,
so ``polydiff --help`` is instant.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polydiff.core.cli import (
    AppEntry,
    CLIError,
    DemoReport,
    discover_apps,
    emit,
    run_cli,
)

__all__ = ["build_parser", "main", "run_tour"]

PROG = "polydiff"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("polydiff-cli", "polydiff-core"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return f"{PROG} {parts[0].split()[-1]} ({', '.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``polydiff`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="polydiff: one diffusion engine, many domains. List the "
        "installed apps, or run all their demos as a tour with an HTML report.",
        epilog="Apps register under the entry-point group 'polydiff.apps'. Set "
        "POLYDIFF_DEBUG=1 to see tracebacks for input errors.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_list = sub.add_parser("list", help="list the installed polydiff apps",
                            description="List the installed polydiff apps.")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p_tour = sub.add_parser(
        "tour", help="run every app's demo and write one HTML report",
        description="Run the demo of every installed app (or those named with --only), each "
        "in its own folder of OUT, and write OUT/report.html with their numbers, plots and "
        "audio. A failing demo is recorded in the report; the exit code is then 1.")
    p_tour.add_argument("-o", "--output", metavar="OUT", default="polydiff-tour",
                        help="output folder (default: %(default)s)")
    p_tour.add_argument("--quick", action="store_true",
                        help="smallest settings: seconds per demo (for smoke tests)")
    p_tour.add_argument("--only", metavar="NAME", nargs="+", action="extend", default=[],
                        help="run only these apps (names or comma-separated lists)")
    p_tour.add_argument("--json", action="store_true",
                        help="print the results as JSON (the report is written either way)")

    p_dig = sub.add_parser(
        "train-digits", help="train the digits demo's model (reproduces its starter weights)",
        description="Train the digits tour demo's class-conditional U-Net with the polydiff "
        "engine into OUT/run and write starter weights (EMA, safetensors) and manifest.json to "
        "OUT/starter. With the default settings this reproduces the starter weights that "
        "ship with polydiff-cli (copy OUT/starter over polydiff/cli/starter/digits to replace "
        "them).")
    p_dig.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p_dig.add_argument("--steps", type=int, metavar="N",
                       help="optimizer steps (default: 2000, what the starter weights used)")
    p_dig.add_argument("--resume", action="store_true",
                       help="continue OUT/run from its latest checkpoint")
    p_dig.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for entry in discover_apps().values():
        row: dict[str, Any] = {"name": entry.name, "summary": "",
                               "distribution": entry.distribution, "version": entry.version}
        try:
            row["summary"] = entry.load().summary
        except Exception as e:  # a broken app must not hide the others
            row["summary"] = f"(failed to load: {' '.join(str(e).split()) or type(e).__name__})"
            row["error"] = True
        rows.append(row)
    if args.json:
        emit({"apps": rows}, as_json=True)
    elif not rows:
        print("no polydiff apps are installed (entry-point group 'polydiff.apps')")
    else:
        emit({"apps": [{k: v for k, v in r.items() if k != "error"} for r in rows]},
             as_json=False)
    return 0


def _select(apps: dict[str, AppEntry], only: Sequence[str]) -> list[AppEntry]:
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in apps]
    if unknown:
        raise CLIError(f"unknown app '{unknown[0]}' for --only "
                       f"(installed: {', '.join(apps) or 'none'})")
    chosen = list(dict.fromkeys(names)) or list(apps)
    if not chosen:
        raise CLIError("no polydiff apps are installed (entry-point group 'polydiff.apps')")
    return [apps[n] for n in chosen]


def _folder_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip(".")
    return safe or "app"


def _run_one(entry: AppEntry, out_dir: Path, quick: bool) -> Any:
    from polydiff.cli.report import DemoResult

    res = DemoResult(entry.name, "", entry.distribution, entry.version, out_dir)
    start = time.perf_counter()
    try:
        app = entry.load()
        res.summary = app.summary
        out_dir.mkdir(parents=True, exist_ok=True)
        rep = app.demo(out_dir, quick=quick)
        if not isinstance(rep, DemoReport):
            raise TypeError(f"demo() returned {type(rep).__name__}, not a DemoReport")
        rep.figures = [p if Path(p).is_absolute() else out_dir / p for p in rep.figures]
        rep.audio = [p if Path(p).is_absolute() else out_dir / p for p in rep.audio]
        res.warnings += [f"missing file {p}" for p in [*rep.figures, *rep.audio]
                         if not Path(p).is_file()]
        res.report = rep
    except (Exception, SystemExit) as e:
        res.error = " ".join(f"{type(e).__name__}: {e}".split())
        res.traceback = traceback.format_exc()
    res.wall_s = time.perf_counter() - start
    return res


def run_tour(out: Path, entries: list[AppEntry], *, quick: bool = False,
             command: str | None = None) -> tuple[Path, list]:
    """Run the demos of ``entries`` into ``out/<name>/`` and write ``out/report.html``.

    Returns the report path and the :class:`~polydiff.cli.report.DemoResult` list; a failing
    demo is recorded, never raised. ``command`` is shown in the report's environment table.
    """
    from polydiff.cli.report import collect_environment, write_report

    out = Path(out).resolve()  # demos return paths relative to the cwd or absolute
    if out.exists() and not out.is_dir():
        raise CLIError(f"output path '{out}' exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    env = collect_environment()  # imports torch once, so no demo's wall time includes it
    if command:
        env["command"] = command
    results = []
    for i, entry in enumerate(entries, 1):
        print(f"[{i}/{len(entries)}] {entry.name} ...", file=sys.stderr, flush=True)
        res = _run_one(entry, out / _folder_name(entry.name), quick)
        status = "ok" if res.ok else f"FAILED: {res.error}"
        print(f"[{i}/{len(entries)}] {entry.name}: {status} ({res.wall_s:.1f} s)",
              file=sys.stderr, flush=True)
        results.append(res)
    report = write_report(out / "report.html", results, env, quick=quick)
    return report, results


def _cmd_tour(args: argparse.Namespace) -> int:
    entries = _select(discover_apps(), args.only)
    report, results = run_tour(Path(args.output).resolve(), entries, quick=args.quick,
                               command=shlex.join([PROG, *args.argv]))
    failed = [r.name for r in results if not r.ok]
    if args.json:
        emit({"report": str(report), "ok": not failed, "failed": failed,
              "demos": [r.to_dict() for r in results]}, as_json=True)
    else:
        emit({"report": str(report), "demos": [
            {"app": r.name, "status": "ok" if r.ok else "FAILED", "wall_s": round(r.wall_s, 2),
             "metrics": len(r.report.metrics) if r.report else 0,
             "title": r.report.title if r.report else r.error} for r in results]}, as_json=False)
    return 1 if failed else 0


def _cmd_train_digits(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from polydiff.cli.digits import FULL, write_starter

    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"output path '{out}' exists and is not a directory")
    if args.resume and not (out / "run").is_dir():
        raise CLIError(f"--resume: no run to continue in '{out / 'run'}'")
    settings = FULL if args.steps is None else replace(FULL, steps=args.steps)
    manifest = write_starter(out, settings, resume=args.resume)
    if args.json:
        emit({k: v for k, v in manifest.items() if k != "loss_curve"}, as_json=True)
    else:
        m = manifest["heldout_metrics"]
        emit({"starter": str(out / "starter"), "steps": manifest["steps"],
              "train_seconds": manifest["train_seconds"], **m}, as_json=False)
    return 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return {"list": _cmd_list, "tour": _cmd_tour,
            "train-digits": _cmd_train_digits}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: returns the exit code (0 ok, 1 a demo failed, 2 bad
    input)."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
