"""S4D layer: kernels against the unrolled recurrence and the continuous-time solution,
FFT convolutions against direct sums, bidirectionality, causality, gradients."""

import math

import pytest
import torch

from polydiff.timeseries.tsdiff.s4 import (
    S4D,
    S4DKernel,
    fft_bidirectional_conv,
    fft_causal_conv,
)

LENGTHS = (1, 2, 5, 16, 37)


def naive_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """O(L^2) reference: y_i = sum_{j <= i} k_j u_{i-j}."""
    y = torch.zeros_like(u)
    for i in range(u.shape[-1]):
        for j in range(i + 1):
            y[..., i] += k[..., j] * u[..., i - j]
    return y


def perturbed_kernel(channels: int = 3, state_dim: int = 8, init: str = "lin",
                     seed: int = 0) -> S4DKernel:
    """A float64 kernel with every parameter moved away from its initial value."""
    torch.manual_seed(seed)
    k = S4DKernel(channels, state_dim, init=init).double()
    with torch.no_grad():
        k.log_A_real.add_(0.5 * torch.randn_like(k.log_A_real))
        k.A_imag.add_(torch.randn_like(k.A_imag))
        k.B.add_(0.3 * torch.randn_like(k.B))
        k.log_dt.add_(0.5 * torch.randn_like(k.log_dt))
    return k


def recurrence(k: S4DKernel, u: torch.Tensor) -> torch.Tensor:
    """x_k = Abar x_{k-1} + Bbar u_k, y_k = 2 Re(C x_k), run step by step. u: (B, H, L)."""
    a_bar, b_bar, c = k.discretize()
    x = torch.zeros(u.shape[0], *a_bar.shape, dtype=a_bar.dtype)
    ys = []
    for i in range(u.shape[-1]):
        x = a_bar * x + b_bar * u[..., i: i + 1]
        ys.append(2.0 * (c * x).sum(-1).real)
    return torch.stack(ys, dim=-1)


@pytest.mark.parametrize("length", LENGTHS)
def test_fft_conv_equals_direct_causal_convolution(length):
    g = torch.Generator().manual_seed(length)
    u = torch.randn(2, 3, length, generator=g, dtype=torch.float64)
    k = torch.randn(3, length, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fft_causal_conv(u, k), naive_causal_conv(u, k), rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("length", LENGTHS)
def test_bidirectional_conv_is_forward_plus_reversed_backward(length):
    g = torch.Generator().manual_seed(100 + length)
    u = torch.randn(2, 3, length, generator=g, dtype=torch.float64)
    kf, kb = torch.randn(2, 3, length, generator=g, dtype=torch.float64)
    want = naive_causal_conv(u, kf) + naive_causal_conv(u.flip(-1), kb).flip(-1)
    torch.testing.assert_close(fft_bidirectional_conv(u, kf, kb), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("init", ["lin", "inv"])
@pytest.mark.parametrize("length", LENGTHS)
def test_kernel_equals_unrolled_recurrence(init, length):
    k = perturbed_kernel(init=init, seed=length)
    impulse = torch.zeros(1, 3, length, dtype=torch.float64)
    impulse[..., 0] = 1.0
    kernel = k(length)
    assert kernel.shape == (3, length) and kernel.dtype == torch.float64
    torch.testing.assert_close(kernel, recurrence(k, impulse)[0], rtol=1e-10, atol=1e-12)
    u = torch.randn(2, 3, length, dtype=torch.float64)
    torch.testing.assert_close(fft_causal_conv(u, kernel), recurrence(k, u), rtol=1e-9,
                               atol=1e-11)


def test_zoh_step_response_is_the_continuous_solution():
    """Zero-order hold is exact for a held input: after k steps of u = 1 the state is the
    continuous x(k dt) = (exp(k dt A) - 1) / A B, so cumsum(K)_{k-1} = 2 Re(C x(k dt))."""
    k = perturbed_kernel(seed=3)
    length = 50
    dt, a, b, c = k.continuous()
    steps = torch.arange(1, length + 1, dtype=torch.float64)
    x = torch.expm1(a.unsqueeze(-1) * dt[:, None, None] * steps) / a.unsqueeze(-1) * \
        b.unsqueeze(-1)
    want = 2.0 * (c.unsqueeze(-1) * x).sum(1).real
    torch.testing.assert_close(k(length).cumsum(-1), want, rtol=1e-10, atol=1e-12)


def test_initialisations():
    n = 8
    lin = S4DKernel(2, n, init="lin")
    dt, a, b, c = lin.continuous()
    torch.testing.assert_close(a.real, torch.full((2, n // 2), -0.5))
    torch.testing.assert_close(a.imag, (math.pi * torch.arange(n // 2)).expand(2, -1).float())
    torch.testing.assert_close(b, torch.ones(2, n // 2, dtype=torch.complex64))
    assert bool(((dt >= 1e-3) & (dt <= 1e-1)).all())
    inv = S4DKernel(2, n, init="inv")
    m = torch.arange(n // 2, dtype=torch.float64)
    want = (n / math.pi) * (n / (2 * m + 1) - 1)
    torch.testing.assert_close(inv.A_imag[0].double(), want, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="initialisation"):
        S4DKernel(2, n, init="legs")
    with pytest.raises(ValueError, match="even state_dim"):
        S4DKernel(2, 7)


@pytest.mark.parametrize("length", (1, 9, 24))
def test_layer_ssm_bidirectional_matches_direct_sums(length):
    torch.manual_seed(1)
    layer = S4D(4, 6, bidirectional=True).double()
    u = torch.randn(2, 4, length, dtype=torch.float64)
    kf, kb = layer.kernels(length)
    want = naive_causal_conv(u, kf) + naive_causal_conv(u.flip(-1), kb).flip(-1) + \
        layer.D[:, None] * u
    torch.testing.assert_close(layer.ssm(u), want, rtol=0, atol=1e-11)
    # forward = output_linear(gelu(ssm))
    y = layer.output_linear(torch.nn.functional.gelu(want))
    torch.testing.assert_close(layer(u), y, rtol=0, atol=1e-11)


def test_unidirectional_layer_is_causal_and_bidirectional_is_not():
    torch.manual_seed(2)
    u = torch.randn(1, 3, 20, dtype=torch.float64)
    v = u.clone()
    v[..., 12:] += 1.0  # change the future only
    causal = S4D(3, 8, bidirectional=False).double()
    torch.testing.assert_close(causal(u)[..., :12], causal(v)[..., :12], rtol=0, atol=1e-12)
    assert not torch.allclose(causal(u)[..., 12:], causal(v)[..., 12:])
    both = S4D(3, 8, bidirectional=True).double()
    assert not torch.allclose(both(u)[..., :12], both(v)[..., :12])


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    layer = S4D(4, 8, bidirectional=True, dropout=0.1)
    u = torch.randn(2, 4, 30, requires_grad=True)
    layer(u).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name
    assert u.grad is not None and float(u.grad.abs().max()) > 0


def test_float32_agrees_with_float64():
    torch.manual_seed(4)
    layer = S4D(4, 16).eval()
    u = torch.randn(2, 4, 100)
    y32 = layer(u)
    y64 = layer.double()(u.double())
    assert y32.dtype == torch.float32 and y64.dtype == torch.float64
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, 4, L\)"):
        S4D(4, 8)(torch.zeros(2, 3, 10))
