"""UniPC: the unified predictor-corrector multistep sampler of Zhao et al. (2023), "UniPC: A
Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models" (NeurIPS 2023).

Implements Algorithms 1-2 of Zhao et al. (2023) (UniP-p and UniC-p) in the data-prediction
form (the variant built on DPM-Solver++, Lu et al. 2022b, App. "UniPC with data prediction"),
multistep, for every Gaussian process. In the half-log-SNR ``lambda = log(alpha / sigma)``
the exact solution of the probability-flow ODE from ``t_i`` to ``t = t_{i+1}`` is
``z_t = (sigma_t / sigma_i) z_i + sigma_t int_{lambda_i}^{lambda_t} e^lambda x0(lambda) dlambda``;
with ``h = lambda_t - lambda_i``, ``r_k = (lambda_{i-k} - lambda_i) / h`` and the divided
differences ``D_k = (m_{i-k} - m_i) / r_k`` of the stored data predictions ``m``, UniP-p is

    z_t = (sigma_t / sigma_i) z_i - alpha_t (e^{-h} - 1) m_i
          - alpha_t B(h) sum_{k<p} a_k D_k,

with ``B(h) = -h`` ("bh1") or ``e^{-h} - 1`` ("bh2"), and the coefficients ``a`` solving
``R_p a = g_p / B(h)``, ``R_p[j, k] = r_k^(j-1)``, ``g_j = j! (-h) phi_{j+1}(-h)``
(``phi_k`` the exponential-integrator functions). UniC-p corrects ``z_t`` once the model has
been evaluated at the predicted point, adding the new difference ``D_p = m_t - m_i`` (``r_p =
1``); the evaluation ``m_t`` is kept as the data prediction at ``t`` for the next step, so the
corrector costs no extra network call (NFE = number of steps) and raises the order of
accuracy of UniP-p from ``p`` to ``p + 1`` (Zhao et al. 2023, Thm. 3.2-3.3). As in the
authors' reference implementation, UniP-2 and UniC-1 use ``a_1 = 1/2`` (any
``1/2 + O(h)`` keeps the order). No corrector follows the last step.

All coefficients are computed once per call in float64 and folded into one linear
combination of the stored data predictions per step, applied by
:class:`~polydiff.core.samplers.stepper.UniPCStepper` (shared with the diffusers scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers._common import Callback, Sampling
from polydiff.core.samplers.stepper import UniPCStepper
from polydiff.core.utils import progress

__all__ = ["UniPCStep", "unipc_coefficients", "unipc_stepper", "sample_unipc", "phi"]

Variant = Literal["bh1", "bh2"]


def phi(k: int, z: float) -> float:
    """The exponential-integrator function ``phi_k(z) = sum_n z^n / (n + k)!``
    (``phi_0 = e^z``, ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``), without cancellation for
    small ``|z|`` (Taylor series) and exact limits at ``z = -inf``."""
    if k == 0:
        return math.exp(z)
    if z == -math.inf:
        return 0.0
    if abs(z) < 1.0:
        term, total, n = 1.0 / math.factorial(k), 0.0, 0
        while True:  # converges to double precision within ~20 terms for |z| < 1
            total += term
            n += 1
            term *= z / (n + k)
            if abs(term) < 1e-17 * abs(total) or n > 60:
                return total + term
    val = math.exp(z)
    for j in range(k):
        val = (val - 1.0 / math.factorial(j)) / z
    return val


@dataclass(frozen=True)
class UniPCStep:
    """Precomputed coefficients of one UniPC step from grid index ``i`` to ``i + 1``.

    ``z_pred = cx z_i + sum_k pred[k] m_{i-k}``; ``corr`` (``None``: no corrector) gives
    ``z_corr = cx z_i + corr[0] m_{i+1} + sum_k corr[k + 1] m_{i-k}``.
    """

    order: int
    cx: float
    pred: tuple[float, ...]
    corr: tuple[float, ...] | None


def _solve(r: list[float], g: list[float], n: int) -> list[float]:
    """Solve the ``n x n`` Vandermonde system ``R a = g``, ``R[j, k] = r_k^j``, in float64
    (Gaussian elimination with partial pivoting; ``n <= 3``, so plain Python is cheapest)."""
    m = [[r[k] ** j for k in range(n)] + [g[j]] for j in range(n)]
    for c in range(n):
        piv = max(range(c, n), key=lambda j: abs(m[j][c]))
        m[c], m[piv] = m[piv], m[c]
        for j in range(c + 1, n):
            f = m[j][c] / m[c][c]
            m[j] = [u - f * v for u, v in zip(m[j], m[c])]
    a = [0.0] * n
    for j in reversed(range(n)):
        a[j] = (m[j][n] - sum(m[j][k] * a[k] for k in range(j + 1, n))) / m[j][j]
    return a


def _lambdas(alphas: Tensor, sigmas: Tensor) -> list[float]:
    """Half-log-SNR ``log(alpha / sigma)`` in float64 (``+inf`` at ``sigma = 0``, ``-inf`` at
    ``alpha = 0``)."""
    a, s = alphas.double().cpu(), sigmas.double().cpu()
    return (torch.log(a) - torch.log(s)).tolist()


def unipc_coefficients(alphas: Tensor, sigmas: Tensor, order: int = 3, variant: Variant = "bh2",
                       lower_order_final: bool = True,
                       disable_corrector: Collection[int] | bool = ()) -> list[UniPCStep]:
    """Coefficients of every step of UniPC on a grid with ``alphas``/``sigmas`` (``n + 1``
    points, float64).

    Step ``i`` uses order ``p_i = min(order, i + 1)`` (multistep warm-up), also
    ``<= n - i`` with ``lower_order_final``; a step touching ``sigma = 0`` or ``alpha = 0``
    (infinite ``h``) or whose history does is first order. ``disable_corrector`` lists step
    indices whose result is not corrected (``True``: all); the last step is never corrected.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    lam = _lambdas(alphas, sigmas)
    sig = sigmas.double().cpu().tolist()
    alp = alphas.double().cpu().tolist()
    n = len(lam) - 1
    for j in range(1, n):
        if sig[j] == 0.0:
            raise ValueError("sigma = 0 is allowed only at the last grid point")
    no_corr = set(range(n)) if disable_corrector is True else set(disable_corrector or ())
    steps: list[UniPCStep] = []
    run = 0  # consecutive finite lambdas ending at index i
    for i in range(n):
        run = run + 1 if math.isfinite(lam[i]) else 0
        p = min(order, i + 1)
        if lower_order_final:
            p = min(p, n - i)
        finite = math.isfinite(lam[i]) and math.isfinite(lam[i + 1])
        if not finite:
            p = 1
        p = max(1, min(p, run))
        a_t = alp[i + 1]
        if sig[i + 1] == 0.0:  # the data endpoint: z = alpha_t m_i exactly
            steps.append(UniPCStep(1, 0.0, (a_t,), None))
            continue
        cx = sig[i + 1] / sig[i]
        h = lam[i + 1] - lam[i]
        hh = -h
        h_phi_1 = math.expm1(hh)  # e^{-h} - 1
        if not finite:
            steps.append(UniPCStep(1, cx, (-a_t * h_phi_1,), None))
            continue
        b_h = hh if variant == "bh1" else h_phi_1
        r = [(lam[i - k] - lam[i]) / h for k in range(1, p)] + [1.0]
        g = [math.factorial(j) * hh * phi(j + 1, hh) / b_h for j in range(1, p + 1)]
        # predictor: weights on m_i, m_{i-1}, ..., m_{i-p+1}
        if p == 1:
            rho_p: list[float] = []
        elif p == 2:
            rho_p = [0.5]
        else:
            rho_p = _solve(r, g, p - 1)
        pred = [-a_t * h_phi_1 + a_t * b_h * sum(rk / r[k] for k, rk in enumerate(rho_p))]
        pred += [-a_t * b_h * rk / r[k] for k, rk in enumerate(rho_p)]
        corr = None
        if i < n - 1 and i not in no_corr:
            rho_c = [0.5] if p == 1 else _solve(r, g, p)
            w_new = -a_t * b_h * rho_c[-1]
            w_i = -a_t * h_phi_1 + a_t * b_h * (sum(rc / r[k] for k, rc in enumerate(rho_c[:-1]))
                                                + rho_c[-1])
            corr = tuple([w_new, w_i] + [-a_t * b_h * rc / r[k]
                                         for k, rc in enumerate(rho_c[:-1])])
        steps.append(UniPCStep(p, cx, tuple(pred), corr))
    return steps


def unipc_stepper(alphas: Tensor, sigmas: Tensor, order: int = 3, variant: Variant = "bh2",
                  lower_order_final: bool = True,
                  disable_corrector: Collection[int] | bool = ()) -> UniPCStepper:
    """UniPC (:func:`sample_unipc`) on a grid with float64 ``alphas``/``sigmas``, one step at
    a time (:class:`~polydiff.core.samplers.stepper.UniPCStepper`; arguments as
    :func:`unipc_coefficients`)."""
    return UniPCStepper(unipc_coefficients(alphas, sigmas, order, variant, lower_order_final,
                                           disable_corrector), order)


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                 cond: dict[str, Any] | None = None, order: int = 3, variant: Variant = "bh2",
                 lower_order_final: bool = True,
                 disable_corrector: Collection[int] | bool = (),
                 callback: Callback | None = None, disable: bool | None = None) -> Tensor:
    """UniPC (Zhao et al. 2023, Algorithms 1-2, data prediction, ``B(h)`` = ``bh1``/``bh2``):
    multistep UniP-``order`` predictor with the UniC corrector after every step but the last,
    one denoiser call per step.

    Args:
        denoiser: a :class:`~polydiff.core.denoiser.Denoiser`.
        x: ``(B, ...)`` at ``ts[0]``.
        ts: descending process times; may end at ``process.t_zero`` (``sigma = 0``, where the
            last step is the first-order ``z = alpha m``).
        order: ``p`` in 1..3 (UniPC-p; order of accuracy ``p + 1`` with the corrector, ``p``
            without).
        variant: ``"bh2"`` (``B(h) = e^{-h} - 1``, the paper's choice for guided / few-step
            sampling) or ``"bh1"`` (``B(h) = -h``).
        lower_order_final: use order ``min(order, steps left)`` in the final steps (stabler
            at <= 10 steps; costs the global order at many steps).
        disable_corrector: step indices whose result is not corrected (diffusers'
            ``disable_corrector``), or ``True`` for plain UniP.
        callback: called after each step with ``{"i", "t", "t_next", "x", "x0"}`` where ``x``
            is the (corrected) state at ``t`` and ``x0`` the data prediction there.
    """
    s = Sampling(denoiser, x, ts, cond, callback)
    stepper = unipc_stepper(s.alphas, s.sigmas, order, variant, lower_order_final,
                            disable_corrector)
    z = s.z
    for i in progress(s.steps, disable=disable):  # (the callback sees the corrected state at t_i)
        m, _ = s.denoise(z, i)
        z = stepper.correct(i, z, m)
        s.report(i, z, m)
        z = stepper.predict(i, z)
    return s.finish(z)
