"""Lazy package exports (PEP 562), so ``import polydiff.<pkg>`` stays cheap (no torch) and
``--help`` of every app stays instant. Standard library only.

A package's ``__init__`` declares where each public name lives and installs the hooks::

    __getattr__, __dir__ = lazy_exports(__name__, {"SGMSE": "polydiff.speech.sgmse.model"},
                                        submodules=("model",))
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(module: str, homes: Mapping[str, str], submodules: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for package ``module``: a name in ``homes`` (name -> the
    absolute module defining it) is imported on first access and cached in the package's
    namespace; a name in ``submodules`` imports ``module.<name>``; anything else raises the
    usual ``AttributeError``."""
    homes, subs = dict(homes), frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            return importlib.import_module(f"{module}.{name}")
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        sys.modules[module].__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*sys.modules[module].__dict__, *homes, *subs})

    return __getattr__, __dir__
