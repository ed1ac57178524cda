"""channels_last conversion and attention-backend selection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polydiff.gpu import attention_backend, to_channels_last


def test_4d_tensor_becomes_channels_last() -> None:
    x = torch.randn(2, 3, 5, 7)
    y = to_channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, x, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 16), (2, 1, 16), (2, 3, 4, 5, 6)])
def test_other_ranks_are_returned_unchanged(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    assert to_channels_last(x) is x


def test_conv_module_converted_in_place_and_same_result() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    assert to_channels_last(net) is net
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    out = net(to_channels_last(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_module_without_2d_conv_is_untouched() -> None:
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3), torch.nn.Linear(4, 4))
    weights = [p.data_ptr() for p in net.parameters()]
    assert to_channels_last(net) is net
    assert [p.data_ptr() for p in net.parameters()] == weights
    with pytest.raises(TypeError):
        to_channels_last([1, 2])  # type: ignore[type-var]


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


@pytest.mark.parametrize("name", ["math", "auto", ["math", "efficient"]])
def test_attention_backend_matches_reference(name: str | list[str]) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    with attention_backend(name):
        out = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, _reference_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_attention_backend_restricts_kernels() -> None:
    q = torch.randn(1, 1, 4, 8)
    with attention_backend("cudnn"), pytest.raises(RuntimeError):  # no cuDNN kernel on CPU
        F.scaled_dot_product_attention(q.cpu(), q.cpu(), q.cpu())


@pytest.mark.parametrize("bad", ["fast", ["auto", "math"], []])
def test_attention_backend_bad_names(bad: str | list[str]) -> None:
    with pytest.raises(ValueError), attention_backend(bad):
        pass
