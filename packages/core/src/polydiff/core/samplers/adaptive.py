"""Adaptive probability-flow ODE solving and exact log-likelihoods.

* :func:`odeint_adaptive`: an embedded explicit Runge-Kutta solver with step-size control,
  Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae" (DOPRI5, order 5(4),
  FSAL) or Bogacki & Shampine (1989) (order 3(2)); the controller and the initial step follow
  Hairer, Norsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.4. The
  state is a tuple of batched tensors; the step size is shared by the batch and accepted when
  every sample meets ``atol + rtol |y|`` in its root-mean-square norm.
* :func:`solve_pf_ode` / :func:`sample_ode_adaptive`: the probability-flow ODE (Song et al.
  2021, "Score-Based Generative Modeling through Stochastic Differential Equations", Sec. 4.3)
  of any Gaussian process, integrated by default in the scaled variable ``x~ = (x - c) /
  alpha`` against ``u = log sigma~`` (``sigma~ = sigma / alpha``), where it reads
  ``dx~/du = x~ - D(x~)`` with ``D`` the denoiser's centred data prediction (Karras et al.
  2022, eq. 4 with ``sigma(t) = t``, in log-time): a field with Lipschitz constant ~1 at
  every noise level. ``variable="t"`` integrates ``dx/dt = alpha' x0 + sigma' eps`` in process
  time instead (needed where ``alpha`` vanishes, e.g. interpolants at ``t = 1``).
* :func:`log_likelihood`: the instantaneous change of variables (Chen et al. 2018, "Neural
  Ordinary Differential Equations", Thm. 1; Song et al. 2021, eq. 39 and App. D.2),
  ``d log p_t(x(t)) / dt = -div v(x(t), t)``, integrated together with the PF-ODE from the
  data to ``t_max`` and closed with the prior log-density; the divergence is exact (one
  backward pass per dimension) or the Hutchinson-Skilling estimate ``eps^T (dv/dx) eps``
  (Hutchinson 1990; Skilling 1989; Grathwohl et al. 2019, FFJORD) with Rademacher or Gaussian
  probes drawn once per solve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from polydiff.core.denoiser import Denoiser
from polydiff.core.samplers._common import Callback, Sampling
from polydiff.core.shapes import append_dims, as_time
from polydiff.core.utils import quiet

__all__ = ["Tableau", "TABLEAUS", "odeint_adaptive", "solve_pf_ode", "sample_ode_adaptive",
           "log_likelihood"]

State = tuple[Tensor, ...]
Variable = Literal["log_sigma", "t"]


# --------------------------------------------------------------------------- RK tableaus
@dataclass(frozen=True)
class Tableau:
    """An embedded explicit Runge-Kutta pair: nodes ``c``, stage matrix rows ``a``, the
    propagated weights ``b`` and the error weights ``e = b - b_hat``; ``order`` is the order
    of the error estimate's lower member (the controller's exponent is ``1 / (order + 1)``);
    ``fsal``: the last stage is the derivative at the new point."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    order: int
    fsal: bool


def _diff(b: tuple[float, ...], bh: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(x - y for x, y in zip(b, bh))


_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = Tableau(  # Dormand & Prince (1980), Table 2 ("RK5(4)7M")
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=((),
       (1 / 5,),
       (3 / 40, 9 / 40),
       (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       _DP_B[:6]),
    b=_DP_B,
    e=_diff(_DP_B, (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100,
                    1 / 40)),
    order=4, fsal=True)

_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = Tableau(  # Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas"
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((), (1 / 2,), (0.0, 3 / 4), _BS_B[:3]),
    b=_BS_B,
    e=_diff(_BS_B, (7 / 24, 1 / 4, 1 / 3, 1 / 8)),
    order=2, fsal=True)

TABLEAUS: dict[str, Tableau] = {"dopri5": DOPRI5, "bosh3": BOSH3}


# --------------------------------------------------------------------------- the integrator
def _axpy(y: State, h: float, coeffs: tuple[float, ...], ks: list[State]) -> State:
    """``y + h sum_j coeffs[j] ks[j]`` component-wise over the state tuple."""
    out = []
    for n, yn in enumerate(y):
        acc = yn.clone()
        for cj, k in zip(coeffs, ks):
            if cj != 0.0:
                acc.add_(k[n], alpha=h * cj)
        out.append(acc)
    return tuple(out)


def _rms_ratio(err: State, y0: State, y1: State, rtol: float, atol: float) -> float:
    """Max over the batch (and over state components) of the per-sample RMS of
    ``err / (atol + rtol max(|y0|, |y1|))``."""
    worst = 0.0
    for e, a, b in zip(err, y0, y1):
        scale = atol + rtol * torch.maximum(a.abs(), b.abs())
        r = (e.abs() / scale).reshape(e.shape[0], -1).double()
        worst = max(worst, float(r.pow(2).mean(1).sqrt().max()))
    return worst


def odeint_adaptive(f: Callable[[float, State], State], y0: State, s0: float, s1: float, *,
                    rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                    max_steps: int = 100_000, h0: float | None = None,
                    on_step: Callable[[int, float, float, State], None] | None = None
                    ) -> tuple[State, int, int]:
    """Integrate ``dy/ds = f(s, y)`` from ``s0`` to ``s1`` (either direction) with the embedded
    pair ``method`` (:data:`TABLEAUS`) and error control (Hairer et al. I, Sec. II.4: step
    factor ``0.9 err^(-1/(q+1))`` clamped to ``[0.2, 10]``, no growth right after a
    rejection; automatic initial step unless ``h0``).

    Returns ``(y(s1), nfe, accepted_steps)``. ``on_step(n, s_old, s_new, y_new)`` is called
    after every accepted step. Raises ``RuntimeError`` after ``max_steps`` attempted steps.
    """
    if method not in TABLEAUS:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(TABLEAUS)}")
    tab = TABLEAUS[method]
    y = tuple(y0)
    span = s1 - s0
    if span == 0.0:
        return y, 0, 0
    direction = 1.0 if span > 0 else -1.0
    k1 = f(s0, y)
    nfe = 1
    expo = 1.0 / (tab.order + 1)
    if h0 is None:  # Hairer et al. I, Sec. II.4, "starting step size"
        d0 = _rms_ratio(y, y, y, rtol, atol)
        d1 = _rms_ratio(k1, y, y, rtol, atol)
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h = min(h, abs(span))
        y_try = _axpy(y, direction * h, (1.0,), [k1])
        k_try = f(s0 + direction * h, y_try)
        nfe += 1
        d2 = _rms_ratio(tuple(a - b for a, b in zip(k_try, k1)), y, y, rtol, atol) / h
        dm = max(d1, d2)
        h1 = max(1e-6, h * 1e-3) if dm <= 1e-15 else (0.01 / dm) ** expo
        h = min(100 * h, h1)
    else:
        h = abs(h0)
    s, n_acc, n_try, rejected = s0, 0, 0, False
    while direction * (s1 - s) > 0:
        if n_try >= max_steps:
            raise RuntimeError(f"odeint_adaptive: no convergence within max_steps={max_steps} "
                               f"(reached s={s:.6g} of [{s0:.6g}, {s1:.6g}])")
        n_try += 1
        last = h >= abs(s1 - s) * (1 - 1e-12)
        hs = (s1 - s) if last else direction * h
        ks = [k1]
        for i in range(1, len(tab.c)):
            yi = _axpy(y, hs, tab.a[i], ks)
            if tab.fsal and i == len(tab.c) - 1:
                y_new = yi
            ks.append(f(s + hs * tab.c[i], yi))
        nfe += len(tab.c) - 1
        if not tab.fsal:
            y_new = _axpy(y, hs, tab.b, ks)
        err = tuple(torch.zeros_like(v) for v in y)
        err = _axpy(err, hs, tab.e, ks)
        ratio = _rms_ratio(err, y, y_new, rtol, atol)
        if not math.isfinite(ratio):
            ratio = 1e10
        factor = 10.0 if ratio == 0.0 else min(10.0, max(0.2, 0.9 * ratio ** (-expo)))
        if ratio <= 1.0:
            s_old, s = s, (s1 if last else s + hs)
            y = y_new
            k1 = ks[-1] if tab.fsal else f(s, y)
            nfe += 0 if tab.fsal else 1
            n_acc += 1
            if on_step is not None:
                on_step(n_acc, s_old, s, y)
            h = abs(hs) * (min(1.0, factor) if rejected else factor)
            rejected = False
        else:
            h = abs(hs) * min(1.0, factor)
            rejected = True
    return y, nfe, n_acc


# --------------------------------------------------------------------------- the PF-ODE
class _PFODE:
    """The centred probability-flow ODE of ``denoiser`` in the integration variable
    ``variable``: ``"log_sigma"`` (state ``x~ = z / alpha``, time ``u = log sigma~``) or
    ``"t"`` (state ``z``, process time)."""

    def __init__(self, denoiser: Denoiser, batch: int, device: torch.device,
                 cond: dict[str, Any], c: Tensor | None, variable: Variable):
        if variable not in ("log_sigma", "t"):
            raise ValueError(f"variable must be 'log_sigma' or 't', got {variable!r}")
        self.denoiser, self.process, self.cond, self.c = denoiser, denoiser.process, cond, c
        self.batch, self.device, self.variable = batch, device, variable
        self._known: dict[float, float] = {}
        self.nfe = 0

    def time(self, t: float) -> Tensor:
        return as_time(t, self.batch, device=self.device)

    def s_of_t(self, t: float) -> float:
        """Integration time of process time ``t`` (remembered, so ends map back exactly)."""
        if self.variable == "t":
            return t
        st = float(self.process.sigma_tilde(torch.tensor([t], dtype=torch.float64))[0])
        if not 0.0 < st < math.inf:
            raise ValueError(f"sigma~ = {st} at t = {t}: the log-sigma variable needs "
                             f"0 < sigma/alpha < inf; use variable='t' or another t")
        s = math.log(st)
        self._known[s] = t
        return s

    def t_of_s(self, s: float) -> float:
        if self.variable == "t":
            return s
        if s in self._known:
            return self._known[s]
        st = torch.tensor([math.exp(s)], dtype=torch.float64)
        return float(self.process.t_from_sigma_tilde(st).reshape(-1)[0])

    def alpha(self, t: float) -> float:
        return float(self.process.alpha(torch.tensor([t], dtype=torch.float64))[0])

    def to_state(self, z: Tensor, t: float) -> Tensor:
        return z / self.alpha(t) if self.variable == "log_sigma" else z

    def from_state(self, y: Tensor, t: float) -> Tensor:
        return y * self.alpha(t) if self.variable == "log_sigma" else y

    def denoise(self, z: Tensor, tv: Tensor) -> tuple[Tensor, Tensor]:
        x = z if self.c is None else z + self.c
        x0, eps = self.denoiser.x0_eps(x, tv, **self.cond)
        self.nfe += 1
        return (x0 if self.c is None else x0 - self.c), eps

    def velocity(self, s: float, y: Tensor) -> Tensor:
        """``dy/ds``."""
        t = self.t_of_s(s)
        tv = self.time(t)
        if self.variable == "log_sigma":
            z0, _ = self.denoise(y * self.alpha(t), tv)
            return y - z0
        z0, eps = self.denoise(y, tv)
        return self.process.pf_ode_from_x0_eps(z0, eps, tv)


def _progress_hook(bar: tqdm | None, s0: float, s1: float,
                   ode: _PFODE, callback: Callback | None
                   ) -> Callable[[int, float, float, State], None] | None:
    if bar is None and callback is None:
        return None

    def hook(n: int, s_old: float, s_new: float, y: State) -> None:
        if bar is not None:
            bar.n = round(1000 * (s_new - s0) / (s1 - s0))
            bar.refresh()
        if callback is not None:
            t_new = ode.t_of_s(s_new)
            z = ode.from_state(y[0], t_new)
            callback({"i": n - 1, "t": ode.t_of_s(s_old), "t_next": t_new,
                      "x": z if ode.c is None else z + ode.c, "x0": None})
    return hook


@torch.no_grad()
def solve_pf_ode(denoiser: Denoiser, x: Tensor, t_start: float, t_end: float, *,
                 cond: dict[str, Any] | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                 method: str = "dopri5", variable: Variable = "log_sigma",
                 max_steps: int = 100_000, callback: Callback | None = None,
                 disable: bool | None = True) -> tuple[Tensor, int]:
    """Solve the probability-flow ODE (Song et al. 2021, Sec. 4.3) of ``denoiser`` from
    ``x`` at ``t_start`` to ``t_end`` (either direction: ``t_end > t_start`` encodes) with the
    adaptive pair ``method`` (``"dopri5"``: Dormand & Prince 1980; ``"bosh3"``) at
    ``rtol``/``atol`` (on the integration state, see the module docstring for ``variable``).

    Both ends need ``sigma > 0`` (``0 < sigma~ < inf`` for ``variable="log_sigma"``). Works in
    ``x``'s dtype (use float64 for tight tolerances). ``callback`` receives ``{"i", "t",
    "t_next", "x", "x0": None}`` after each accepted step, ``x`` being the state at
    ``t_next``. Returns ``(x(t_end), nfe)``.
    """
    cond = dict(cond or {})
    c = denoiser.center(cond)
    t_start, t_end = float(t_start), float(t_end)
    ode = _PFODE(denoiser, x.shape[0], x.device, cond, c, variable)
    s0, s1 = ode.s_of_t(t_start), ode.s_of_t(t_end)
    y0 = ode.to_state(x if c is None else x - c, t_start)
    bar = None if (quiet() if disable is None else disable) else \
        tqdm(total=1000, leave=False, desc="pf-ode")
    try:
        (y1,), nfe, _ = odeint_adaptive(lambda s, y: (ode.velocity(s, y[0]),), (y0,), s0, s1,
                                        rtol=rtol, atol=atol, method=method,
                                        max_steps=max_steps,
                                        on_step=_progress_hook(bar, s0, s1, ode, callback))
    finally:
        if bar is not None:
            bar.close()
    z = ode.from_state(y1, t_end)
    return (z if c is None else z + c), nfe


@torch.no_grad()
def sample_ode_adaptive(denoiser: Denoiser, x: Tensor, ts: Tensor, *,
                        cond: dict[str, Any] | None = None, rtol: float = 1e-5,
                        atol: float = 1e-5, method: str = "dopri5",
                        variable: Variable = "log_sigma", max_steps: int = 100_000,
                        callback: Callback | None = None, disable: bool | None = None
                        ) -> Tensor:
    """Sampler surface of :func:`solve_pf_ode`: integrates from ``ts[0]`` to ``ts[-1]`` (the
    grid's interior points are ignored). Where ``ts[-1]`` has ``sigma = 0``
    (``process.t_zero``) it integrates to ``ts[-2]`` and finishes with the denoiser's
    ``x = c + alpha(ts[-1]) (x0 - c)`` (one more evaluation)."""
    s = Sampling(denoiser, x, ts, cond, callback)
    t0, t1 = float(s.ts[0]), float(s.ts[-1])
    to_zero = float(s.sigmas[-1]) == 0.0
    if to_zero:
        t1 = float(s.ts[-2])
    z = s.z
    if t1 != t0:
        out, _ = solve_pf_ode(denoiser, s.finish(z), t0, t1, cond=cond, rtol=rtol, atol=atol,
                              method=method, variable=variable, max_steps=max_steps,
                              callback=callback, disable=disable)
        z = out if s.c is None else out - s.c
    if to_zero:
        z0, _ = s.denoise_at(z, s.t(s.steps - 1) if t1 != t0 else s.t(0))
        z = z0 * append_dims(s.alphas[-1], z0)
    return s.finish(z)


# --------------------------------------------------------------------------- likelihood
def _divergence(v: Tensor, y: Tensor, probes: Tensor | None) -> Tensor:
    """``div_y v`` per sample: exact (``probes=None``: one backward per dimension) or the
    Hutchinson-Skilling mean of ``eps^T (dv/dy) eps`` over ``probes`` ``(P, B, ...)``."""
    flat_dim = y[0].numel()
    div = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    if probes is None:
        onehot = torch.zeros_like(y).reshape(y.shape[0], flat_dim)
        for j in range(flat_dim):
            onehot.zero_()
            onehot[:, j] = 1.0
            (g,) = torch.autograd.grad(v, y, onehot.reshape(y.shape), retain_graph=True)
            div += g.reshape(y.shape[0], flat_dim)[:, j].double()
        return div
    for p in range(probes.shape[0]):
        (g,) = torch.autograd.grad(v, y, probes[p], retain_graph=p < probes.shape[0] - 1)
        div += (g * probes[p]).reshape(y.shape[0], -1).double().sum(1)
    return div / probes.shape[0]


def log_likelihood(denoiser: Denoiser, x0: Tensor, *, cond: dict[str, Any] | None = None,
                   t_eps: float | None = None, t_end: float | None = None,
                   trace: Literal["hutchinson", "exact"] = "hutchinson", n_probes: int = 1,
                   probe: Literal["rademacher", "gaussian"] = "rademacher",
                   generator: torch.Generator | None = None, rtol: float = 1e-5,
                   atol: float = 1e-5, method: str = "dopri5", variable: Variable = "log_sigma",
                   prior_logp: Callable[[Tensor], Tensor] | None = None,
                   max_steps: int = 100_000) -> dict[str, Tensor | int]:
    """Log-likelihood by the probability-flow ODE and the instantaneous change of variables
    (Chen et al. 2018, Thm. 1; Song et al. 2021, eq. 39 and App. D.2).

    Convention: the result is ``log p_{t_eps}(x0)``, the density of the noisy marginal at
    ``t_eps`` (default ``process.t_min``) evaluated at ``x_{t_eps} = x0`` (no noise is added),
    in nats, of the data in ``x0``'s units: ``log p_{t_eps}(x(t_eps)) = log p_T(x(T)) +
    int_{t_eps}^{T} div v dt`` along the PF-ODE trajectory from ``x0`` to ``T = t_end``
    (default ``process.t_max``), with ``log p_T`` the prior ``process.prior_logp`` (or
    ``prior_logp(x_T)`` if given, e.g. an exact marginal). In the ``log_sigma`` variable the
    Jacobian of ``x -> x~ = (x - c)/alpha`` adds ``D (log alpha(T) - log alpha(t_eps))``.

    Args:
        trace: ``"exact"`` (autograd, one backward pass per dimension: small ``D`` only) or
            ``"hutchinson"`` (unbiased estimate from ``n_probes`` ``probe`` vectors drawn once
            per solve with ``generator``, averaged at every evaluation).
        rtol, atol: tolerances of the augmented solve (the log-density is error-controlled
            like the state).

    Returns:
        ``{"logp": (B,) float64 nats, "bpd": (B,) bits per dimension = -logp / (D ln 2),
        "nfe": int, "prior_logp": (B,), "z": x at t_end}``. For discrete data (e.g. 8-bit
        images rescaled to [-1, 1]) add the dequantisation / rescaling terms yourself.
    """
    if x0.is_complex():
        raise NotImplementedError("log_likelihood supports real data")
    if trace not in ("hutchinson", "exact"):
        raise ValueError(f"trace must be 'hutchinson' or 'exact', got {trace!r}")
    cond = dict(cond or {})
    process = denoiser.process
    c = denoiser.center(cond)
    t0 = float(process.t_min if t_eps is None else t_eps)
    t1 = float(process.t_max if t_end is None else t_end)
    batch, dim = x0.shape[0], x0[0].numel()
    ode = _PFODE(denoiser, batch, x0.device, cond, c, variable)
    s0, s1 = ode.s_of_t(t0), ode.s_of_t(t1)
    probes = None
    if trace == "hutchinson":
        shape = (int(n_probes),) + tuple(x0.shape)
        if probe == "rademacher":
            probes = torch.randint(0, 2, shape, generator=generator, device=x0.device)
            probes = probes.to(x0.dtype) * 2.0 - 1.0
        elif probe == "gaussian":
            probes = torch.randn(shape, generator=generator, dtype=x0.dtype, device=x0.device)
        else:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")

    def rhs(s: float, state: State) -> State:
        with torch.enable_grad():
            y = state[0].detach().requires_grad_(True)
            v = ode.velocity(s, y)
            div = _divergence(v, y, probes)
        return v.detach(), div

    y0 = ode.to_state(x0 if c is None else x0 - c, t0)
    acc0 = torch.zeros(batch, dtype=torch.float64, device=x0.device)
    (y1, acc), nfe, _ = odeint_adaptive(rhs, (y0, acc0), s0, s1, rtol=rtol, atol=atol,
                                        method=method, max_steps=max_steps)
    z1 = ode.from_state(y1, t1)
    x1 = z1 if c is None else z1 + c
    prior = (process.prior_logp(x1, c) if prior_logp is None else prior_logp(x1)).double()
    logp = prior.to(acc.device) + acc
    if variable == "log_sigma":
        logp = logp + dim * (math.log(ode.alpha(t1)) - math.log(ode.alpha(t0)))
    return {"logp": logp, "bpd": -logp / (dim * math.log(2.0)), "nfe": nfe,
            "prior_logp": prior, "z": x1.detach()}
