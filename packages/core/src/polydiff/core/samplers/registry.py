"""The one list of polydiff's samplers: name -> function, stochastic or not, default grid.

Apps (``--sampler`` choices), domain packages and the diffusers adapter
(:class:`~polydiff.core.interop.diffusers.PolydiffScheduler`) read sampler names from here.
This module imports only the standard library (a CLI can list the names without importing
torch); a sampler's function is imported on first use::

    from polydiff.core.samplers.registry import SAMPLERS, get_sampler

    spec = get_sampler("dpmpp_2m")
    ts = spec.grid(process, 10)               # its default grid of 10 steps
    x = spec.fn(denoiser, x_T, ts)            # the sampler function itself
    x = spec.run(denoiser, x_T, ts, generator=g)  # or: pass generator only if it takes one

Every entry's ``fn`` has the common sampler surface ``fn(denoiser, x, ts, *, cond=None,
callback=None, disable=None, **hyper)`` (:mod:`polydiff.core.samplers._common`); ``defaults``
are hyperparameters the name implies (e.g. ``"pc"`` is :func:`~polydiff.core.samplers.sde.
sample_pc` with SGMSE+'s reverse-diffusion predictor and annealed Langevin corrector).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["SamplerSpec", "SAMPLERS", "get_sampler", "sampler_names", "stepper_names"]

_PKG = "polydiff.core.samplers"


@dataclass(frozen=True)
class SamplerSpec:
    """One registered sampler.

    Attributes:
        name: the registry name (what ``--sampler`` takes).
        target: ``"module:function"`` of the sampler function.
        stochastic: whether it draws fresh noise at every step (it takes ``generator``/``seed``).
        grid_kind: its default grid: ``"default"`` is :func:`~polydiff.core.grids.default_grid`
            (the measured best for few-step ODE sampling), any other value a
            :func:`~polydiff.core.grids.time_grid` kind used with ``final_zero=True``.
        default_steps: a sensible number of steps when the user gives none.
        evals_per_step: network evaluations per step (Heun: 2, except the last step: 1).
        description: one line for ``--help`` and listings.
        defaults: hyperparameters implied by the name, passed before the caller's.
        stepper: ``"module:function"`` building the sampler's one-step
            :class:`~polydiff.core.samplers.stepper.Stepper` from ``(alphas, sigmas,
            **hyper)`` (what :class:`PolydiffScheduler` drives), or ``""`` if it has none.
        stepper_defaults: keyword arguments the stepper constructor needs for this name.
        adaptive: the sampler chooses its own steps (only the grid's ends matter).
    """

    name: str
    target: str
    stochastic: bool
    grid_kind: str = "default"
    default_steps: int = 20
    evals_per_step: int = 1
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    stepper: str = ""
    stepper_defaults: Mapping[str, Any] = field(default_factory=dict)
    adaptive: bool = False

    @property
    def fn(self) -> Any:
        """The sampler function (imported on first access)."""
        return _resolve(self.target)

    def steps_for_nfe(self, nfe: int) -> int:
        """The most steps whose network evaluations fit in ``nfe`` (at least 1)."""
        if self.evals_per_step == 1:
            return max(1, int(nfe))
        return max(1, (int(nfe) + self.evals_per_step - 1) // self.evals_per_step)

    def grid(self, process: Any, steps: int | None = None, *, device: Any = None) -> Any:
        """This sampler's default grid of ``steps`` steps (default :attr:`default_steps`)
        for ``process``: a descending float64 tensor of process times."""
        from polydiff.core.grids import default_grid, time_grid

        n = self.default_steps if steps is None else int(steps)
        if self.adaptive:
            n = 2  # only the ends matter
        if self.grid_kind == "default":
            return default_grid(process, n, device=device)
        return time_grid(process, n, self.grid_kind, final_zero=True, device=device)

    def run(self, denoiser: Any, x: Any, ts: Any = None, *, steps: int | None = None,
            generator: Any = None, **kw: Any) -> Any:
        """Sample with this entry: ``ts`` (default: :meth:`grid` of ``steps`` steps), the
        name's :attr:`defaults` under the caller's keywords, and ``generator`` passed only to
        samplers that take one."""
        if ts is None:
            ts = self.grid(denoiser.process, steps, device=x.device)
        fn = self.fn
        args = {**self.defaults, **kw}
        if generator is not None and _takes(fn, "generator"):
            args["generator"] = generator
        return fn(denoiser, x, ts, **args)

    def make_stepper(self, alphas: Any, sigmas: Any, **hyper: Any) -> Any:
        """The one-step :class:`~polydiff.core.samplers.stepper.Stepper` on a grid with these
        ``alphas``/``sigmas`` (float64 tensors)."""
        if not self.stepper:
            raise ValueError(f"sampler {self.name!r} has no one-step stepper; those that do: "
                             f"{', '.join(stepper_names())}")
        return _resolve(self.stepper)(alphas, sigmas, **{**self.stepper_defaults, **hyper})


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _takes(fn: Any, param: str) -> bool:
    try:
        return param in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _spec(name: str, target: str, stochastic: bool, description: str, **kw: Any
          ) -> tuple[str, SamplerSpec]:
    return name, SamplerSpec(name, f"{_PKG}.{target}", stochastic, description=description,
                             **kw)


_DPM = f"{_PKG}.dpmsolver:dpmpp_stepper"

#: name -> :class:`SamplerSpec`, read-only. ODE samplers first, then stochastic ones.
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType(dict([
    _spec("ddim", "ode:sample_ddim", False,
          "DDIM (Song et al. 2021); eta > 0 makes it stochastic",
          stepper=f"{_PKG}.ode:ddim_stepper"),
    _spec("euler", "ode:sample_euler", False, "Euler on the probability-flow ODE (Karras)"),
    _spec("heun", "ode:sample_heun", False, "Heun, 2 evaluations per step (Karras et al. 2022)",
          evals_per_step=2, default_steps=10),
    _spec("dpmpp_2m", "dpmsolver:sample_dpmpp_2m", False,
          "DPM-Solver++(2M), multistep 2nd order (Lu et al. 2022)",
          stepper=_DPM, stepper_defaults={"order": 2}),
    _spec("dpmpp_3m", "dpmsolver:sample_dpmpp_3m", False,
          "DPM-Solver++(3M), multistep 3rd order", stepper=_DPM,
          stepper_defaults={"order": 3}),
    _spec("unipc", "unipc:sample_unipc", False,
          "UniPC-3 predictor-corrector (Zhao et al. 2023)",
          stepper=f"{_PKG}.unipc:unipc_stepper"),
    _spec("ipndm", "ipndm:sample_ipndm", False,
          "iPNDM, 4th-order multistep (Zhang & Chen 2023)"),
    _spec("ode", "adaptive:sample_ode_adaptive", False,
          "adaptive Dormand-Prince on the probability-flow ODE", adaptive=True,
          grid_kind="uniform"),
    _spec("dpmpp_2m_sde", "dpmsolver:sample_dpmpp_2m_sde", True,
          "SDE-DPM-Solver++(2M) (Lu et al. 2022)", stepper=_DPM,
          stepper_defaults={"order": 2, "eta": 1.0}),
    _spec("ddpm", "sde:sample_ddpm", True, "ancestral sampling (Ho et al. 2020)",
          grid_kind="uniform", default_steps=100),
    _spec("em", "sde:sample_euler_maruyama", True,
          "Euler-Maruyama on the reverse SDE (Song et al. 2021)", grid_kind="uniform",
          default_steps=100),
    _spec("pc", "sde:sample_pc", True,
          "reverse diffusion + annealed Langevin corrector (Song et al. 2021; SGMSE+)",
          grid_kind="uniform", default_steps=30,
          defaults={"predictor": "reverse_diffusion", "corrector": "ald"}),
]))


def get_sampler(name: str) -> SamplerSpec:
    """The registry entry ``name``; a ``ValueError`` listing the choices otherwise."""
    spec = SAMPLERS.get(name)
    if spec is None:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return spec


def sampler_names(stochastic: bool | None = None) -> tuple[str, ...]:
    """Registered names, in registry order (``stochastic=False``: ODE samplers only;
    ``True``: stochastic ones only)."""
    return tuple(n for n, s in SAMPLERS.items() if stochastic is None or s.stochastic == stochastic)


def stepper_names() -> tuple[str, ...]:
    """Samplers with a one-step stepper (one network evaluation per step): the solvers of
    :class:`~polydiff.core.interop.diffusers.PolydiffScheduler`."""
    return tuple(n for n, s in SAMPLERS.items() if s.stepper)
