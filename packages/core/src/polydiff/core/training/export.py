"""The bare network of a training run, in one call.

A checkpoint holds the weights of what the :class:`~polydiff.core.training.loop.Trainer`
trained, usually a :class:`~polydiff.core.denoiser.ModelDenoiser` around a network, so its keys
carry the wrapper's ``model.`` prefix. The trainer also records in every checkpoint which
submodule is a hub network (a class registered with
:func:`~polydiff.core.nn.hub.register_model`: the core backbones and the domain models), with
its config. From that::

    export_network("runs/00003-digits", "digits-unet")   # EMA weights by default
    net = UNet.from_pretrained("digits-unet")

    state = network_state_dict("runs/00003-digits")      # bare keys, e.g. for load_state_dict

Both read the newest intact checkpoint (:func:`~polydiff.core.training.checkpoint.
find_checkpoint`) of a run folder, its ``checkpoints/`` folder, or a weights file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from polydiff.core.training.checkpoint import (
    checkpoint_metadata,
    find_checkpoint,
    load_weights,
)

__all__ = ["NETWORK_KEY", "hub_network", "network_record", "network_state_dict",
           "export_network"]

#: The checkpoint metadata key of the network record (JSON: ``prefix`` and ``config``).
NETWORK_KEY = "network"


def hub_network(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(state-dict prefix, module)`` of the outermost registered hub network in ``model``
    (``("", model)`` when ``model`` is one; ``("model.", net)`` for ``ModelDenoiser(net)``),
    or ``None``."""
    from polydiff.core.nn.hub import model_registry

    registry = model_registry()
    for name, module in model.named_modules():
        if registry.get(type(module).__name__) is type(module):
            return (f"{name}." if name else ""), module
    return None


def network_record(model: nn.Module) -> dict[str, Any] | None:
    """The checkpoint record of ``model``'s hub network: ``{"prefix", "config"}`` (the config
    as ``save_pretrained`` writes it, with ``_class_name``), or ``None`` when it has none."""
    from polydiff.core.nn.hub import config_to_dict

    found = hub_network(model)
    if found is None:
        return None
    prefix, net = found
    config = {"_class_name": type(net).__name__, **config_to_dict(net.config)}
    return {"prefix": prefix, "config": config}


def _weights_file(source: str | os.PathLike[str]) -> Path:
    src = Path(source)
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"no run folder, checkpoints folder or weights file at {src}")
    folder = src / "checkpoints" if (src / "checkpoints").is_dir() else src
    path, _ = find_checkpoint(folder)
    if path is None:
        raise FileNotFoundError(f"{src} holds no checkpoint")
    return path


def _record(path: Path) -> dict[str, Any] | None:
    text = checkpoint_metadata(path).get(NETWORK_KEY)
    return json.loads(text) if text else None


def network_state_dict(source: str | os.PathLike[str], which: str = "ema", *,
                       prefix: str | None = None) -> dict[str, Tensor]:
    """The network's weights (``which``: ``"ema"``, the default, or ``"model"``) from the
    newest intact checkpoint of ``source`` (a run folder, its ``checkpoints/`` folder or a
    weights file), keyed as the bare network's ``state_dict()``.

    ``prefix``: the wrapper's key prefix to strip (default: the recorded one; for checkpoints
    without a record, ``"model."`` when every key has it, else ``""``). Keys outside the
    prefix (the wrapper's own tensors) are dropped."""
    path = _weights_file(source)
    try:
        state = load_weights(path, which)
    except KeyError:
        raise ValueError(f"{path} holds no {which!r} weights (the run kept no EMA: pass "
                         "which='model')") from None
    if prefix is None:
        rec = _record(path)
        if rec is not None:
            prefix = str(rec["prefix"])
        else:
            prefix = "model." if state and all(k.startswith("model.") for k in state) else ""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def export_network(source: str | os.PathLike[str], directory: str | os.PathLike[str],
                   which: str = "ema") -> Path:
    """Write the trained network of ``source`` (see :func:`network_state_dict`) to
    ``directory`` with ``save_pretrained`` (``config.json`` + ``model.safetensors``), ready
    for ``from_pretrained`` of its class; returns ``directory``. The network's class must be
    registered in this process (import its package first)."""
    from polydiff.core.nn.hub import config_from_dict, model_registry

    path = _weights_file(source)
    rec = _record(path)
    if rec is None:
        raise ValueError(f"{path} records no hub network (the trained model holds no "
                         "registered network, or the checkpoint predates the record); use "
                         "network_state_dict() and load it into your network")
    config = dict(rec["config"])
    name = config.get("_class_name")
    cls = model_registry().get(str(name))
    if cls is None:
        raise ValueError(f"the run's network class {name!r} is not registered in this "
                         "process: import the package that defines it first")
    net = cls(config_from_dict(cls.config_class, config))  # type: ignore[attr-defined]
    net.load_state_dict(network_state_dict(path, which, prefix=str(rec["prefix"])),
                        strict=True)
    return net.save_pretrained(directory)  # type: ignore[operator]
