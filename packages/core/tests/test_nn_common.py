"""Properties every polydiff.core.nn backbone shares: addressable blocks (stable, unique,
``get_submodule`` paths, covering every parameter outside the stem and head), bit-exact
save_pretrained/from_pretrained round trips (float32 and float64), and gradient flow (a few
optimiser steps on one batch reduce the loss)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from polydiff.core.nn import (
    DiffusionTransformer,
    DiffusionTransformerConfig,
    UNet,
    UNetConfig,
    WaveNet,
    WaveNetConfig,
    from_pretrained,
)

Case = tuple[Callable[[], nn.Module], Callable[[torch.Generator], tuple[torch.Tensor, dict]]]


def _unet2d_inputs(g: torch.Generator) -> tuple[torch.Tensor, dict]:
    return torch.randn(2, 2, 8, 8, generator=g), {
        "class_labels": torch.tensor([1, -1]), "cond": torch.randn(2, 1, 8, 8, generator=g)}


def _tokens(g: torch.Generator) -> tuple[torch.Tensor, dict]:
    return torch.randn(2, 16, 4, generator=g), {"class_labels": torch.tensor([0, 2])}


def _wave(g: torch.Generator) -> tuple[torch.Tensor, dict]:
    return torch.randn(2, 1, 24, generator=g), {"cond": torch.randn(2, 3, 24, generator=g)}


CASES: dict[str, Case] = {
    "unet1d": (lambda: UNet(UNetConfig.tiny(1, time_embedding="fourier", time_scale=1.0)),
               lambda g: (torch.randn(2, 2, 16, generator=g), {})),
    "unet2d": (lambda: UNet(UNetConfig.tiny(2, num_classes=3, cond_channels=1, dropout=0.1)),
               _unet2d_inputs),
    "dit": (lambda: DiffusionTransformer(DiffusionTransformerConfig.tiny("adaln",
                                                                         num_classes=3)),
            _tokens),
    "uvit": (lambda: DiffusionTransformer(DiffusionTransformerConfig.tiny("token",
                                                                          num_classes=3)),
             _tokens),
    "wavenet": (lambda: WaveNet(WaveNetConfig.tiny(cond_channels=3, time_embedding="fourier")),
                _wave),
}


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name][0]()


def _randomize(model: nn.Module, seed: int = 1) -> None:
    """Zero-initialised layers make outputs trivially equal: perturb every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)


@pytest.mark.parametrize("name", list(CASES))
def test_named_blocks_complete_and_stable(name: str) -> None:
    net = _build(name)
    names = [n for n, _ in net.named_blocks()]
    assert names and len(names) == len(set(names))
    assert names == [n for n, _ in _build(name, seed=5).named_blocks()]
    for n, block in net.named_blocks():
        assert net.get_submodule(n) is block
    owners = tuple(f"{n}." for n in names) + ("stem.", "head.")
    orphans = [p for p, _ in net.named_parameters() if not p.startswith(owners)]
    assert not orphans
    # every block holds parameters (no empty names) except parameter-free resamplers
    empty = [n for n, b in net.named_blocks() if not any(True for _ in b.parameters())]
    assert all(n.endswith(("downsample", "upsample")) for n in empty)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_bit_exact(name: str, dtype: torch.dtype, tmp_path: Path) -> None:
    net = _build(name).to(dtype)
    _randomize(net)
    net.eval()
    x, kw = CASES[name][1](torch.Generator().manual_seed(0))
    x = x.to(dtype)
    kw = {k: v.to(dtype) if v.is_floating_point() else v for k, v in kw.items()}
    t = torch.tensor([0.25, 0.8], dtype=dtype)
    with torch.no_grad():
        want = net(x, t, **kw)
    out = net.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = type(net).from_pretrained(tmp_path / "model")
    assert type(loaded) is type(net) and loaded.config == net.config and not loaded.training
    assert all(p.requires_grad for p in loaded.parameters())
    sd, sd2 = net.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) and sd[k].dtype == sd2[k].dtype for k in sd)
    with torch.no_grad():
        got = loaded(x, t, **kw)
    assert torch.equal(got, want)
    again = from_pretrained(tmp_path / "model")  # the generic loader finds the class too
    assert type(again) is type(net)


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_flow_overfit(name: str) -> None:
    net = _build(name).train()
    x, kw = CASES[name][1](torch.Generator().manual_seed(0))
    target = torch.randn(net(x, torch.zeros(2), **kw).shape,
                         generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.6])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (net(x, t, **kw) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # after a few steps past the zero-initialised layers, every block receives gradient
    for n, block in net.named_blocks():
        grads = [p.grad for p in block.parameters()]
        if grads:
            assert any(g is not None and g.abs().sum() > 0 for g in grads), n


def test_drives_denoiser_and_guidance() -> None:
    """A backbone plugs into ModelDenoiser and classifier-free guidance (negative label = the
    null class), and the batched guided call equals two separate passes."""
    from polydiff.core.denoiser import ModelDenoiser
    from polydiff.core.guidance import ClassifierFreeGuidance
    from polydiff.core.processes import VPLinear

    net = _build("unet2d").eval()
    _randomize(net)
    den = ModelDenoiser(net, VPLinear(), "epsilon")
    x, kw = _unet2d_inputs(torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2])
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    guided = ClassifierFreeGuidance(den, 3.0, uncond={"class_labels": torch.tensor(-1)})
    with torch.no_grad():
        x0, eps = guided.x0_eps(x, t, class_labels=labels, cond=kw["cond"])
        ec = den.eps(x, t, class_labels=labels, cond=kw["cond"])
        eu = den.eps(x, t, class_labels=None, cond=kw["cond"])
    assert x0.shape == x.shape
    assert torch.allclose(eps, eu + 3.0 * (ec - eu), atol=1e-5)
