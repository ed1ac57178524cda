"""Tests of polydiff.core.nn.transformer: patchify/unpatchify (1-D, 2-D, by hand), output
shapes in both time-conditioning modes, adaLN-Zero's identity initialisation, U-ViT long
skips and input validation."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.nn import DiffusionTransformer, DiffusionTransformerConfig, patchify, unpatchify


def test_patchify_2d_by_hand() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tok = patchify(x, 2)
    assert tok.shape == (2, 6, 12)
    # token 4 = patch row 1, column 1: rows 2-3, columns 2-3; features ordered (C, ph, pw)
    want = x[1, :, 2:4, 2:4].reshape(-1)
    assert torch.equal(tok[1, 4], want)
    assert torch.equal(unpatchify(tok, 2, (4, 6)), x)


def test_patchify_1d_and_rectangular() -> None:
    x = torch.randn(2, 3, 12)
    tok = patchify(x, 4)
    assert tok.shape == (2, 3, 12)
    assert torch.equal(tok[0, 1], x[0, :, 4:8].reshape(-1))
    assert torch.equal(unpatchify(tok, 4, (12,)), x)
    y = torch.randn(1, 2, 4, 9)
    assert torch.equal(unpatchify(patchify(y, (2, 3)), (2, 3), (4, 9)), y)
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 1, 5, 4), 2)
    with pytest.raises(ValueError, match="tile"):
        unpatchify(torch.randn(1, 3, 4), 2, (4, 4))


@pytest.mark.parametrize("mode", ["adaln", "token"])
def test_shapes(mode: str) -> None:
    torch.manual_seed(0)
    cfg = DiffusionTransformerConfig.tiny(mode, out_channels=6, num_classes=3, cond_channels=2)
    net = DiffusionTransformer(cfg).eval()
    x, c = torch.randn(2, 16, 4), torch.randn(2, 16, 2)
    out = net(x, torch.tensor([0.2, 0.7]), class_labels=torch.tensor([2, -1]), cond=c)
    assert out.shape == (2, 16, 6)
    short = net(x[:, :10], 0.5, cond=c[:, :10])  # fewer tokens than the table: a prefix
    assert short.shape == (2, 10, 6)


def test_adaln_zero_initialisation() -> None:
    """DiT's adaLN-Zero: every block is the identity at initialisation and the output is 0."""
    torch.manual_seed(0)
    net = DiffusionTransformer(DiffusionTransformerConfig.tiny("adaln"))
    h, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    for _, block in net.named_blocks():
        assert torch.equal(block(h, c), h)
    assert torch.equal(net(torch.randn(2, 16, 4), 0.3), torch.zeros(2, 16, 4))


def test_token_mode_long_skips() -> None:
    torch.manual_seed(0)
    net = DiffusionTransformer(DiffusionTransformerConfig.tiny("token", depth=5, num_classes=2))
    assert net.num_extra_tokens == 2 and net.num_skips == 2
    skips = [b.skip_linear is not None for _, b in net.named_blocks()]
    assert skips == [False, False, False, True, True]
    assert net.stem.pos.shape == (1, 2 + 16, 32)
    assert net(torch.randn(1, 16, 4), 0.5).abs().sum() > 0  # U-ViT's head is not zeroed
    plain = DiffusionTransformer(DiffusionTransformerConfig.tiny("token", long_skip=False))
    assert all(b.skip_linear is None for b in plain.blocks)
    dit = DiffusionTransformer(DiffusionTransformerConfig.tiny("adaln", long_skip=True))
    assert dit.num_skips == 1 and dit.blocks[2].skip_linear is not None


def test_validation() -> None:
    net = DiffusionTransformer(DiffusionTransformerConfig.tiny("adaln"))
    with pytest.raises(ValueError, match="exceed"):
        net(torch.randn(1, 17, 4), 0.5)
    with pytest.raises(ValueError, match="tokens"):
        net(torch.randn(1, 4, 16), 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        net(torch.randn(1, 16, 4), 0.5, class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="cond"):
        net(torch.randn(1, 16, 4), 0.5, cond=torch.randn(1, 16, 1))
    with pytest.raises(ValueError, match="time_conditioning"):
        DiffusionTransformerConfig(time_conditioning="cross")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_heads"):
        DiffusionTransformerConfig(hidden_size=30, num_heads=4)


def test_self_attention_key_padding_mask() -> None:
    """Masked keys are ignored: a padded sequence gives the unpadded sequence's outputs."""
    from polydiff.core.nn.transformer import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(8, num_heads=2).eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, torch.randn(1, 3, 8)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(attn(padded, mask)[:, :5], attn(x))
    assert not torch.allclose(attn(padded)[:, :5], attn(x))
