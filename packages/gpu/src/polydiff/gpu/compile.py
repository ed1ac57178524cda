"""``torch.compile`` where it works, eager execution where it does not.

``torch.compile`` fails in two places: when it is called (an unsupported Python or
platform) and, more often, lazily at the first call of the compiled object (a missing C++
compiler, a graph break under ``fullgraph=True``, a backend bug). :func:`maybe_compile`
handles both: it returns a wrapper that tries the compiled path and, if that raises while
the eager path succeeds on the same inputs, warns once and runs eagerly from then on.

If the eager path raises too, the error is the caller's (bad shapes, wrong dtypes): the
eager exception propagates and compilation stays enabled. A compiled call that failed
part-way is re-run eagerly, so a function with side effects before its first failing
operation would see them twice; compile failures happen before execution in practice.

``POLYDIFF_COMPILE=0`` (or ``false``/``off``/``no``) disables compilation globally.

:func:`compile_regions` is *regional* compilation: instead of the whole network, the
``forward`` of each repeated block (a ResNet block, an attention block) is compiled. Dynamo
caches compiled code per function and guards on shapes and dtypes, not on the module
instance, so every block of one class with the same input shapes reuses one compiled graph:
a U-Net with 27 ResNet blocks of 11 distinct shapes compiles 11 small graphs instead of one
large one, which cuts the cold-start compile time (PyTorch's "regional compilation" recipe).
The price is the fusion across block boundaries (a residual add with the next block's
normalisation), small next to the convolutions of a U-Net.
"""

from __future__ import annotations

import functools
import os
import types
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["CompileFallback", "CompiledFunction", "compile_enabled", "compile_regions",
           "maybe_compile", "uncompile_regions"]

ENV_COMPILE = "POLYDIFF_COMPILE"
T = TypeVar("T", bound=Callable[..., Any])


def compile_enabled() -> bool:
    """False when ``$POLYDIFF_COMPILE`` is set to ``0``, ``false``, ``off`` or ``no``."""
    value = os.environ.get(ENV_COMPILE, "1").strip().lower()
    return value not in {"0", "false", "off", "no"}


class _Fallback:
    """Shared state of a compiled/eager pair: which one to run, and the failover."""

    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any], name: str):
        self.eager = eager
        self.compiled = compiled
        self.name = name
        self.fell_back = False
        self.error: BaseException | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fell_back:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # any backend failure triggers the fallback
            compile_error = exc
        out = self.eager(*args, **kwargs)  # an eager error here is the caller's: let it raise
        if not self.fell_back:
            self.fell_back = True
            self.error = compile_error
            warnings.warn(
                f"torch.compile of {self.name} failed at call time "
                f"({type(compile_error).__name__}: {str(compile_error)[:300]}); "
                "running eagerly from now on",
                RuntimeWarning,
                stacklevel=3,
            )
        return out


class _FallbackStatus:
    """``fell_back`` / ``compile_error`` of a wrapper holding a ``_Fallback`` as ``_runner``."""

    _runner: _Fallback

    @property
    def fell_back(self) -> bool:
        """True once the compiled path failed and calls run eagerly."""
        return self._runner.fell_back

    @property
    def compile_error(self) -> BaseException | None:
        """The exception that caused the fallback, if any."""
        return self._runner.error


class CompileFallback(_FallbackStatus, nn.Module):
    """A module that runs ``torch.compile(module)`` and falls back to ``module`` on failure.

    The eager module is the registered child ``.module``; its parameters and buffers are
    the compiled module's, so optimisers and ``.to()`` see them once. ``state_dict`` keys
    carry a ``module.`` prefix; save ``wrapper.module.state_dict()`` for portable weights.
    """

    def __init__(self, module: nn.Module, compiled: Callable[..., Any]):
        super().__init__()
        self.module = module
        # not a registered child: the compiled wrapper shares module's parameters
        object.__setattr__(self, "_runner", _Fallback(module, compiled, type(module).__name__))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._runner(*args, **kwargs)


class CompiledFunction(_FallbackStatus):
    """A function that runs its compiled version and falls back to itself on failure."""

    def __init__(self, fn: Callable[..., Any], compiled: Callable[..., Any]):
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        self._runner = _Fallback(fn, compiled, name)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._runner(*args, **kwargs)

    def __repr__(self) -> str:
        state = "eager fallback" if self._runner.fell_back else "compiled"
        return f"<maybe_compile({self._runner.name}): {state}>"


def maybe_compile(
    module_or_fn: T,
    *,
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = None,
    backend: str | Callable[..., Any] = "inductor",
    enabled: bool = True,
) -> T:
    """``torch.compile(module_or_fn, ...)`` with a clean fallback to eager execution.

    Returns ``module_or_fn`` itself when ``enabled`` is false, when ``$POLYDIFF_COMPILE``
    disables compilation, or (with one warning) when ``torch.compile`` raises. Otherwise
    returns a :class:`CompileFallback` for an ``nn.Module`` or a :class:`CompiledFunction`
    for a plain callable (both expose ``fell_back`` and ``compile_error``); see the module
    docstring for the first-call fallback rule.
    """
    if not enabled or not compile_enabled():
        return module_or_fn
    name = getattr(module_or_fn, "__qualname__", None) or type(module_or_fn).__name__
    try:
        compiled = torch.compile(
            module_or_fn, mode=mode, fullgraph=fullgraph, dynamic=dynamic, backend=backend
        )
    except Exception as exc:  # e.g. an unsupported platform or Python
        warnings.warn(
            f"torch.compile of {name} is unavailable ({type(exc).__name__}: {exc}); "
            "running eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        return module_or_fn
    if isinstance(module_or_fn, nn.Module):
        return CompileFallback(module_or_fn, compiled)  # type: ignore[return-value]
    return CompiledFunction(module_or_fn, compiled)  # type: ignore[return-value]


RegionSpec = type | tuple[type, ...] | Callable[[str, nn.Module], bool]


def _matcher(regions: RegionSpec) -> Callable[[str, nn.Module], bool]:
    if isinstance(regions, type) or (isinstance(regions, tuple)
                                     and all(isinstance(r, type) for r in regions)):
        classes = regions
        return lambda name, m: isinstance(m, classes)
    if callable(regions):
        return regions  # type: ignore[return-value]
    raise TypeError("regions must be a module class, a tuple of classes or a predicate "
                    "(name, module) -> bool")


def compile_regions(
    model: nn.Module,
    regions: RegionSpec,
    *,
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = False,
    backend: str | Callable[..., Any] = "inductor",
    enabled: bool = True,
    recompile_limit: int | None = 64,
) -> list[str]:
    """Compile, in place, the ``forward`` of every submodule of ``model`` that matches
    ``regions`` (module classes, or a predicate ``(name, module) -> bool``); a match nested in
    another match is left to the outer one. Returns the names compiled (``[]`` when disabled
    as for :func:`maybe_compile`).

    One compiled function per class is shared by all its instances (see the module
    docstring), each wrapped as :func:`maybe_compile` wraps functions: a compile failure at
    call time warns once and runs that class eagerly. Parameters, ``state_dict`` keys and
    hooks are untouched; ``copy.deepcopy(model)`` gives a copy whose blocks run their own
    parameters through the same compiled code. :func:`uncompile_regions` undoes it (do so
    before pickling the whole module).

    ``dynamic=False`` (default) compiles one static graph per distinct input shape instead of
    switching to dynamic shapes at the first new shape. ``recompile_limit`` raises Dynamo's
    per-function limit of compiled variants (process-wide) to at least this value: a network
    whose blocks see more distinct shapes than the limit (8 by default) would otherwise run
    the extra ones eagerly.
    """
    if not enabled or not compile_enabled():
        return []
    match = _matcher(regions)
    if recompile_limit is not None:
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(int(cfg.recompile_limit), int(recompile_limit))
    per_class: dict[type, CompiledFunction] = {}
    done: list[str] = []
    for name, module in model.named_modules():
        nested = any(d == "" or name.startswith(d + ".") for d in done)
        if nested or not match(name, module):
            continue
        if isinstance(module.__dict__.get("forward"), types.MethodType):
            raise ValueError(f"{name or type(module).__name__} already has a compiled forward")
        cls = type(module)
        if cls not in per_class:
            fn = cls.forward
            try:
                compiled = torch.compile(fn, mode=mode, fullgraph=fullgraph, dynamic=dynamic,
                                         backend=backend)
            except Exception as exc:  # an unsupported platform or Python
                warnings.warn(f"torch.compile of {cls.__name__}.forward is unavailable "
                              f"({type(exc).__name__}: {exc}); running eagerly",
                              RuntimeWarning, stacklevel=2)
                return done
            per_class[cls] = CompiledFunction(fn, compiled)
        module.forward = types.MethodType(per_class[cls], module)  # type: ignore[method-assign]
        done.append(name)
    return done


def uncompile_regions(model: nn.Module) -> list[str]:
    """Undo :func:`compile_regions` on ``model``; returns the names restored."""
    names = []
    for name, module in model.named_modules():
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, types.MethodType) and isinstance(fwd.__func__, CompiledFunction):
            del module.forward
            names.append(name)
    return names
