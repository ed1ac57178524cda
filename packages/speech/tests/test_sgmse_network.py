"""The NCSN++-style network of SGMSE+: shapes, the complex <-> channel adapter, presets and
save/load through polydiff-core's hub."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.nn import from_pretrained
from polydiff.speech.sgmse.network import (
    PRESETS,
    NCSNpp,
    NCSNppConfig,
    SpecAdapter,
    channels_to_complex,
    complex_to_channels,
)


def _spec(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.complex64, generator=g)


def _perturbed(cfg: NCSNppConfig, seed: int = 0) -> NCSNpp:
    """A network whose output is not identically zero (the core U-Net zero-initialises its
    output convolution)."""
    torch.manual_seed(seed)
    net = NCSNpp(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("frames", [2, 6, 16])
def test_shapes_for_multiples_of_padding(frames: int) -> None:
    net = _perturbed(NCSNppConfig.preset("tiny"))
    assert net.padding_multiple == 2
    x, y = _spec(2, 1, 256, frames), _spec(2, 1, 256, frames, seed=1)
    out = net(x, torch.tensor([0.1, 0.9]), y)
    assert out.shape == (2, 1, 256, frames) and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert out.abs().amax() > 0


def test_frames_must_be_a_multiple() -> None:
    net = NCSNpp(NCSNppConfig.preset("tiny", channel_mults=(1, 2, 2)))
    assert net.padding_multiple == 4
    with pytest.raises(ValueError, match="divisible by 4"):
        net(_spec(1, 1, 256, 6), torch.tensor([0.5]), _spec(1, 1, 256, 6))
    with pytest.raises(ValueError, match="pass the noisy spectrogram"):
        net(_spec(1, 1, 256, 8), torch.tensor([0.5]))


def test_channel_layout_round_trip() -> None:
    x, y = _spec(2, 1, 4, 3), _spec(2, 1, 4, 3, seed=1)
    h = complex_to_channels(x, y)
    assert h.shape == (2, 4, 4, 3)
    torch.testing.assert_close(h[:, 0:1], x.real)
    torch.testing.assert_close(h[:, 1:2], x.imag)
    torch.testing.assert_close(h[:, 2:3], y.real)
    torch.testing.assert_close(h[:, 3:4], y.imag)
    assert torch.equal(channels_to_complex(h[:, :2]), x)
    with pytest.raises(TypeError, match="complex"):
        complex_to_channels(x.real)


def test_adapter_feeds_channels_and_log_time() -> None:
    seen = {}

    def backbone(h: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen["h"], seen["time"] = h, time
        return h[:, 2:4]  # return y's channels

    x, y = _spec(2, 1, 4, 2), _spec(2, 1, 4, 2, seed=1)
    t = torch.tensor([0.25, 1.0])
    out = SpecAdapter(backbone)(x, t, y)
    assert torch.equal(out, y)
    torch.testing.assert_close(seen["time"], torch.log(t))
    assert seen["h"].shape[1] == 4
    # the unconditional adapter (predictive baseline) sees y only
    out = SpecAdapter(lambda h, time: h, conditional=False)(y, 1.0)
    assert torch.equal(out, y)


def test_presets_and_parameter_counts() -> None:
    counts = {}
    for name in PRESETS:
        cfg = NCSNppConfig.preset(name)
        with torch.device("meta"):
            counts[name] = NCSNpp(cfg).num_parameters()
    assert counts["tiny"] < 20_000
    assert 1_000_000 < counts["small"] < 3_000_000
    assert 25_000_000 < counts["paper"] < 65_000_000
    paper = NCSNppConfig.preset("paper")
    assert paper.base_channels == 128 and paper.channel_mults == (1, 1, 2, 2, 2, 2, 2)
    assert 256 % 2 ** (len(paper.channel_mults) - 1) == 0
    with pytest.raises(ValueError, match="unknown NCSN"):
        NCSNppConfig.preset("huge")
    with pytest.raises(ValueError, match="attention_levels"):
        NCSNppConfig(channel_mults=(1, 2), attention_levels=(3,))


def test_save_load_round_trip_is_bit_exact(tmp_path) -> None:
    net = _perturbed(NCSNppConfig.preset("tiny"), seed=3).eval()
    x, y, t = _spec(1, 1, 256, 4), _spec(1, 1, 256, 4, seed=1), torch.tensor([0.3])
    path = net.save_pretrained(tmp_path / "net")
    again = NCSNpp.from_pretrained(path)
    assert again.config == net.config
    state, loaded = net.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    with torch.no_grad():
        # weights are bit-exact; outputs may differ in the last bit because tensors read by
        # safetensors are not 64-byte aligned and CPU kernels pick another code path
        torch.testing.assert_close(net(x, t, y), again(x, t, y))
    assert isinstance(from_pretrained(path), NCSNpp)  # through the core registry
