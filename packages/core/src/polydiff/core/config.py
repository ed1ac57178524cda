"""Typed configs for polydiff apps and runs (standard library only).

:func:`load_config` builds a dataclass from a TOML/JSON file plus ``key=value`` overrides,
checking every value against the field types; :func:`config_from_dict`,
:func:`config_to_dict`, :func:`save_config` (atomic TOML/JSON) and :func:`add_config_args`
(``--config``/``--set`` for argparse) go with it. Errors are :class:`ConfigError` with a
one-line message. Re-exported by :mod:`polydiff.core.cli`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

from polydiff.core.utils import atomic_write, one_line

__all__ = ["ConfigError", "add_config_args", "config_from_dict", "config_to_dict",
           "load_config", "save_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's dataclass (one-line message)."""



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
    return ConfigError(one_line(f"config key '{key}' expects {_type_name(tp)}, got {got}"))


def _parse_toml_value(text: str, key: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(one_line(f"config key '{key}': cannot parse {text!r}: {e}")) from None


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
        raise ConfigError(one_line(f"invalid config {where}: {e}")) from None


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
        raise ConfigError(one_line(f"config '{p}' is not valid {kind}: {e}")) from None
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
