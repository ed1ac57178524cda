"""Shared command-line helpers for every polydiff app (standard library only at import time).

* typed configs: :func:`load_config` (dataclasses from TOML/JSON plus ``key=value`` overrides),
  :func:`config_to_dict`, :func:`save_config`, :func:`add_config_args`;
* re-exported from :mod:`polydiff.core.utils` (library code imports them from there):
  :func:`atomic_write`, :func:`atomic_path`, :func:`progress`, :func:`quiet`;
* errors: :class:`CLIError` and :func:`run_cli` (one ``prog: error: message`` line, exit 2);
* output: :func:`emit` (a JSON object with ``--json``, aligned text otherwise);
* apps: the :class:`App` protocol, :class:`DemoReport`, and entry-point discovery in the group
  ``polydiff.apps`` (:func:`discover_apps`, :func:`load_app`).

Nothing here imports torch or numpy, so an app's ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

from polydiff.core.config import (  # re-exported: one import for apps
    ConfigError,
    _plain,
    add_config_args,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from polydiff.core.utils import (
    MissingDependencyError,
    atomic_path,
    atomic_write,
    one_line,
    progress,
    quiet,
)

__all__ = [
    "APP_GROUP", "App", "AppEntry", "CLIError", "ConfigError", "DemoReport", "add_config_args",
    "add_demo_verb", "atomic_path", "atomic_write", "config_from_dict", "config_to_dict",
    "discover_apps", "emit", "emit_demo", "load_app", "load_config", "progress", "quiet",
    "read_starter_manifest", "require_at_least", "require_output_dir", "run_cli", "run_commands",
    "run_demo", "save_config",
]

T = TypeVar("T")
APP_GROUP = "polydiff.apps"
EXTRA_APPS_ENV = "POLYDIFF_EXTRA_APPS"
DEBUG_ENV = "POLYDIFF_DEBUG"


class CLIError(Exception):
    """Bad input to a command: :func:`run_cli` prints ``prog: error: <message>`` and exits
    with ``exit_code`` (2 by default)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def require_at_least(name: str, value: float | None, minimum: float = 1) -> None:
    """Refuse a numeric option below ``minimum`` (or NaN) with one :class:`CLIError` line;
    ``None`` (option not given) passes."""
    if value is not None and not value >= minimum:
        raise CLIError(f"{name} must be >= {minimum:g}, got {value}")


def require_output_dir(path: Path) -> None:
    """Refuse an output folder path that exists as something other than a folder."""
    if path.exists() and not path.is_dir():
        raise CLIError(f"output path '{path}' exists and is not a directory")


# ----------------------------------------------------------------------------- errors
_BAD_INPUT = (CLIError, ConfigError, MissingDependencyError, ValueError, FileNotFoundError,
              FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return one_line(f"{exc.strerror}: '{exc.filename}'")
    return one_line(str(exc)) or type(exc).__name__


def run_commands(build_parser: Callable[[], argparse.ArgumentParser], commands: str,
                 argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """An app's console-script entry point: parse ``argv`` with ``build_parser()`` (whose
    subcommand lands in ``args.command``), import the module ``commands`` (only after parsing,
    so ``--help`` never imports torch) and call its ``cmd_<verb>(args)`` (dashes in the verb
    become underscores), all through :func:`run_cli` (0 ok, 2 bad input on one line)."""

    def _main(args_list: list[str] | None) -> int:
        args = build_parser().parse_args(args_list)
        module = importlib.import_module(commands)
        return int(getattr(module, f"cmd_{args.command.replace('-', '_')}")(args) or 0)

    return run_cli(_main, argv, prog=prog)


def emit_demo(rep: DemoReport, as_json: bool) -> None:
    """Print a demo verb's result: ``{"title", "metrics", "figures"}`` (as JSON with
    ``as_json``, else as a table followed by the report's text)."""
    emit({"title": rep.title, "metrics": rep.metrics,
          "figures": [str(f) for f in rep.figures]}, as_json)
    if not as_json:
        print()
        print(rep.text)


def run_demo(app: Any, output: str | Path, *, quick: bool, as_json: bool) -> DemoReport:
    """An app's ``demo`` verb: check the output folder, run ``app.demo`` into it and print
    the report (:func:`emit_demo`)."""
    out = Path(output)
    require_output_dir(out)
    rep: DemoReport = app.demo(out, quick=quick)
    emit_demo(rep, as_json)
    return rep


def read_starter_manifest(weights_dir: Path, dist: str) -> dict[str, Any]:
    """``weights_dir/manifest.json`` of an app's shipped starter weights, or a one-line
    ``FileNotFoundError`` naming the distribution ``dist`` to reinstall."""
    path = weights_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"the starter weights are missing ({path}); reinstall "
                                f"{dist} or pass --model")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def add_demo_verb(sub: Any, *, description: str, default_output: str,
                  help: str = "the tour demo", quick_help: str = "smallest settings"
                  ) -> argparse.ArgumentParser:
    """Add an app's ``demo`` verb to the subparsers ``sub``: ``-o/--output`` (default
    ``default_output``), ``--quick`` and ``--json``, as every app's tour demo takes them."""
    p: argparse.ArgumentParser = sub.add_parser("demo", help=help, description=description)
    p.add_argument("-o", "--output", metavar="OUT", default=default_output,
                   help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return p


def run_cli(main_fn: Callable[[list[str] | None], int | None],
            argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run ``main_fn(argv)`` and return its exit code for ``sys.exit``.

    Bad input (:class:`CLIError`, :class:`ConfigError`, ``ValueError``, missing/unwritable
    files) becomes one line ``<prog>: error: <message>`` on stderr and exit code 2 (a
    :class:`CLIError` may choose another); argparse's own errors keep their usage line and
    code 2; Ctrl-C exits 130; any other exception prints its traceback and exits 1. With
    ``POLYDIFF_DEBUG`` set, bad-input errors show their traceback too.
    """
    name = prog or Path(sys.argv[0]).name or "polydiff"
    try:
        code = main_fn(list(argv) if argv is not None else None)
        return int(code or 0)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `polydiff list | head -1`: stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except _BAD_INPUT as e:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"{name}: error: {_message(e)}", file=sys.stderr)
        return e.exit_code if isinstance(e, CLIError) else 2
    except Exception:
        traceback.print_exc()
        return 1


# ----------------------------------------------------------------------------- output
def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy/torch scalars and arrays
        return _json_ready(value.tolist())
    plain = _plain(value)
    if isinstance(plain, dict):
        return {k: _json_ready(v) for k, v in plain.items()}
    if isinstance(plain, list):
        return [_json_ready(v) for v in plain]
    return plain if plain is None or isinstance(plain, str | int | float | bool) else str(plain)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else str(_plain(v))


def _table(rows: list[Mapping[str, Any]], out: IO[str], indent: str = "") -> None:
    cols: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    for row in [cols, ["-" * w for w in width], *cells]:
        print(indent + "  ".join(s.ljust(w) for s, w in zip(row, width)).rstrip(), file=out)


def emit(result: Mapping[str, Any], as_json: bool, *, file: IO[str] | None = None) -> None:
    """Print ``result`` as one JSON object (``as_json``) or as aligned ``key  value`` lines,
    with nested mappings flattened to dotted keys and lists of mappings as tables."""
    out = file or sys.stdout
    if as_json:
        print(json.dumps(_json_ready(dict(result)), indent=2, ensure_ascii=False), file=out)
        return
    flat: list[tuple[str, Any]] = []
    tables: list[tuple[str, list[Mapping[str, Any]]]] = []

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                tables.append((f"{prefix}{k}", v))
            else:
                flat.append((f"{prefix}{k}", v))

    walk(result, "")
    width = max((len(k) for k, _ in flat), default=0)
    for k, v in flat:
        print(f"{k.ljust(width)}  {_fmt(v)}", file=out)
    for k, rows in tables:
        print(f"{k}:", file=out)
        _table(rows, out, indent="  ")


# ----------------------------------------------------------------------------- apps
@dataclass
class DemoReport:
    """What an app's demo hands to ``polydiff tour``: numbers, PNG figures, WAV audio, prose
    (relative paths are taken relative to the demo's output folder). ``units`` maps a metric
    name to its unit (``"s"``, ``"dB"``, ``"fraction"``, ``"ratio"``, ...); the report shows
    it beside the value, and every numeric metric should have one."""

    title: str
    metrics: dict[str, float | str] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    text: str = ""
    units: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class App(Protocol):
    """A polydiff app as registered under the entry-point group ``polydiff.apps``
    (``name = "module:attr"``; ``attr`` may be an object, a module or a class to instantiate).
    ``demo`` must import heavy modules (torch) itself, so discovery stays cheap."""

    name: str
    summary: str

    def demo(self, out_dir: Path, *, quick: bool) -> DemoReport: ...


@dataclass(frozen=True)
class AppEntry:
    """A discovered, not yet imported app."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    entry_point: EntryPoint = field(repr=False, compare=False)

    def load(self) -> App:
        """Import the app object; raises :class:`CLIError` if it is not an :class:`App`."""
        obj = self.entry_point.load()
        if isinstance(obj, type):
            obj = obj()
        missing = [a for a in ("name", "summary") if not isinstance(getattr(obj, a, None), str)]
        if not callable(getattr(obj, "demo", None)):
            missing.append("demo()")
        if missing:
            raise CLIError(f"entry point '{self.name}' ({self.value}) is not a polydiff app: "
                           f"missing {', '.join(missing)}")
        return obj


def discover_apps() -> dict[str, AppEntry]:
    """Apps registered in the ``polydiff.apps`` entry-point group, by name (nothing is
    imported). ``POLYDIFF_EXTRA_APPS="name=module:attr,..."`` adds unregistered ones (for
    development and tests)."""
    eps = list(entry_points(group=APP_GROUP))
    for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_APPS_ENV, "").split(","))):
        name, sep, value = spec.partition("=")
        if not sep or ":" not in value:
            raise CLIError(f"{EXTRA_APPS_ENV}: {spec!r} must look like name=module:attr")
        eps.append(EntryPoint(name.strip(), value.strip(), APP_GROUP))
    apps: dict[str, AppEntry] = {}
    for ep in eps:
        if ep.name in apps:
            continue
        dist = getattr(ep, "dist", None)
        apps[ep.name] = AppEntry(ep.name, ep.value, dist.name if dist else None,
                                 dist.version if dist else None, ep)
    return dict(sorted(apps.items()))


def load_app(name: str) -> App:
    """Import and return the app registered as ``name`` (:class:`CLIError` if unknown)."""
    apps = discover_apps()
    if name not in apps:
        raise CLIError(f"unknown app '{name}' (installed: {', '.join(apps) or 'none'})")
    return apps[name].load()
