"""Tests of polydiff.core.nn.unet: shapes for 1-D/2-D/3-D inputs with class labels and
condition channels, input validation, block names, the DDPM CIFAR-10 parameter count, and
numerical agreement with diffusers' UNet2DModel (an independent implementation of the same
DDPM architecture) after copying weights across."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.interop.diffusers import unet_state_dict_from_diffusers
from polydiff.core.nn import UNet, UNetConfig


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("dims, size", [(1, (16,)), (2, (8, 12)), (3, (4, 4, 8))])
def test_shapes(dims: int, size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    cfg = UNetConfig.tiny(dims, out_channels=3, num_classes=5, cond_channels=1)
    net = UNet(cfg).eval()
    x = torch.randn(2, 2, *size)
    out = net(x, torch.tensor([0.1, 0.9]), class_labels=torch.tensor([0, -1]),
              cond=torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("overrides", [
    dict(resample="avgpool"), dict(time_embedding="fourier", time_scale=1.0),
    dict(scale_shift=False, mid_attention=False, attention_levels=()),
    dict(channel_mults=(1, 1, 2), num_res_blocks=2, attention_levels=(0, 2)),
])
def test_variants(overrides: dict) -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig.tiny(1, **overrides))
    x = torch.randn(2, 2, 8)
    assert net(x, 0.5).shape == x.shape


def test_input_validation() -> None:
    net = UNet(UNetConfig.tiny(2, channel_mults=(1, 2, 2), cond_channels=1))
    assert net.padding_multiple == 4
    cond = torch.zeros(1, 1, 8, 6)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 2, 8, 6), 0.5, cond=cond)
    with pytest.raises(ValueError, match="cond must have shape"):
        net(torch.zeros(1, 2, 8, 8), 0.5)
    with pytest.raises(ValueError, match="expected x"):
        net(torch.zeros(1, 2, 8), 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        net(torch.zeros(1, 2, 8, 8), 0.5, class_labels=torch.tensor([1]),
            cond=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig.tiny(2, attention_levels=(2,))
    with pytest.raises(ValueError, match="dims"):
        UNetConfig.tiny(4)


def test_block_names_tiny() -> None:
    net = UNet(UNetConfig.tiny(2))
    assert net.block_names() == [
        "down.0.res.0", "down.0.downsample", "down.1.res.0", "down.1.attn.0",
        "mid.res.0", "mid.attn", "mid.res.1",
        "up.1.res.0", "up.1.attn.0", "up.1.res.1", "up.1.attn.1", "up.1.upsample",
        "up.0.res.0", "up.0.res.1",
    ]


def test_ddpm_cifar10_parameter_count() -> None:
    """Ho et al. (2020) report 35.7M; diffusers' UNet2DModel for google/ddpm-cifar10-32 has
    exactly 35,746,307 parameters."""
    torch.manual_seed(0)
    net = UNet(UNetConfig.ddpm_cifar10())
    n = sum(p.numel() for p in net.parameters())
    assert n == 35_746_307
    assert abs(n - 35.7e6) / 35.7e6 < 0.01
    names = net.block_names()
    assert "down.1.attn.1" in names and "up.1.attn.2" in names and "down.2.attn.0" not in names
    # down: 8 res + 2 attn + 3 downsample; mid: 3; up: 12 res + 3 attn + 3 upsample
    assert len(names) == 8 + 2 + 3 + 3 + 12 + 3 + 3


# --------------------------------------------------------------------------- diffusers oracle
@pytest.mark.diffusers
@pytest.mark.parametrize("scale_shift", [False, True])
def test_matches_diffusers_unet2d(scale_shift: bool) -> None:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, freq_shift=1,
        flip_sin_to_cos=False, norm_num_groups=4, norm_eps=1e-6, attention_head_dim=8,
        resnet_time_scale_shift="scale_shift" if scale_shift else "default",
        add_attention=not scale_shift).eval()  # diffusers drops mid-attention's norm here
    _randomize(ref)
    net = UNet(UNetConfig.tiny(2, time_scale=1.0, scale_shift=scale_shift,
                               mid_attention=not scale_shift)).eval()
    net.load_state_dict(unet_state_dict_from_diffusers(ref.state_dict(), 2), strict=True)
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([3.0, 742.0])
    with torch.no_grad():
        want = ref(x, t).sample
        got = net(x, t)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
