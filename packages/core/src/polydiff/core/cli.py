"""Shared command-line helpers for every polydiff app (standard library only at import time).

* typed configs: :func:`load_config` (dataclasses from TOML/JSON plus ``key=value`` overrides),
  :func:`config_to_dict`, :func:`save_config`, :func:`add_config_args`;
* files: :func:`atomic_write` and :func:`atomic_path` (temporary file, then ``os.replace``);
* progress: :func:`progress` (tqdm, silent off a terminal or under ``CI``);
* errors: :class:`CLIError` and :func:`run_cli` (one ``prog: error: message`` line, exit 2);
* output: :func:`emit` (a JSON object with ``--json``, aligned text otherwise);
* apps: the :class:`App` protocol, :class:`DemoReport`, and entry-point discovery in the group
  ``polydiff.apps`` (:func:`discover_apps`, :func:`load_app`).

Nothing here imports torch or numpy, so an app's ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import sys
import tempfile
import tomllib
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePath
from typing import IO, Any, Literal, Protocol, TypeVar, Union, runtime_checkable

__all__ = [
    "APP_GROUP", "App", "AppEntry", "CLIError", "ConfigError", "DemoReport", "add_config_args",
    "atomic_path", "atomic_write", "config_from_dict", "config_to_dict", "discover_apps",
    "emit", "load_app", "load_config", "progress", "quiet", "run_cli", "save_config",
]

T = TypeVar("T")
APP_GROUP = "polydiff.apps"
EXTRA_APPS_ENV = "POLYDIFF_EXTRA_APPS"
DEBUG_ENV = "POLYDIFF_DEBUG"


class ConfigError(ValueError):
    """A config file or override that does not fit the config's dataclass (one-line message)."""


class CLIError(Exception):
    """Bad input to a command: :func:`run_cli` prints ``prog: error: <message>`` and exits
    with ``exit_code`` (2 by default)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------- configs
class _Raw(str):
    """A value given as text on the command line, parsed by the field's type."""


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a programming error in the config class, not bad input
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {e}") from e


def _bad(key: str, tp: Any, value: Any) -> ConfigError:
    got = repr(str(value)) if isinstance(value, _Raw) else f"{value!r} ({type(value).__name__})"
    return ConfigError(_one_line(f"config key '{key}' expects {_type_name(tp)}, got {got}"))


def _parse_toml_value(text: str, key: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_one_line(f"config key '{key}': cannot parse {text!r}: {e}")) from None


def _is_choice(value: Any, choice: Any, raw: bool) -> bool:
    if not raw:
        return value == choice and type(value) is type(choice)
    if isinstance(choice, bool):
        return value.lower() in (_TRUE if choice else _FALSE)
    return str(choice) == value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from TOML/JSON, or a :class:`_Raw` override string) checked against ``tp``."""
    raw = isinstance(value, _Raw)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return str(value) if raw else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, Mapping) and not raw:
            return _build(tp, value, f"{key}.")
        raise ConfigError(f"config key '{key}' is a section: set its keys as {key}.<name>=value")
    if origin in (Union, types.UnionType):
        opts = [a for a in args if a is not type(None)]
        if len(opts) < len(args) and (value is None or raw and value.lower() in ("none", "null")):
            return None
        for opt in opts:
            try:
                return _coerce(value, opt, key)
            except ConfigError:
                if len(opts) == 1:
                    raise
        raise _bad(key, tp, value)
    if origin is Literal:
        for choice in args:
            if _is_choice(value, choice, raw):
                return choice
        choices = ", ".join(repr(c) for c in args)
        raise ConfigError(f"config key '{key}' must be one of {choices}; got {str(value)!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value in (member.name, member.value) or raw and str(member.value) == value:
                return member
        raise ConfigError(f"config key '{key}' must be one of "
                          f"{', '.join(m.name for m in tp)}; got {str(value)!r}")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if raw:
            text = value.strip()
            items: Any = _parse_toml_value(text, key) if text.startswith("[") else \
                [_Raw(s.strip()) for s in text.split(",")] if text else []
        else:
            items = value
        if not isinstance(items, (list, tuple)):
            raise _bad(key, tp, value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ConfigError(f"config key '{key}' expects {len(args)} values, "
                                  f"got {len(items)}")
            elem_types = list(args)
        else:
            elem_types = [args[0] if args else Any] * len(items)
        out = [_coerce(v, et, f"{key}[{i}]") for i, (v, et) in enumerate(zip(items, elem_types))]
        return list(out) if origin is list or tp is list else tuple(out)
    if origin is dict or tp is dict:
        table = (_parse_toml_value(value, key) if value.strip().startswith("{") else value) \
            if raw else value
        if not isinstance(table, Mapping):
            raise _bad(key, tp, value)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in table.items()}
    if tp is bool:
        if raw and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, bool):
            return value
        raise _bad(key, tp, value)
    if tp in (int, float):
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and (tp is float or isinstance(value, int)):
            return tp(value)
        if raw:
            try:
                return tp(value)
            except ValueError:
                pass
        raise _bad(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise _bad(key, tp, value)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str | PurePath):
            return tp(value)
        raise _bad(key, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp) and not raw:
            return value
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise _bad(key, tp, value) from None
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "", base: Any = None) -> T:
    """Instantiate dataclass ``cls`` from ``data`` (on top of the instance ``base`` if given)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = _hints(cls)
    for k in data:
        if k not in fields:
            near = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else \
                f" (valid keys: {', '.join(fields) or 'none'})"
            raise ConfigError(f"unknown config key '{prefix}{k}'{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints.get(name, Any)
        sub_base = getattr(base, name, None) if base is not None else _default(fields[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(sub_base):
            kwargs[name] = _build(type(sub_base), value, f"{prefix}{name}.", sub_base)
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}")
    if base is None:
        missing = [n for n, f in fields.items() if n not in kwargs and _default(f) is _MISSING]
        if missing:
            raise ConfigError(f"missing config key '{prefix}{missing[0]}'")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as e:
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(_one_line(f"invalid config {where}: {e}")) from None


_MISSING = object()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config '{p}': {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config '{p}' is not UTF-8 text") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError(_one_line(f"config '{p}' is not valid {kind}: {e}")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config '{p}' must hold a table of keys")
    return data


def load_config(cls: type[T], path: str | os.PathLike[str] | None = None,
                overrides: Iterable[str] = ()) -> T:
    """An instance of dataclass ``cls`` from a TOML (or ``.json``) file and ``key=value`` /
    ``section.key=value`` overrides (later ones win), on top of the dataclass defaults.

    Values are checked against the field types: ``int``, ``float``, ``bool``, ``str``,
    ``Path``, enums, ``Literal`` choices, ``Optional`` (``none`` on the command line),
    ``list``/``tuple`` (``a,b,c`` or ``[a, b]``), ``dict`` (an inline table) and nested
    dataclasses (TOML tables). Raises :class:`ConfigError` (one line) on unknown keys, wrong
    types, bad choices, unreadable or unparsable files.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    data: dict[str, Any] = _read_config_file(path) if path is not None else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        node = data
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"config key '{'.'.join(parents[:i + 1])}' is not a section")
            node = nxt
        node[leaf] = _Raw(value.strip())
    return _build(cls, data)


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Dataclass ``cls`` from plain data (e.g. a checkpoint's stored config), validated like
    :func:`load_config`."""
    return _build(cls, data)


def add_config_args(parser: Any) -> None:
    """Add ``--config PATH`` and ``--set KEY=VALUE ...`` to an argparse parser (pass them to
    :func:`load_config` as ``args.config, args.set``)."""
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override config values, e.g. --set train.steps=100 seed=1")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (or mapping) as plain TOML/JSON-ready data (paths as strings, tuples as
    lists, enums as values, nested dataclasses as tables)."""
    out = _plain(cfg)
    if not isinstance(out, dict):
        raise TypeError(f"config_to_dict needs a dataclass instance or mapping, got {cfg!r}")
    return out


def _toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) \
        else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf") \
            if not math.isfinite(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def _toml_table(d: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    for k, v in d.items():
        if v is not None and not isinstance(v, dict):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            lines.extend(["", f"[{name}]"] if lines else [f"[{name}]"])
            _toml_table(v, name, lines)


def save_config(cfg: Any, path: str | os.PathLike[str],
                fmt: Literal["toml", "json"] | None = None) -> Path:
    """Write ``cfg`` (a dataclass or mapping) atomically as TOML, or JSON for a ``.json`` path
    (or ``fmt``). TOML has no null: keys whose value is ``None`` are left out (JSON keeps
    them)."""
    p, data = Path(path), config_to_dict(cfg)
    fmt = fmt or ("json" if p.suffix.lower() == ".json" else "toml")
    if fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        lines: list[str] = []
        _toml_table(data, "", lines)
        text = "\n".join(lines) + "\n"
    atomic_write(p, text)
    return p


# ----------------------------------------------------------------------------- files
@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so format-sniffing writers work);
    on success it replaces ``path`` in one ``os.replace``, on any error it is deleted and
    ``path`` is left untouched. Missing parent folders are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.",
                                    suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically: readers see the old file or
    the complete new one, never a partial file."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


# ----------------------------------------------------------------------------- progress
def quiet() -> bool:
    """True where progress output should stay silent: stderr is not a terminal, or ``CI`` is
    set (to anything but ``0``/``false``)."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or not (sys.stderr and sys.stderr.isatty())


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None,
             disable: bool | None = None) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr (``disable=None``: silent when :func:`quiet`)."""
    from tqdm.std import tqdm  # imported here: keeps tqdm off the --help path

    return iter(tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                     disable=quiet() if disable is None else disable, file=sys.stderr))


# ----------------------------------------------------------------------------- errors
_BAD_INPUT = (CLIError, ConfigError, ValueError, FileNotFoundError, FileExistsError,
              IsADirectoryError, NotADirectoryError, PermissionError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return _one_line(f"{exc.strerror}: '{exc.filename}'")
    return _one_line(str(exc)) or type(exc).__name__


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
    (relative paths are taken relative to the demo's output folder)."""

    title: str
    metrics: dict[str, float | str] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    text: str = ""


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
