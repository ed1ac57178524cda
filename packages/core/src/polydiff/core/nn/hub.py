"""Saving and loading backbones: a directory with ``config.json`` and ``model.safetensors``.

``config.json`` holds the model's dataclass config as JSON plus ``_class_name`` and
``_polydiff_version``; ``model.safetensors`` holds the state dict (parameters and persistent
buffers) with the same config in its metadata, so a pair that does not belong together is
detected. Nothing is ever unpickled. Classes are found through an explicit registry
(:func:`register_model`), never by evaluating names.

Saving is atomic: a new directory is written under a temporary name and renamed into place;
into an existing directory each file is written to a temporary file and ``os.replace``d,
weights first, so an interrupted save leaves either the old files or a mismatched pair that
:func:`from_pretrained` rejects with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import torch
from torch import nn

from polydiff.core.utils import atomic_dir, atomic_path, atomic_write

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "config_from_dict",
    "config_to_dict",
    "from_pretrained",
    "model_registry",
    "register_model",
    "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_REGISTRY: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=nn.Module)


def register_model(cls: type[M]) -> type[M]:
    """Class decorator: make ``cls`` loadable by :func:`from_pretrained` under its class name.
    ``cls`` needs a ``config_class`` (a dataclass) and an ``__init__(config)``."""
    cfg = getattr(cls, "config_class", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{cls.__name__} needs a dataclass 'config_class' to be registered")
    other = _REGISTRY.get(cls.__name__)
    if other is not None and other is not cls:
        raise ValueError(f"a different model is already registered as {cls.__name__!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def model_registry() -> dict[str, type[nn.Module]]:
    """A copy of the registry (name -> class), with polydiff-core's backbones loaded."""
    from polydiff.core.nn import transformer, unet, uvit, wavenet  # noqa: F401  (registers them)

    return dict(_REGISTRY)


def _polydiff_version() -> str:
    from polydiff.core import __version__

    return __version__


# --------------------------------------------------------------------------- configs
def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass config instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def config_from_dict(config_class: type, data: dict[str, Any]) -> Any:
    """Rebuild ``config_class`` from :func:`config_to_dict`'s output (lists become tuples;
    keys starting with ``_`` are metadata and ignored; unknown keys are an error)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    fields = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields: {', '.join(unknown)}")
    return config_class(**{k: _tuples(v) for k, v in fields.items()})


# --------------------------------------------------------------------------- save
def _write_pair(model: nn.Module, directory: Path) -> None:
    """Write weights then config into ``directory`` (an existing directory); each file goes
    through a temporary file in the same directory and ``os.replace``."""
    from safetensors.torch import save_file

    cls = type(model)
    cfg = {"_class_name": cls.__name__, "_polydiff_version": _polydiff_version(),
           **config_to_dict(model.config)}
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    ptrs: dict[int, str] = {}
    for k, v in state.items():
        if v.numel() and v.data_ptr() in ptrs:
            state[k] = v.clone()  # tied tensors are stored twice (safetensors forbids sharing)
        ptrs[v.data_ptr()] = k
    meta = {"format": "pt", "polydiff_config": json.dumps(cfg, sort_keys=True)}

    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata=meta)
    atomic_write(directory / CONFIG_NAME, text)


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Save a registered model (its ``config`` dataclass and state dict) to ``directory``
    atomically; returns the directory's path. Overwrites the two files in an existing
    directory and leaves any other files there alone."""
    cls = type(model)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise ValueError(f"{cls.__name__} is not registered (use polydiff.core.nn.register_model)")
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory")
        _write_pair(model, directory)
        return directory
    with atomic_dir(directory) as tmp:
        _write_pair(model, tmp)
    return directory


# --------------------------------------------------------------------------- load
def _read_config(directory: Path) -> dict[str, Any]:
    if not directory.exists():
        raise FileNotFoundError(f"no pretrained model directory at {directory}")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory (expected {CONFIG_NAME} and "
                                 f"{WEIGHTS_NAME} inside)")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        raise ValueError(f"{path} has no '_class_name' entry")
    return data


def _summary(names: Iterable[str], limit: int = 3) -> str:
    ordered = sorted(names)
    more = f" (+{len(ordered) - limit} more)" if len(ordered) > limit else ""
    return ", ".join(repr(n) for n in ordered[:limit]) + more


def _check_state(name: str, path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors ({_summary(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors ({_summary(unexpected)})")
    if shapes:
        k = sorted(shapes)[0]
        problems.append(f"{len(shapes)} shape mismatches (e.g. {k!r}: file "
                        f"{tuple(state[k].shape)}, model {tuple(expected[k].shape)})")
    if problems:
        raise ValueError(f"{path} does not match the {name} in its {CONFIG_NAME}: "
                         + "; ".join(problems))


def from_pretrained(directory: str | os.PathLike[str], *,
                    map_location: str | torch.device = "cpu",
                    expected: type | None = None) -> nn.Module:
    """Rebuild the model saved by :func:`save_pretrained` in ``directory``: the class named
    in ``config.json`` (from the registry), its config, and its weights read with safetensors
    onto ``map_location`` (dtypes as saved). ``expected``: a class the model must be an
    instance of. Errors are one line: ``FileNotFoundError`` for a missing directory or file,
    ``ValueError`` for an unknown class, a bad config, a corrupt or mismatched weights file."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    data = _read_config(directory)
    registry = model_registry()
    name = data["_class_name"]
    cls = registry.get(name)
    if cls is None:
        raise ValueError(f"unknown model class {name!r} in {directory / CONFIG_NAME}; known: "
                         f"{', '.join(sorted(registry))}")
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{directory} holds a {name}, not a {expected.__name__}")
    try:
        config = config_from_dict(cls.config_class, data)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad {name} config in {directory / CONFIG_NAME}: {e}") from None
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            # clone: memory-mapped tensors are not 64-byte aligned, and CPU kernels on
            # unaligned data may round differently from the model that was saved
            state = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is not a readable safetensors file: {msg}") from None
    saved = meta.get("polydiff_config")
    if saved is not None:
        here = {k: v for k, v in data.items() if k != "_polydiff_version"}
        there = {k: v for k, v in json.loads(saved).items() if k != "_polydiff_version"}
        if here != there:
            raise ValueError(f"{directory / CONFIG_NAME} and {WEIGHTS_NAME} were saved from "
                             "different models (interrupted or mixed save?)")
    model = cls(config)
    _check_state(name, path, model, state)
    model.load_state_dict(state, strict=True, assign=True)  # keeps the saved dtypes
    return model.to(map_location).eval()


class PretrainedMixin:
    """``model.save_pretrained(directory)`` and ``Cls.from_pretrained(directory)``, as
    diffusers users expect; the class also needs ``config_class`` and ``config``."""

    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """See :func:`save_pretrained`."""
        assert isinstance(self, nn.Module)
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *,
                        map_location: str | torch.device = "cpu") -> Self:
        """See :func:`from_pretrained`; the saved model must be a ``cls``."""
        model = from_pretrained(directory, map_location=map_location, expected=cls)
        assert isinstance(model, cls)  # checked by expected=cls
        return model
