"""Tests of polydiff.core.nn.uvit.MultiModalUViT: shapes per modality, long skips, every output
depending on every modality and time, save/load, and input validation."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.nn import MultiModalUViT, MultiModalUViTConfig, from_pretrained


def _inputs(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = {"image": torch.randn(b, 16, 4, generator=g), "text": torch.randn(b, 4, 8, generator=g)}
    ts = {"image": torch.rand(b, generator=g), "text": torch.rand(b, generator=g)}
    return xs, ts


def test_shapes_and_skips() -> None:
    torch.manual_seed(0)
    cfg = MultiModalUViTConfig.tiny(out_channels=(4, 3), depth=5)
    net = MultiModalUViT(cfg).eval()
    xs, ts = _inputs()
    out = net(xs, ts)
    assert set(out) == {"image", "text"}
    assert out["image"].shape == (3, 16, 4) and out["text"].shape == (3, 4, 3)
    assert net.num_skips == 2
    skips = [name for name, b in net.named_blocks() if b.skip_linear is not None]
    assert skips == ["blocks.3", "blocks.4"]
    assert net(xs, {"image": 0.3, "text": 0.0})["image"].shape == (3, 16, 4)  # scalar times


def test_every_output_sees_every_modality_and_time() -> None:
    torch.manual_seed(0)
    net = MultiModalUViT(MultiModalUViTConfig.tiny()).eval()
    xs, ts = _inputs()
    base = net(xs, ts)
    for key in ("image", "text"):
        xs2 = dict(xs)
        xs2[key] = xs[key] + 1.0
        ts2 = dict(ts)
        ts2[key] = ts[key] * 0.5
        for changed in (net(xs2, ts), net(xs, ts2)):
            for m in ("image", "text"):
                assert not torch.allclose(changed[m], base[m])
    # samples do not mix
    xs3 = {k: v.clone() for k, v in xs.items()}
    xs3["image"][0] += 1.0
    out3 = net(xs3, ts)
    assert torch.allclose(out3["text"][1:], base["text"][1:], atol=1e-6)


def test_save_and_load(tmp_path) -> None:
    torch.manual_seed(0)
    net = MultiModalUViT(MultiModalUViTConfig.tiny(modalities=("a", "b", "c"),
                                                   num_tokens=(2, 3, 1),
                                                   in_channels=(5, 2, 7))).eval()
    g = torch.Generator().manual_seed(1)
    xs = {"a": torch.randn(2, 2, 5, generator=g), "b": torch.randn(2, 3, 2, generator=g),
          "c": torch.randn(2, 1, 7, generator=g)}
    ts = {m: torch.rand(2, generator=g) for m in xs}
    net.save_pretrained(tmp_path / "m")
    back = from_pretrained(tmp_path / "m")
    assert isinstance(back, MultiModalUViT) and back.config == net.config
    for m, v in net(xs, ts).items():
        assert torch.equal(back(xs, ts)[m], v)


def test_validation() -> None:
    with pytest.raises(ValueError, match="one entry per"):
        MultiModalUViTConfig(modalities=("a", "b"), num_tokens=(1,), in_channels=(1, 1))
    with pytest.raises(ValueError, match="distinct"):
        MultiModalUViTConfig(modalities=("a", "a"), num_tokens=(1, 1), in_channels=(1, 1))
    net = MultiModalUViT(MultiModalUViTConfig.tiny())
    xs, ts = _inputs()
    with pytest.raises(ValueError, match="expected tokens"):
        net({"image": xs["image"][:, :3], "text": xs["text"]}, ts)
    with pytest.raises(ValueError, match="missing"):
        net({"image": xs["image"]}, ts)
