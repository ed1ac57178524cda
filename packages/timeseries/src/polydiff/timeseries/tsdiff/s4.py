"""Diagonal structured state-space layers (S4D) in plain PyTorch.

Gu, Gupta, Goel & Re (2022), "On the Parameterization and Initialization of Diagonal State
Space Models" (S4D). Each of ``H`` channels is a linear time-invariant system with a complex
diagonal state matrix of ``N / 2`` modes (the other ``N / 2`` are their complex conjugates,
so the layer is real):

    ``x'(t) = A x(t) + B u(t)``,  ``y(t) = 2 Re(C x(t)) + D u(t)``.

* **Parameterization** (S4D Sec. 3): ``A = -exp(log_A_real) + i A_imag`` (the real part is
  log-parameterized, so it stays negative and the system stable), ``B`` and ``C`` complex,
  a per-channel step ``dt = exp(log_dt)`` and a real skip ``D``.
* **Initialization** (S4D Sec. 4): S4D-Lin ``A_n = -1/2 + i pi n`` or S4D-Inv
  ``A_n = -1/2 + i (N / pi) (N / (2 n + 1) - 1)``, ``n = 0 .. N/2 - 1``; ``B = 1``,
  ``C ~ CN(0, 1)``, ``log dt ~ U[log dt_min, log dt_max]``.
* **Discretization**: zero-order hold, ``Abar = exp(dt A)``, ``Bbar = (exp(dt A) - 1) / A B``
  (S4D eq. 5), i.e. the recurrence ``x_k = Abar x_{k-1} + Bbar u_k``, ``y_k = 2 Re(C x_k)``.
* **Kernel**: ``K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l)``, ``l = 0 .. L-1``, computed as a
  Vandermonde product ``exp(dt A l)`` (S4D Sec. 3.2), then ``y = K * u`` (causal) by FFT
  zero-padded to ``2L`` (a linear, not circular, convolution) plus ``D u``.
* **Bidirectional** (as in S4's and SSSD's/TSDiff's non-causal use): a second kernel runs
  over the reversed sequence, ``y = K_f * u + rev(K_b * rev(u)) + D u`` (one FFT: the
  backward kernel occupies the negative lags of a length-``2L`` circular kernel).

All arithmetic follows the parameters' dtype (complex64 for float32, complex128 for float64).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["S4D_INITS", "S4DKernel", "S4D", "fft_causal_conv", "fft_bidirectional_conv"]

S4D_INITS: tuple[str, ...] = ("lin", "inv")


def fft_causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal linear convolution ``y_i = sum_{j <= i} k_j u_{i-j}`` along the last axis by FFT
    (both zero-padded to ``2L``). ``u``: ``(..., H, L)``; ``k``: ``(H, L)`` (or broadcastable).
    Returns ``(..., H, L)``."""
    length = u.shape[-1]
    n = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :length]


def fft_bidirectional_conv(u: Tensor, k_fwd: Tensor, k_bwd: Tensor) -> Tensor:
    """``y_i = sum_j k_fwd[j] u_{i-j} + sum_j k_bwd[j] u_{i+j}``: the causal convolution plus
    the same over the reversed sequence, ``rev(k_bwd * rev(u))``, in one FFT of length
    ``2L`` (the backward kernel sits at the negative lags of a circular kernel; the zero
    padding keeps both parts linear). ``u``: ``(..., H, L)``; kernels ``(H, L)``."""
    length = u.shape[-1]
    n = 2 * length
    first = k_fwd[..., :1] + k_bwd[..., :1]
    g = torch.cat([first, k_fwd[..., 1:], torch.zeros_like(first), k_bwd[..., 1:].flip(-1)],
                  dim=-1)
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(g, n=n), n=n)
    return y[..., :length]


def _s4d_imag(init: str, n_modes: int, state_dim: int) -> Tensor:
    n = torch.arange(n_modes, dtype=torch.float64)
    if init == "lin":
        return math.pi * n
    if init == "inv":
        return (state_dim / math.pi) * (state_dim / (2.0 * n + 1.0) - 1.0)
    raise ValueError(f"unknown S4D initialisation {init!r}; expected one of {S4D_INITS}")


class S4DKernel(nn.Module):
    """The S4D convolution kernels of ``channels`` independent diagonal SSMs (module
    docstring). Complex parameters are stored as real ``(..., 2)`` tensors (safetensors-ready).

    Args:
        channels: ``H``, one SSM per channel.
        state_dim: ``N``, the real state size; ``N / 2`` complex modes are kept.
        init: ``"lin"`` (S4D-Lin) or ``"inv"`` (S4D-Inv).
        dt_min, dt_max: range of the log-uniform initial step sizes.
    """

    def __init__(self, channels: int, state_dim: int = 64, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        if channels < 1 or state_dim < 2 or state_dim % 2:
            raise ValueError(f"S4D needs channels >= 1 and an even state_dim >= 2, got "
                             f"{channels}, {state_dim}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.channels, self.state_dim, self.init = channels, state_dim, init
        m = state_dim // 2
        imag = _s4d_imag(init, m, state_dim).float()
        lo, hi = math.log(dt_min), math.log(dt_max)
        self.log_dt = nn.Parameter(torch.rand(channels) * (hi - lo) + lo)
        self.log_A_real = nn.Parameter(torch.full((channels, m), math.log(0.5)))
        self.A_imag = nn.Parameter(imag.expand(channels, m).clone())
        b = torch.zeros(channels, m, 2)
        b[..., 0] = 1.0
        self.B = nn.Parameter(b)
        self.C = nn.Parameter(torch.randn(channels, m, 2) * math.sqrt(0.5))

    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(dt (H,), A, B, C)`` with complex ``A, B, C`` of shape ``(H, N/2)``."""
        a = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return (torch.exp(self.log_dt), a, torch.view_as_complex(self.B),
                torch.view_as_complex(self.C))

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """Zero-order hold: ``(Abar, Bbar, C)``, complex, each ``(H, N/2)``, for the recurrence
        ``x_k = Abar x_{k-1} + Bbar u_k``, ``y_k = 2 Re(C x_k)``."""
        dt, a, b, c = self.continuous()
        dta = a * dt.unsqueeze(-1)
        return torch.exp(dta), torch.expm1(dta) / a * b, c

    def forward(self, length: int) -> Tensor:
        """The kernel ``K (H, length)``: ``K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l)`` (a
        Vandermonde product) with ``Abar^l = exp(dt A l)``."""
        dt, a, b, c = self.continuous()
        dta = a * dt.unsqueeze(-1)  # (H, M)
        cb = c * torch.expm1(dta) / a * b
        # Abar^l with l = a c + b: exp(dt A b) exp(dt A c a), so the Vandermonde product is
        # a batched matrix product over the modes and only ~2 sqrt(L) exponentials are taken
        n_c = max(1, math.isqrt(max(length - 1, 0)) + 1)
        n_a = -(-length // n_c)
        real = self.log_dt.dtype
        pb = torch.exp(dta.unsqueeze(-1) * torch.arange(n_c, device=dta.device, dtype=real))
        qa = torch.exp(dta.unsqueeze(-1) * torch.arange(0, n_a * n_c, n_c, device=dta.device,
                                                        dtype=real))
        k = torch.einsum("hmb,hma->hab", cb.unsqueeze(-1) * pb, qa)  # (H, A, c)
        return 2.0 * k.reshape(k.shape[0], n_a * n_c)[:, :length].real


class S4D(nn.Module):
    """An S4D layer on ``(B, H, L)`` sequences: SSM convolution (+ ``D`` skip), GELU, dropout,
    and a position-wise output linear map (Gu et al. 2022; the layer structure of S4).

    Args:
        channels: ``H``.
        state_dim: ``N`` (``N / 2`` complex modes per channel and direction).
        bidirectional: add an SSM over the reversed sequence (summed with the forward one).
        dropout: dropout after the activation (channel-wise, as S4's ``DropoutNd``).
        init, dt_min, dt_max: see :class:`S4DKernel`.
        activation: ``"gelu"`` or ``"identity"`` after the SSM.
        output_linear: end with a ``1x1`` convolution ``H -> H``.
    """

    def __init__(self, channels: int, state_dim: int = 64, *, bidirectional: bool = True,
                 dropout: float = 0.0, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, activation: Literal["gelu", "identity"] = "gelu",
                 output_linear: bool = True):
        super().__init__()
        if activation not in ("gelu", "identity"):
            raise ValueError(f"activation must be 'gelu' or 'identity', got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.bidirectional = channels, bool(bidirectional)
        self.kernel = S4DKernel(channels * (2 if bidirectional else 1), state_dim, init,
                                dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(channels))
        self.activation = activation
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Conv1d(channels, channels, 1) if output_linear else None

    def kernels(self, length: int) -> tuple[Tensor, Tensor | None]:
        """``(K_forward, K_backward or None)``, each ``(H, length)``."""
        k = self.kernel(length)
        if not self.bidirectional:
            return k, None
        return k[: self.channels], k[self.channels:]

    def ssm(self, u: Tensor) -> Tensor:
        """The linear part: ``K_f * u (+ rev(K_b * rev(u))) + D u``, ``(B, H, L)``."""
        if u.ndim != 3 or u.shape[1] != self.channels:
            raise ValueError(f"expected u of shape (B, {self.channels}, L), got "
                             f"{tuple(u.shape)}")
        k_f, k_b = self.kernels(u.shape[-1])
        y = fft_causal_conv(u, k_f) if k_b is None else fft_bidirectional_conv(u, k_f, k_b)
        return y + self.D.unsqueeze(-1) * u

    def forward(self, u: Tensor) -> Tensor:
        """``(B, H, L) -> (B, H, L)``."""
        y = self.ssm(u)
        if self.activation == "gelu":
            y = F.gelu(y)
        y = self.dropout(y)
        return self.output_linear(y) if self.output_linear is not None else y
