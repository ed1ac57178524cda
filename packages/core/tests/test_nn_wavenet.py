"""Tests of polydiff.core.nn.wavenet: shapes for any length with and without conditioner
channels, the receptive field (measured by perturbing one input sample), the zero-initialised
output and input validation."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.nn import WaveNet, WaveNetConfig


@pytest.mark.parametrize("length", [1, 37, 64])
def test_shapes(length: int) -> None:
    torch.manual_seed(0)
    net = WaveNet(WaveNetConfig.tiny(in_channels=2, out_channels=3, cond_channels=5,
                                     num_classes=4)).eval()
    out = net(torch.randn(2, 2, length), torch.tensor([0.1, 0.5]),
              cond=torch.randn(2, 5, length), class_labels=torch.tensor([1, -1]))
    assert out.shape == (2, 3, length)


def test_zero_output_at_init_and_default_config() -> None:
    torch.manual_seed(0)
    net = WaveNet(WaveNetConfig.tiny())
    assert torch.equal(net(torch.randn(1, 1, 20), 0.5), torch.zeros(1, 1, 20))
    base = WaveNetConfig()  # DiffWave-Base: 30 layers, 64 channels, dilation cycle 10
    assert (base.num_layers, base.residual_channels, base.dilation_cycle) == (30, 64, 10)


def test_receptive_field() -> None:
    torch.manual_seed(0)
    net = WaveNet(WaveNetConfig.tiny(num_layers=3, dilation_cycle=3)).eval()  # dilations 1,2,4
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(1, 1, 41)
        y0 = net(x, 0.3)
        x2 = x.clone()
        x2[..., 20] += 1.0
        changed = ((net(x2, 0.3) - y0).abs() > 0).flatten().nonzero().flatten()
    half = (net.receptive_field - 1) // 2
    assert changed.min().item() == 20 - half and changed.max().item() == 20 + half


def test_validation() -> None:
    net = WaveNet(WaveNetConfig.tiny(cond_channels=2))
    with pytest.raises(ValueError, match="cond must have shape"):
        net(torch.randn(1, 1, 8), 0.5)
    with pytest.raises(ValueError, match="cond must have shape"):
        net(torch.randn(1, 1, 8), 0.5, cond=torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="expected x"):
        net(torch.randn(1, 8), 0.5)
    with pytest.raises(ValueError, match="odd"):
        WaveNetConfig(kernel_size=2)
