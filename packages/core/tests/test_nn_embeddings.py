"""Tests of polydiff.core.nn.embeddings: the sinusoid against its closed form (DDPM's and
Vaswani et al.'s frequency conventions), fixed Gaussian Fourier features, the time MLP's
scaling, time broadcasting and the null class of the label embedding."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.nn.embeddings import (
    GaussianFourierEmbedding,
    LabelEmbedding,
    SinusoidalEmbedding,
    TimestepMLP,
    batch_time,
)

F64 = torch.float64


@pytest.mark.parametrize("shift", [1.0, 0.0])
def test_sinusoidal_closed_form(shift: float) -> None:
    dim, half = 8, 4
    t = torch.tensor([0.0, 1.0, 17.5, 999.0], dtype=F64)
    emb = SinusoidalEmbedding(dim, freq_shift=shift)(t)
    assert emb.shape == (4, dim) and emb.dtype == F64
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            f = 10000.0 ** (-i / (half - shift))
            assert emb[b, i].item() == pytest.approx(math.sin(tb * f), abs=1e-12)
            assert emb[b, half + i].item() == pytest.approx(math.cos(tb * f), abs=1e-12)


def test_sinusoidal_conventions() -> None:
    # DDPM (shift 1): lowest frequency exactly 1 / max_period; Vaswani (shift 0):
    # PE(pos, 2i) = sin(pos / 10000^(2i / d)).
    ddpm = SinusoidalEmbedding(16)
    assert ddpm.freqs[0].item() == 1.0
    assert ddpm.freqs[-1].item() == pytest.approx(1e-4, rel=1e-12)
    vas = SinusoidalEmbedding(16, freq_shift=0.0)
    d = 16
    assert vas.freqs[3].item() == pytest.approx(1.0 / 10000 ** (2 * 3 / d), rel=1e-12)
    assert not list(ddpm.parameters()) and not ddpm.state_dict()


def test_sinusoidal_odd_dim_and_errors() -> None:
    emb = SinusoidalEmbedding(7)(torch.tensor([3.0]))
    assert emb.shape == (1, 7) and emb[0, -1].item() == 0.0
    with pytest.raises(ValueError):
        SinusoidalEmbedding(2, freq_shift=1.0)


def test_fourier_closed_form_and_fixed() -> None:
    g = torch.Generator().manual_seed(0)
    fe = GaussianFourierEmbedding(8, scale=16.0, generator=g)
    assert not list(fe.parameters())  # a buffer: never trained
    assert "weight" in fe.state_dict()  # ... but saved with the model
    w = torch.randn(4, generator=torch.Generator().manual_seed(0)) * 16.0
    assert torch.equal(fe.weight, w)
    t = torch.tensor([-2.0, 0.3], dtype=F64)
    emb = fe(t)
    arg = 2 * math.pi * t[:, None] * w.to(F64)
    assert torch.allclose(emb, torch.cat([arg.sin(), arg.cos()], -1), atol=1e-12)
    with pytest.raises(ValueError):
        GaussianFourierEmbedding(7)


def test_fourier_unchanged_by_training() -> None:
    torch.manual_seed(0)
    mlp = TimestepMLP(8, 16, kind="fourier")
    w0 = mlp.embed.weight.clone()
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    mlp(torch.rand(4)).square().mean().backward()
    opt.step()
    assert torch.equal(mlp.embed.weight, w0)
    assert all(p.grad is not None for p in mlp.parameters())


def test_timestep_mlp_scale_and_dtype() -> None:
    torch.manual_seed(0)
    a = TimestepMLP(16, 32, time_scale=1000.0)
    b = TimestepMLP(16, 32, time_scale=1.0)
    b.load_state_dict(a.state_dict())
    t = torch.rand(3, dtype=F64)
    out = a(t)
    assert out.shape == (3, 32) and out.dtype == torch.float32
    assert torch.allclose(out, b(1000.0 * t), atol=1e-6)
    with pytest.raises(ValueError):
        TimestepMLP(16, 32, kind="learned")  # type: ignore[arg-type]


def test_batch_time() -> None:
    assert batch_time(0.5, 3).shape == (3,)
    assert torch.equal(batch_time(torch.tensor([2.0]), 3), torch.full((3,), 2.0))
    assert batch_time(torch.tensor([1, 2]), 2).dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        batch_time(torch.zeros(2), 3)


def test_label_embedding_null_class() -> None:
    torch.manual_seed(0)
    le = LabelEmbedding(3, 4)
    null = le.embedding.weight[3]
    for labels in (None, torch.tensor([-1, -1]), torch.tensor([3, 3])):
        assert torch.equal(le(labels, 2), null.expand(2, 4))
    assert torch.equal(le(torch.tensor([0, 2]), 2), le.embedding.weight[[0, 2]])
    with pytest.raises(ValueError):
        le(torch.tensor([4, 0]), 2)
    with pytest.raises(ValueError):
        le(torch.tensor([0, 1, 2]), 2)
