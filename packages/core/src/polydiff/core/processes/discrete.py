"""Discrete-state forward processes over integer tokens with a [MASK] state.

Tokens ``x0`` have shape ``(B, ...)`` (sequences, token grids, graph nodes: any trailing shape)
and values in ``{0, ..., K-1}``; the extra state ``K`` is [MASK]. Time is an integer step
``t in {1, ..., T}`` given per sample as a LongTensor of shape ``(B,)``.

One transition family covers both processes. From step ``s`` to step ``t > s`` a real token
stays with probability ``a + b``, becomes each other real token with probability ``b`` and
becomes [MASK] with probability ``c = 1 - a - K b``; [MASK] stays [MASK]. With ``s = t - 1``
this is VQ-Diffusion's one-step matrix ``Q_t`` (``a = alpha_t``, ``b = beta_t``,
``c = gamma_t``), with ``s = 0`` its cumulative ``Qbar_t`` (``alpha_bar_t``, ``beta_bar_t``,
``gamma_bar_t``); D3PM's absorbing process is the case ``b = 0``. The family is closed under
composition, so every ``s -> t`` transition is given by the two cumulative schedules
``alpha_bar`` and ``1 - gamma_bar`` (the probability of not being masked):
``a = alpha_bar_t / alpha_bar_s`` and ``a + K b = (1 - gamma_bar_t) / (1 - gamma_bar_s)``.

Transition matrices are row-stochastic, ``Q[i, j] = q(x_t = j | x_s = i)`` (the transpose of
VQ-Diffusion's column convention). They are applied in closed form per class, O(K) per
position; dense ``(K+1, K+1)`` matrices are built only on request (:meth:`transition_matrix`),
for tests and small vocabularies.

Posteriors and losses run in log space. Probabilities that are exactly zero (a real token that
an absorbing process cannot produce, [MASK] at step 0) are carried as a large finite negative
log, :func:`log_zero`, rather than ``-inf``, so that no gradient is ever ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.shapes import append_dims, as_time, schedule_dtype

__all__ = [
    "MaskAndReplaceProcess",
    "AbsorbingProcess",
    "ABSORBING_SCHEDULES",
    "categorical_sample",
    "log_zero",
]


def log_zero(dtype: torch.dtype) -> float:
    """The finite stand-in for ``log 0`` in ``dtype``: far below any real log-probability,
    yet a few of them can be added without overflowing to ``-inf``."""
    return torch.finfo(dtype).min / 64


def categorical_sample(log_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per position from unnormalised log-probabilities ``(..., n)`` (Gumbel-max)."""
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device,
                   dtype=log_probs.dtype)
    u = u.clamp_min(torch.finfo(log_probs.dtype).tiny)
    return (log_probs - torch.log(-torch.log(u))).argmax(-1)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32 for the log-space algebra (half precision would overflow the
    :func:`log_zero` sums)."""
    return torch.promote_types(dtype, torch.float32)


def _safe_log(p: Tensor) -> Tensor:
    """``log p`` of non-negative constants, with ``log 0`` replaced by :func:`log_zero`."""
    return torch.log(p).clamp_min(log_zero(p.dtype))


def _log_apply(log_p: Tensor, la: Tensor, lb: Tensor, lc: Tensor) -> Tensor:
    """Push (unnormalised) log-weights over states ``(..., K+1)`` through the ``(a, b, c)``
    transition: ``out_k = a p_k + b sum_{j<K} p_j`` for real ``k``, ``out_K = c sum_{j<K} p_j
    + p_K``. ``la, lb, lc`` are the logs of the coefficients, broadcastable to ``(..., 1)``."""
    real, mask = log_p[..., :-1], log_p[..., -1:]
    mass = torch.logsumexp(real, dim=-1, keepdim=True)
    return torch.cat([torch.logaddexp(la + real, lb + mass),
                      torch.logaddexp(lc + mass, mask)], dim=-1)


def _linear_schedule(first: float, last: float, num_steps: int) -> Tensor:
    return torch.linspace(first, last, num_steps, dtype=torch.float64)


class MaskAndReplaceProcess:
    """Mask-and-replace multinomial diffusion of Gu et al. (2022), "Vector Quantized Diffusion
    Model for Text-to-Image Synthesis", eq. 4-6 (transition), eq. 11 (reverse process) and the
    loss ``L_vlb + lambda L_x0``.

    Each step keeps a real token with probability ``alpha_t + beta_t``, replaces it by each
    other token with ``beta_t`` and masks it with ``gamma_t`` (``alpha_t = 1 - K beta_t -
    gamma_t``). By default ``alpha_bar_t`` falls linearly from 0.99999 to 0.000009 and
    ``gamma_bar_t`` rises linearly from 0.000009 to 0.9 over ``t = 1..T``, the paper's
    schedule.

    Args:
        num_classes: ``K``, the number of real tokens; [MASK] is state ``K``.
        num_steps: ``T``.
        alpha_bar_range: ``(alpha_bar_1, alpha_bar_T)`` of the linear schedule.
        gamma_bar_range: ``(gamma_bar_1, gamma_bar_T)`` of the linear schedule.
        aux_weight: ``lambda`` of the auxiliary ``-log p_theta(x0 | x_t)`` term in :meth:`loss`.

    Attributes (float64 tensors of shape ``(T+1,)``, index ``t``; index 0 is the identity):
        alpha_bar, beta_bar, gamma_bar: the cumulative schedules of ``Qbar_t``.
        alpha, beta, gamma: the one-step schedules of ``Q_t``.
    """

    def __init__(self, num_classes: int, num_steps: int = 100, *,
                 alpha_bar_range: tuple[float, float] = (0.99999, 0.000009),
                 gamma_bar_range: tuple[float, float] = (0.000009, 0.9),
                 aux_weight: float = 5e-4):
        self._setup(num_classes,
                    _linear_schedule(*alpha_bar_range, num_steps),
                    1.0 - _linear_schedule(*gamma_bar_range, num_steps),
                    aux_weight)

    @classmethod
    def from_schedules(cls, num_classes: int, alpha_bar: Tensor, gamma_bar: Tensor, *,
                       aux_weight: float = 5e-4) -> MaskAndReplaceProcess:
        """A process with explicit cumulative schedules ``alpha_bar_t, gamma_bar_t`` for
        ``t = 1..T`` (shape ``(T,)`` each)."""
        self = cls.__new__(cls)
        gamma_bar = torch.as_tensor(gamma_bar, dtype=torch.float64)
        self._setup(num_classes, torch.as_tensor(alpha_bar, dtype=torch.float64),
                    1.0 - gamma_bar, aux_weight)
        return self

    # ----------------------------------------------------------------- schedule
    def _setup(self, num_classes: int, alpha_bar: Tensor, keep_bar: Tensor,
               aux_weight: float) -> None:
        """Store ``alpha_bar`` and ``keep_bar = 1 - gamma_bar`` (``t = 1..T``) and validate."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        alpha_bar = alpha_bar.detach().to("cpu", torch.float64).flatten()
        keep_bar = keep_bar.detach().to("cpu", torch.float64).flatten()
        if alpha_bar.numel() < 1 or alpha_bar.shape != keep_bar.shape:
            raise ValueError("alpha_bar and gamma_bar must be 1-d schedules of the same length")
        one = torch.ones(1, dtype=torch.float64)
        alpha_bar, keep_bar = torch.cat([one, alpha_bar]), torch.cat([one, keep_bar])
        tol = 1e-12
        if not bool(((alpha_bar >= 0) & (keep_bar <= 1)).all()):
            raise ValueError("schedules must satisfy 0 <= alpha_bar and 0 <= gamma_bar")
        if bool((alpha_bar[1:] > alpha_bar[:-1] + tol).any()) or \
                bool((keep_bar[1:] > keep_bar[:-1] + tol).any()):
            raise ValueError("alpha_bar must be non-increasing and gamma_bar non-decreasing")
        # beta_t >= 0 for every step: (1-gamma_bar_t)/(1-gamma_bar_{t-1}) >= alpha_bar ratio
        if bool((keep_bar[1:] * alpha_bar[:-1] < alpha_bar[1:] * keep_bar[:-1] - tol).any()):
            raise ValueError("schedules give a negative one-step beta_t: alpha_bar must fall "
                             "at least as fast (relatively) as 1 - gamma_bar")
        self.num_classes = int(num_classes)
        self.num_states = self.num_classes + 1
        self.mask_index = self.num_classes
        self.num_steps = alpha_bar.numel() - 1
        self.aux_weight = float(aux_weight)
        self._alpha_bar, self._keep_bar = alpha_bar, keep_bar
        self._tables_by_device: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}
        steps = torch.arange(self.num_steps + 1)
        self.alpha_bar, self.beta_bar, self.gamma_bar = self._coefficients(0 * steps, steps)
        prev = (steps - 1).clamp_min(0)
        self.alpha, self.beta, self.gamma = self._coefficients(prev, steps)

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        dtype = schedule_dtype(device)
        key = (device, dtype)
        if key not in self._tables_by_device:
            self._tables_by_device[key] = (self._alpha_bar.to(device, dtype),
                                           self._keep_bar.to(device, dtype))
        return self._tables_by_device[key]

    def _coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, b, c)`` of the ``s -> t`` transition, per sample, in schedule precision."""
        alpha_bar, keep_bar = self._tables(t.device)
        tiny = torch.finfo(alpha_bar.dtype).tiny
        a = alpha_bar[t] / alpha_bar[s].clamp_min(tiny)
        keep = keep_bar[t] / keep_bar[s].clamp_min(tiny)
        b = (keep - a).clamp_min(0.0) / self.num_classes
        return a, b, (1.0 - keep).clamp_min(0.0)

    def _log_coefficients(self, s: Tensor, t: Tensor, like: Tensor) -> list[Tensor]:
        """Logs of ``(a, b, c)`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like``."""
        return [_safe_log(append_dims(v, like)) for v in self._coefficients(s, t)]

    def _steps(self, t: int | Tensor, batch: int, device: torch.device, low: int = 1) -> Tensor:
        t = as_time(t, batch, device=device, dtype=torch.long)
        if t.device.type == "cpu" and bool(((t < low) | (t > self.num_steps)).any()):
            raise ValueError(f"steps must lie in [{low}, {self.num_steps}], got {t.tolist()}")
        return t

    def _prev_steps(self, s: int | Tensor | None, t: Tensor) -> Tensor:
        if s is None:
            return t - 1
        s = self._steps(s, t.shape[0], t.device, low=0)
        if s.device.type == "cpu" and bool((s >= t).any()):
            raise ValueError("the earlier step s must be smaller than t")
        return s

    # ----------------------------------------------------------------- dense matrices
    def transition_matrix(self, t: int, s: int | None = None) -> Tensor:
        """Dense row-stochastic ``(K+1, K+1)`` matrix of ``q(x_t | x_s)`` (default ``s = t-1``:
        the one-step ``Q_t``), float64. Memory ``(K+1)^2``: meant for tests and small ``K``."""
        s = t - 1 if s is None else s
        if not 0 <= s <= t <= self.num_steps:
            raise ValueError(f"need 0 <= s <= t <= {self.num_steps}, got s={s}, t={t}")
        tt, ss = torch.tensor([t]), torch.tensor([s])
        a, b, c = (float(v) for v in self._coefficients(ss, tt))
        K = self.num_classes
        Q = torch.zeros(K + 1, K + 1, dtype=torch.float64)
        Q[:K, :K] = b
        Q[:K, :K] += a * torch.eye(K, dtype=torch.float64)
        Q[:K, K] = c
        Q[K, K] = 1.0
        return Q

    def cumulative_matrix(self, t: int) -> Tensor:
        """Dense ``Qbar_t = Q_1 ... Q_t`` of ``q(x_t | x_0)`` (see :meth:`transition_matrix`)."""
        return self.transition_matrix(t, 0)

    # ----------------------------------------------------------------- distributions
    def _log_x0(self, x0: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Log-probabilities over the ``K+1`` states from tokens ``(B, ...)``, probabilities
        ``(B, ..., K)`` or ``(B, ..., K+1)``."""
        if not x0.is_floating_point():
            dtype = _work_dtype(dtype or torch.get_default_dtype())
            out = torch.full((*x0.shape, self.num_states), log_zero(dtype), dtype=dtype,
                             device=x0.device)
            return out.scatter(-1, x0.unsqueeze(-1).long(), 0.0)
        p = x0.to(_work_dtype(x0.dtype))
        log_p = torch.where(p > 0, p.clamp_min(torch.finfo(p.dtype).tiny).log(),
                            log_zero(p.dtype))
        return self._pad(log_p)

    def _pad(self, log_p: Tensor) -> Tensor:
        """Append a zero-probability [MASK] entry to log-probabilities over ``K`` classes."""
        log_p = log_p.to(_work_dtype(log_p.dtype)).clamp_min(log_zero(_work_dtype(log_p.dtype)))
        if log_p.shape[-1] == self.num_states:
            return log_p
        if log_p.shape[-1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} or {self.num_states} classes in the "
                             f"last dimension, got {log_p.shape[-1]}")
        return F.pad(log_p, (0, 1), value=log_zero(log_p.dtype))

    def _log_likelihood(self, xt: Tensor, s: Tensor, t: Tensor, dtype: torch.dtype) -> Tensor:
        """``log q(x_t | x_s = j)`` for every state ``j``: shape ``(B, ..., K+1)``."""
        K = self.num_classes
        is_mask = (xt == K).unsqueeze(-1)
        hit = F.one_hot(xt.clamp_max(K - 1).long(), K).to(dtype)
        a, b, c = (append_dims(v, hit) for v in self._coefficients(s, t))
        real = torch.where(is_mask, c, b + a * hit)
        return _safe_log(torch.cat([real, is_mask.to(dtype)], dim=-1))

    def q_xt_given_x0(self, x0: Tensor, t: int | Tensor, *,
                      dtype: torch.dtype | None = None) -> Tensor:
        """``q(x_t | x_0) = v(x_0)^T Qbar_t`` (eq. 5 of Gu et al.): probabilities
        ``(B, ..., K+1)`` from tokens ``(B, ...)`` or an ``x_0`` distribution ``(B, ..., K)``."""
        log_x0 = self._log_x0(x0, dtype)
        t = self._steps(t, x0.shape[0], x0.device)
        coef = self._log_coefficients(torch.zeros_like(t), t, log_x0)
        return _log_apply(log_x0, *coef).exp()

    def _sample_transition(self, x: Tensor, s: Tensor, t: Tensor,
                           generator: torch.Generator | None) -> Tensor:
        K = self.num_classes
        u = torch.rand(x.shape, generator=generator, device=x.device,
                       dtype=self._tables(x.device)[0].dtype)
        a, b, _ = (append_dims(v, u) for v in self._coefficients(s, t))
        other = torch.randint(0, K, x.shape, generator=generator, device=x.device)
        out = torch.where(u < a, x, torch.where(u < a + K * b, other, K))
        return torch.where(x == K, K, out).to(x.dtype)

    def q_sample(self, x0: Tensor, t: int | Tensor, *,
                 generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)`` in one step (O(1) per position)."""
        t = self._steps(t, x0.shape[0], x0.device)
        return self._sample_transition(x0, torch.zeros_like(t), t, generator)

    def q_sample_step(self, x_prev: Tensor, t: int | Tensor, *,
                      generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_{t-1})`` (one application of ``Q_t``)."""
        t = self._steps(t, x_prev.shape[0], x_prev.device)
        return self._sample_transition(x_prev, t - 1, t, generator)

    # ----------------------------------------------------------------- posterior
    def log_q_posterior(self, log_x0: Tensor, xt: Tensor, t: int | Tensor,
                        s: int | Tensor | None = None) -> Tensor:
        """``log sum_{x_0} q(x_s | x_t, x_0) pi(x_0)`` over the ``K+1`` states of ``x_s``
        (default ``s = t - 1``), for ``pi = exp(log_x0)`` of shape ``(B, ..., K)`` or
        ``(B, ..., K+1)``; normalised.

        Computed as ``q(x_t | x_s) sum_{x_0} q(x_s | x_0) pi(x_0) / q(x_t | x_0)`` (Bayes per
        ``x_0``, eq. 11 of Gu et al.). Values of ``x_0`` that cannot produce ``x_t``
        (``q(x_t | x_0) = 0``, e.g. another token under absorbing diffusion) are dropped and the
        rest renormalised; for absorbing diffusion this equals D3PM's
        ``sum_{x_0} q(x_s, x_t | x_0) pi(x_0)``. With ``s = 0`` this is ``p(x_0 | x_t)``.
        """
        log_pi = self._pad(log_x0)
        dtype = log_pi.dtype
        t = self._steps(t, xt.shape[0], xt.device)
        s = self._prev_steps(s, t)
        lik_0t = self._log_likelihood(xt, torch.zeros_like(t), t, dtype)
        zero = log_zero(dtype)
        log_w = torch.where(lik_0t > zero / 2, log_pi - lik_0t, zero)
        log_m = _log_apply(log_w, *self._log_coefficients(torch.zeros_like(s), s, log_w))
        log_post = self._log_likelihood(xt, s, t, dtype) + log_m
        # shift by the max first: sums of log_zero are too large for ``+ log(n)`` to register
        log_post = log_post - log_post.amax(dim=-1, keepdim=True).detach()
        return log_post - torch.logsumexp(log_post, dim=-1, keepdim=True)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int | Tensor,
                    s: int | Tensor | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
        """``q(x_s | x_t, x_0)`` (default ``s = t - 1``) as probabilities ``(B, ..., K+1)``.
        ``x0`` is tokens ``(B, ...)`` or a distribution ``(B, ..., K)``; for a distribution this
        is ``p_theta(x_s | x_t) = sum_{x_0} q(x_s | x_t, x_0) p(x_0 | x_t)``
        (see :meth:`log_q_posterior`)."""
        return self.log_q_posterior(self._log_x0(x0, dtype), xt, t, s).exp()

    def log_p_reverse(self, logits_x0: Tensor, xt: Tensor, t: int | Tensor,
                      s: int | Tensor | None = None) -> Tensor:
        """``log p_theta(x_s | x_t)`` from a network's ``x_0``-logits ``(B, ..., K)``."""
        log_pi = torch.log_softmax(logits_x0.to(_work_dtype(logits_x0.dtype)), dim=-1)
        return self.log_q_posterior(log_pi, xt, t, s)

    # ----------------------------------------------------------------- prior
    def prior_log_probs(self, *, dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> Tensor:
        """``log p(x_T)`` over the ``K+1`` states: ``q(x_T | x_0)`` for a uniform ``x_0``
        (mass ``gamma_bar_T`` on [MASK], ``alpha_bar_T / K + beta_bar_T`` on each token)."""
        uniform = torch.full((1, self.num_classes), 1.0 / self.num_classes, dtype=dtype,
                             device=device)
        return _safe_log(self.q_xt_given_x0(uniform, self.num_steps)[0])

    def prior_sample(self, shape: tuple[int, ...] | torch.Size, *,
                     generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """Draw ``x_T ~ p(x_T)`` of token shape ``(B, ...)``."""
        log_p = self.prior_log_probs(dtype=schedule_dtype(device), device=device)
        return categorical_sample(log_p.expand(*shape, -1), generator)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """``KL(q(x_T | x_0) || p(x_T))`` per sample ``(B,)``, nats, mean over positions."""
        q = self.q_xt_given_x0(x0, self.num_steps, dtype=schedule_dtype(x0.device))
        log_prior = self.prior_log_probs(dtype=q.dtype, device=q.device)
        kl = (q * (_safe_log(q) - log_prior)).sum(-1)
        return kl.reshape(x0.shape[0], -1).mean(1)

    # ----------------------------------------------------------------- losses
    def vb_loss(self, logits_x0: Tensor, x0: Tensor, xt: Tensor, t: int | Tensor) -> Tensor:
        """``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` per sample ``(B,)``,
        nats, mean over positions; at ``t = 1`` it is ``-log p_theta(x_0 | x_1)`` (the KL from
        the point mass ``q(x_0 | x_1, x_0)``)."""
        log_p = self.log_p_reverse(logits_x0, xt, t)
        log_q = self.log_q_posterior(self._log_x0(x0, log_p.dtype), xt, t)
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
        return kl.reshape(x0.shape[0], -1).mean(1)

    def x0_cross_entropy(self, logits_x0: Tensor, x0: Tensor) -> Tensor:
        """Auxiliary ``L_x0 = -log p_theta(x_0 | x_t)`` per sample ``(B,)``, mean over
        positions."""
        log_pi = torch.log_softmax(logits_x0.to(_work_dtype(logits_x0.dtype)), dim=-1)
        nll = -log_pi.gather(-1, x0.unsqueeze(-1).long()).squeeze(-1)
        return nll.reshape(x0.shape[0], -1).mean(1)

    def loss(self, logits_x0: Tensor, x0: Tensor, xt: Tensor, t: int | Tensor,
             aux_weight: float | None = None) -> Tensor:
        """``L_vlb + lambda L_x0`` per sample ``(B,)`` (``lambda`` defaults to
        :attr:`aux_weight`)."""
        lam = self.aux_weight if aux_weight is None else aux_weight
        out = self.vb_loss(logits_x0, x0, xt, t)
        return out + lam * self.x0_cross_entropy(logits_x0, x0) if lam else out

    def training_loss(self, model: Callable[..., Tensor], x0: Tensor, *,
                      cond: Mapping[str, Any] | None = None,
                      generator: torch.Generator | None = None,
                      aux_weight: float | None = None) -> Tensor:
        """Draw ``t ~ U{1..T}`` and ``x_t ~ q(x_t | x_0)``, call ``model(x_t, t, **cond)`` for
        ``x_0``-logits ``(B, ..., K)``, return :meth:`loss` per sample ``(B,)``."""
        t = torch.randint(1, self.num_steps + 1, (x0.shape[0],), generator=generator,
                          device=x0.device)
        xt = self.q_sample(x0, t, generator=generator)
        return self.loss(model(xt, t, **dict(cond or {})), x0, xt, t, aux_weight)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, "
                f"num_steps={self.num_steps}, aux_weight={self.aux_weight})")


def _absorbing_linear(num_steps: int) -> Tensor:
    """``alpha_bar_t = 1 - t / T``."""
    return 1.0 - torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps


def _absorbing_mutual_information(num_steps: int) -> Tensor:
    """D3PM's ``beta_t = 1 / (T - t + 1)``; its product telescopes to ``1 - t / T``."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    return torch.cumprod(1.0 - 1.0 / (num_steps - t + 1), dim=0)


def _absorbing_cosine(num_steps: int) -> Tensor:
    """``alpha_bar_t = cos(pi t / (2 T))``."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    return torch.cos(0.5 * math.pi * t / num_steps).clamp_min(0.0)


ABSORBING_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": _absorbing_linear,
    "mutual_information": _absorbing_mutual_information,
    "cosine": _absorbing_cosine,
}
"""Named ``alpha_bar_t`` schedules (``t = 1..T``) of :class:`AbsorbingProcess`."""


class AbsorbingProcess(MaskAndReplaceProcess):
    """Absorbing-state ([MASK]) D3PM of Austin et al. (2021), "Structured Denoising Diffusion
    Models in Discrete State-Spaces": each token is masked by step ``t`` with probability
    ``1 - alpha_bar_t`` and never replaced, the ``beta = 0`` case of
    :class:`MaskAndReplaceProcess` (all the maths is shared). ``loss`` is D3PM's hybrid
    ``L_vb + lambda L_CE``.

    Args:
        num_classes: ``K``; [MASK] is state ``K``.
        num_steps: ``T``.
        schedule: a name in :data:`ABSORBING_SCHEDULES` (``"linear"``: ``alpha_bar_t = 1 -
            t/T``, ``"mutual_information"``: ``beta_t = 1/(T - t + 1)``, the same schedule,
            ``"cosine"``) or an explicit ``alpha_bar_t`` for ``t = 1..T``, shape ``(T,)``.
        aux_weight: ``lambda``.
    """

    def __init__(self, num_classes: int, num_steps: int = 100, *,
                 schedule: str | Tensor = "linear", aux_weight: float = 1e-3):
        if isinstance(schedule, str):
            if schedule not in ABSORBING_SCHEDULES:
                raise ValueError(f"unknown schedule {schedule!r}; "
                                 f"choose from {sorted(ABSORBING_SCHEDULES)}")
            alpha_bar = ABSORBING_SCHEDULES[schedule](num_steps)
        else:
            alpha_bar = torch.as_tensor(schedule, dtype=torch.float64)
        self._setup(num_classes, alpha_bar, alpha_bar, aux_weight)

    @classmethod
    def from_schedules(cls, num_classes: int, alpha_bar: Tensor, gamma_bar: Tensor | None = None,
                       *, aux_weight: float = 1e-3) -> AbsorbingProcess:
        """An absorbing process with explicit ``alpha_bar_t`` (``gamma_bar = 1 - alpha_bar``;
        a given ``gamma_bar`` must agree)."""
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        if gamma_bar is not None and not torch.allclose(
                torch.as_tensor(gamma_bar, dtype=torch.float64), 1.0 - alpha_bar):
            raise ValueError("an absorbing process has gamma_bar = 1 - alpha_bar")
        return cls(num_classes, alpha_bar.numel(), schedule=alpha_bar, aux_weight=aux_weight)
