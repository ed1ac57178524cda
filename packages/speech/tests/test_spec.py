"""SGMSE+ representation: STFT conventions against a direct DFT, exact inverses, padding."""

import math

import numpy as np
import pytest
import torch

from polydiff.speech.sgmse.spec import (
    Representation,
    SpecConfig,
    compress,
    crop_frames,
    decompress,
    denormalize,
    get_window,
    normalize_by_noisy,
    pad_frames,
    to_spec,
    to_wave,
)

TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _wave(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def test_defaults_give_256_bins_and_sgmse_training_length():
    cfg = SpecConfig()
    assert (cfg.n_fft, cfg.hop_length, cfg.window, cfg.alpha, cfg.beta) == \
        (510, 128, "hann", 0.5, 0.15)
    assert cfg.n_freq == 256
    assert cfg.segment_length(256) == 32640
    spec = to_spec(torch.zeros(2, cfg.segment_length(256)) + 0.1)
    assert spec.shape == (2, 256, 256)
    assert cfg.num_frames(32640) == 256


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [256, 1000, 4096, 16000, 32641])
def test_wave_spec_wave_round_trip(dtype, length):
    x = _wave((3, length), dtype, seed=length)
    rep = Representation()
    spec = rep.forward(x)
    assert spec.dtype == (torch.complex64 if dtype == torch.float32 else torch.complex128)
    assert spec.shape == (3, 256, 1 + length // 128)
    y = rep.inverse(spec, length)
    assert y.shape == x.shape and y.dtype == dtype
    assert (y - x).abs().max().item() < TOL[dtype] * 10
    # without compression too
    y2 = to_wave(to_spec(x), length)
    assert (y2 - x).abs().max().item() < TOL[dtype] * 10


def test_leading_dims_are_kept():
    x = _wave((2, 3, 2000), torch.float64)
    s = to_spec(x)
    assert s.shape == (2, 3, 256, 1 + 2000 // 128)
    assert torch.equal(s[1, 2], to_spec(x[1, 2]))
    assert to_spec(x[0, 0]).shape == (256, 16)
    assert to_wave(s, 2000).shape == (2, 3, 2000)


@pytest.mark.parametrize("window", ["hann", "sqrthann"])
def test_stft_frame_equals_direct_dft(window):
    """Frame n is the DFT of the reflect-padded signal at n * hop, times the periodic window."""
    cfg = SpecConfig(window=window)
    x = _wave((3000,), torch.float64, seed=7).numpy()
    spec = to_spec(torch.from_numpy(x), cfg).numpy()
    half = cfg.n_fft // 2
    xpad = np.pad(x, half, mode="reflect")
    m = np.arange(cfg.n_fft)
    w = np.sin(np.pi * m / cfg.n_fft) ** 2  # periodic Hann
    if window == "sqrthann":
        w = np.sqrt(w)
    np.testing.assert_allclose(get_window(window, cfg.n_fft, dtype=torch.float64).numpy(), w,
                               atol=1e-15)
    f = np.arange(cfg.n_freq)[:, None]
    dft = np.exp(-2j * np.pi * f * m[None, :] / cfg.n_fft)
    for n in (0, 1, 11, spec.shape[-1] - 1):  # first/last frames use the reflected ends
        frame = xpad[n * cfg.hop_length: n * cfg.hop_length + cfg.n_fft] * w
        np.testing.assert_allclose(spec[:, n], dft @ frame, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_compress_decompress_exact_inverses_including_zero(dtype):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(4, 256, 9, generator=g, dtype=dtype) * 3
    c[0, :10, 0] = 0
    c[1, 5, :] = 0
    z = compress(c, 0.5, 0.15)
    assert torch.isfinite(torch.view_as_real(z)).all()
    assert (z[0, :10, 0] == 0).all()
    # closed form: magnitude beta |c|^alpha, same phase
    torch.testing.assert_close(z.abs(), 0.15 * c.abs().sqrt())
    nz = c.abs() > 0
    torch.testing.assert_close(torch.angle(z)[nz], torch.angle(c)[nz])
    back = decompress(z, 0.5, 0.15)
    assert torch.isfinite(torch.view_as_real(back)).all()
    tol = 1e-6 if dtype == torch.complex64 else 1e-14
    assert ((back - c).abs() / c.abs().clamp_min(1e-3)).max().item() < tol
    assert (back[c == 0] == 0).all()
    # alpha = 1 is a pure scaling; other exponents invert too
    torch.testing.assert_close(compress(c, 1.0, 2.0), 2.0 * c)
    torch.testing.assert_close(decompress(compress(c, 0.3, 0.5), 0.3, 0.5), c,
                               rtol=1e-4, atol=1e-5)


def test_pad_and_crop_frames_round_trip():
    s = torch.randn(2, 256, 37, dtype=torch.complex64)
    p, n = pad_frames(s, 16)
    assert n == 37 and p.shape == (2, 256, 48)
    assert (p[..., 37:] == 0).all()
    assert torch.equal(crop_frames(p, n), s)
    same, n2 = pad_frames(s[..., :32], 16)
    assert same.shape[-1] == 32 and n2 == 32
    with pytest.raises(ValueError):
        pad_frames(s, 0)
    # full inference path: wave -> spec -> pad -> crop -> wave is exact
    x = _wave((1, 5000), torch.float64)
    rep = Representation()
    p, n = pad_frames(rep(x), 64)
    assert p.shape[-1] % 64 == 0
    y = rep.inverse(crop_frames(p, n), 5000)
    assert (y - x).abs().max().item() < 1e-11


def test_normalize_by_noisy_and_denormalize():
    noisy = torch.tensor([[0.1, -0.5, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    clean = torch.tensor([[0.05, -0.25, 0.1], [0.0, 0.0, 0.0]], dtype=torch.float64)
    (yn, xn), f = normalize_by_noisy(noisy, clean)
    assert f.shape == (2, 1)
    assert f[0, 0].item() == 0.5 and f[1, 0].item() == 1.0  # silent input: factor 1
    assert yn[0].abs().max().item() == 1.0
    torch.testing.assert_close(xn[0], clean[0] / 0.5)
    assert torch.isfinite(yn).all()
    torch.testing.assert_close(denormalize(xn, f), clean)


def test_config_validation_and_short_input():
    for bad in ({"window": "hamming"}, {"hop_length": 0}, {"alpha": 0.0}, {"beta": -1.0},
                {"sample_rate": 500}, {"n_fft": 1}):
        with pytest.raises(ValueError):
            SpecConfig(**bad)
    with pytest.raises(ValueError, match="too short"):
        to_spec(torch.zeros(100) + 1)
    cfg = SpecConfig(pad_mode="constant")
    x = _wave((100,), torch.float64)
    assert (to_wave(to_spec(x, cfg), 100, cfg) - x).abs().max().item() < 1e-12
    with pytest.raises(TypeError):
        to_wave(torch.zeros(256, 3), 10)
    with pytest.raises(ValueError):
        to_wave(torch.zeros(100, 3, dtype=torch.complex64), 10)


def test_compressed_sinusoid_has_expected_peak():
    """A unit sinusoid on bin k has STFT magnitude sum(w)/2 = n_fft/4 at that bin (Hann)."""
    cfg = SpecConfig()
    k = 20
    t = torch.arange(8000, dtype=torch.float64)
    x = torch.cos(2 * math.pi * k * t / cfg.n_fft)
    s = to_spec(x)
    mid = s[:, s.shape[-1] // 2]
    assert mid.abs().argmax().item() == k
    assert abs(mid[k].abs().item() - cfg.n_fft / 4) < 1e-9
    z = Representation()(x)[:, s.shape[-1] // 2]
    assert abs(z[k].abs().item() - 0.15 * math.sqrt(cfg.n_fft / 4)) < 1e-9
