"""One step at a time: the per-step updates of the one-NFE-per-step samplers, written once.

A *stepper* holds a solver's per-grid coefficients (float64 Python floats, computed once
before the loop by the samplers' own coefficient functions) and its multistep history, and
advances the centred state ``z`` (``z = x - c``) from grid index ``i`` to ``i + 1`` given the
denoiser's ``(z0, eps)`` at index ``i``::

    z_next = stepper.step(i, z, z0, eps, generator)

Both drivers use it: the sampler functions (:func:`~polydiff.core.samplers.ode.sample_ddim`,
:func:`~polydiff.core.samplers.dpmsolver.sample_dpmpp_2m` and its 3M / 2M-SDE siblings,
:func:`~polydiff.core.samplers.unipc.sample_unipc`) loop over it, and
:class:`~polydiff.core.interop.diffusers.PolydiffScheduler` calls it once per diffusers
``step``, so the two agree exactly. Build steppers on a grid with the samplers' constructors
:func:`~polydiff.core.samplers.ode.ddim_stepper`,
:func:`~polydiff.core.samplers.dpmsolver.dpmpp_stepper` and
:func:`~polydiff.core.samplers.unipc.unipc_stepper` (the coefficient functions live with their
sampler and its paper; this module imports none of them, so the samplers can import it).

Steps are a few fused tensor operations with Python-float coefficients: no host-device
synchronisation and no per-step allocation beyond the new state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, overload

import torch
from torch import Tensor

from polydiff.core.samplers._common import Sampling
from polydiff.core.utils import progress

if TYPE_CHECKING:
    from polydiff.core.samplers.unipc import UniPCStep

__all__ = ["Stepper", "DDIMStepper", "DPMSolverStepper", "UniPCStepper", "half_log_snr",
           "randn_like", "run_stepper"]


@overload
def half_log_snr(s: Sampling, /) -> list[float]:
    ...


@overload
def half_log_snr(alphas: Tensor, sigmas: Tensor, /) -> list[float]:
    ...


def half_log_snr(s_or_alphas: Sampling | Tensor, sigmas: Tensor | None = None, /) -> list[float]:
    """``lambda_i = log(alpha_i / sigma_i)`` of a grid (float64; ``+inf`` where ``sigma = 0``),
    the time variable of the exponential integrators (Lu et al. 2022, "DPM-Solver").

    Takes a :class:`~polydiff.core.samplers._common.Sampling` (anything with the grid's
    ``alphas`` and ``sigmas``) or the ``alphas`` and ``sigmas`` tensors themselves.
    """
    if sigmas is None:
        alphas, sigmas = s_or_alphas.alphas, s_or_alphas.sigmas  # type: ignore[union-attr]
    else:
        alphas = s_or_alphas  # type: ignore[assignment]
    return [math.log(a) - math.log(sg) if sg > 0 else math.inf
            for a, sg in zip(alphas.tolist(), sigmas.tolist())]


def randn_like(z: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise like ``z`` (complex standard normal for complex ``z``)."""
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


C = TypeVar("C")  # one step's coefficients


class Stepper(Generic[C]):
    """A one-NFE-per-step solver on a fixed grid, advanced by an outside loop.

    ``coefs[i]`` are the float64 coefficients of the step from grid index ``i`` to ``i + 1``;
    subclasses keep whatever history their update needs (:meth:`reset` forgets it).
    """

    def __init__(self, coefs: Sequence[C]):
        self.coefs = list(coefs)
        self.reset()

    @property
    def steps(self) -> int:
        """Number of grid intervals."""
        return len(self.coefs)

    def reset(self) -> None:
        """Forget the multistep history (a new trajectory starts)."""

    def step(self, i: int, z: Tensor, x0: Tensor, eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """The state at grid index ``i + 1`` from the state ``z`` at ``i`` and the denoiser's
        ``(x0, eps)`` there (``generator`` for stochastic updates)."""
        raise NotImplementedError


class DDIMStepper(Stepper[tuple[float, float, float]]):
    """DDIM (Song et al. 2021, eq. 12): ``z_next = c_0 z0 + c_eps eps + c_noise n`` with the
    per-step ``(c_0, c_eps, c_noise)`` of :func:`~polydiff.core.samplers.ode.ddim_coefficients`.
    No history."""

    def step(self, i: int, z: Tensor, x0: Tensor, eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        c_0, c_eps, c_noise = self.coefs[i]
        if c_eps == 0.0:
            z = x0 * c_0
        else:
            assert eps is not None, "this DDIM step needs the noise prediction"
            z = torch.add(x0 * c_0, eps, alpha=c_eps)
        if c_noise > 0.0:
            z = z.add_(randn_like(z, generator), alpha=c_noise)
        return z


class DPMSolverStepper(Stepper[tuple[float, float, float, float, float]]):
    """DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2 and its 3M / SDE
    extensions): ``z_next = A z + P m0 + Q m1 + R m2 + S n`` with the per-step
    ``(A, P, Q, R, S)`` of :func:`~polydiff.core.samplers.dpmsolver.dpmpp_coefficients`,
    ``m0 = x0`` and ``m1, m2`` the data predictions of the two previous steps (kept here)."""

    def reset(self) -> None:
        self.m1: Tensor | None = None
        self.m2: Tensor | None = None

    def step(self, i: int, z: Tensor, x0: Tensor, eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        a, p, q, r, noise = self.coefs[i]
        z_next = x0 * p if a == 0.0 else torch.add(z * a, x0, alpha=p)
        if q != 0.0:
            assert self.m1 is not None  # the coefficients use m1 only from the second step
            z_next.add_(self.m1, alpha=q)
        if r != 0.0:
            assert self.m2 is not None  # and m2 from the third
            z_next.add_(self.m2, alpha=r)
        if noise > 0.0:
            z_next.add_(randn_like(z, generator), alpha=noise)
        self.m2, self.m1 = self.m1, x0
        return z_next


def _combine(cx: float, z: Tensor, weights: tuple[float, ...], ms: list[Tensor]) -> Tensor:
    """``cx z + sum_k weights[k] ms[k]``."""
    out = z * cx if cx != 0.0 else torch.zeros_like(z)
    for w, m in zip(weights, ms):
        out.add_(m, alpha=w)
    return out


class UniPCStepper(Stepper["UniPCStep"]):
    """UniPC (Zhao et al. 2023, Algorithms 1-2, data prediction) with the
    :class:`~polydiff.core.samplers.unipc.UniPCStep` coefficients of
    :func:`~polydiff.core.samplers.unipc.unipc_coefficients`.

    A step is the UniC corrector of the previous step's result, using the new data
    prediction ``x0`` at no extra network call (:meth:`correct`), then the UniP predictor
    (:meth:`predict`); ``order`` data predictions are kept, newest first.
    """

    def __init__(self, coefs: Sequence[UniPCStep], order: int):
        self.order = int(order)
        super().__init__(coefs)

    def reset(self) -> None:
        self.hist: list[Tensor] = []  # data predictions m_i, m_{i-1}, ... (newest first)
        self.z_prev: Tensor | None = None  # the corrected state of the previous step

    def correct(self, i: int, z: Tensor, x0: Tensor) -> Tensor:
        """The (UniC-corrected) state at index ``i``, given the data prediction ``x0`` there
        and the predicted state ``z``; records ``x0`` in the history."""
        hist = self.hist
        if i > 0 and self.z_prev is not None:
            prev = self.coefs[i - 1]
            if prev.corr is not None:
                z = _combine(prev.cx, self.z_prev, prev.corr, [x0] + hist[: prev.order])
        hist.insert(0, x0)
        del hist[self.order:]
        self.z_prev = z
        return z

    def predict(self, i: int, z: Tensor) -> Tensor:
        """The UniP prediction of the state at index ``i + 1`` from the corrected ``z``."""
        st = self.coefs[i]
        return _combine(st.cx, z, st.pred, self.hist[: st.order])

    def step(self, i: int, z: Tensor, x0: Tensor, eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        return self.predict(i, self.correct(i, z, x0))


def run_stepper(s: Sampling, stepper: Stepper, disable: bool | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """The sampling loop of a one-NFE stepper: one denoiser call, one :meth:`Stepper.step`
    and the callback per grid interval; returns the final state ``x`` (centre added back).
    """
    z = s.z
    step, denoise, report = stepper.step, s.denoise, s.report
    for i in progress(s.steps, disable=disable):
        z0, eps = denoise(z, i)
        z = step(i, z, z0, eps, generator)
        report(i, z, z0)
    return s.finish(z)
