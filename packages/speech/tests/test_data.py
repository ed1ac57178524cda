"""Paired-folder datasets: layouts, pairing errors, crops, resampling, determinism."""

import numpy as np
import pytest
import soundfile as sf

from polydiff.speech.audio import AudioError
from polydiff.speech.data import (
    PairedAudioDataset,
    detect_layout,
    iter_pairs,
    pairs,
)


def _signal(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (0.3 * np.sin(2 * np.pi * (0.01 + 0.001 * seed) * t)
            + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_corpus(root, layout="denoise", sr=16000, lengths=(40000, 20000, 9000),
                splits=("train", "test")):
    """Tiny corpus: noisy = clean + 0.25 (a constant offset makes pairing checkable)."""
    a, b = {"denoise": ("clean", "noisy"), "dereverb": ("anechoic", "reverb")}[layout]
    for split in splits:
        for sub in (a, b):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(lengths):
            x = _signal(n, i)
            sf.write(str(root / split / a / f"utt{i:02d}.wav"), x, sr, subtype="FLOAT")
            sf.write(str(root / split / b / f"utt{i:02d}.wav"), x + 0.25, sr, subtype="FLOAT")
    return root


@pytest.mark.parametrize("layout", ["denoise", "dereverb"])
def test_layout_detection_and_pairs(tmp_path, layout):
    make_corpus(tmp_path, layout)
    assert detect_layout(tmp_path, "train") == layout
    ps = pairs(tmp_path, "test")
    assert [p.name for p in ps] == ["utt00", "utt01", "utt02"]
    assert ps[0].clean.parent.name == ("clean" if layout == "denoise" else "anechoic")
    assert ps[0].noisy.parent.name == ("noisy" if layout == "denoise" else "reverb")
    other = "dereverb" if layout == "denoise" else "denoise"
    with pytest.raises(AudioError, match="missing"):
        pairs(tmp_path, "test", layout=other)


def test_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="no such dataset folder"):
        pairs(tmp_path / "nothing", "train")
    make_corpus(tmp_path)
    with pytest.raises(AudioError, match="no 'valid' split folder .*found: test, train"):
        pairs(tmp_path, "valid")
    (tmp_path / "odd" / "speech").mkdir(parents=True)
    with pytest.raises(AudioError, match="found: speech"):
        detect_layout(tmp_path, "odd")
    for k in range(4):
        sf.write(str(tmp_path / "train" / "clean" / f"extra{k}.wav"), _signal(100, k), 16000)
    with pytest.raises(AudioError, match=r"4 clean file\(s\) without a noisy partner: "
                                         r"extra0.wav, extra1.wav, extra2.wav, \.\.\."):
        pairs(tmp_path, "train")
    assert len(pairs(tmp_path, "train", strict=False)) == 3
    (tmp_path / "both" / "clean").mkdir(parents=True)
    for sub in ("noisy", "anechoic", "reverb"):
        (tmp_path / "both" / sub).mkdir()
    with pytest.raises(AudioError, match="both"):
        detect_layout(tmp_path, "both")
    (tmp_path / "empty" / "clean").mkdir(parents=True)
    (tmp_path / "empty" / "noisy").mkdir()
    with pytest.raises(AudioError, match="no paired audio files"):
        pairs(tmp_path, "empty")


def test_dataset_segments_aligned_and_deterministic(tmp_path):
    make_corpus(tmp_path)
    ds = PairedAudioDataset(tmp_path, "train", segment_frames=64, normalize=False, seed=3)
    assert ds.segment_length == 63 * 128 and len(ds) == 3
    for i in range(3):
        clean, noisy = ds[i]
        assert clean.shape == noisy.shape == (8064,)
        assert clean.dtype == noisy.dtype == np.float32
    # long files: a crop at the same offset in both (noisy - clean is the constant 0.25)
    clean, noisy = ds[0]
    np.testing.assert_allclose(noisy - clean, 0.25, atol=1e-6)
    full = _signal(40000, 0)
    start = int(np.argmin([np.abs(full[s:s + 8064] - clean).max() for s in range(40000 - 8063)]))
    np.testing.assert_allclose(full[start:start + 8064], clean, atol=1e-7)
    # deterministic in (seed, epoch, index); epochs differ
    again = PairedAudioDataset(tmp_path, "train", segment_frames=64, normalize=False, seed=3)
    np.testing.assert_array_equal(again[0][0], clean)
    ds.set_epoch(1)
    assert not np.array_equal(ds[0][0], clean)
    np.testing.assert_array_equal(ds.item(0, epoch=0)[0], clean)
    # a file shorter than the segment (9000 < 99 * 128 samples) is padded
    short = PairedAudioDataset(tmp_path, "train", segment_frames=100, normalize=False)
    c2, y2 = short[2]  # 9000 samples padded to 12672, zeros split around the signal
    pad = 12672 - 9000
    assert c2.shape == (12672,)
    assert not c2[:pad // 2].any() and not c2[pad // 2 + 9000:].any()
    np.testing.assert_allclose(c2[pad // 2: pad // 2 + 9000], _signal(9000, 2), atol=1e-7)
    refl = PairedAudioDataset(tmp_path, "train", segment_frames=100, pad_mode="reflect",
                              normalize=False)
    c3, _ = refl[2]
    assert c3[0] == c3[2 * (pad // 2)]  # mirrored about the first sample
    centre = PairedAudioDataset(tmp_path, "train", segment_frames=64, random_crop=False,
                                normalize=False)
    np.testing.assert_allclose(centre[0][0], full[(40000 - 8064) // 2:][:8064], atol=1e-7)


def test_normalisation_by_noisy_peak(tmp_path):
    make_corpus(tmp_path)
    ds = PairedAudioDataset(tmp_path, "train", segment_frames=32)
    clean, noisy = ds[1]
    assert abs(np.abs(noisy).max() - 1.0) < 1e-6
    raw = PairedAudioDataset(tmp_path, "train", segment_frames=32, normalize=False)
    rc, rn = raw[1]
    np.testing.assert_allclose(clean, rc / np.abs(rn).max(), rtol=1e-6)


def test_unusual_sample_rate_is_resampled(tmp_path):
    make_corpus(tmp_path, "dereverb", sr=22050, lengths=(22050, 11025))
    ds = PairedAudioDataset(tmp_path, "test", sample_rate=16000, segment_frames=None,
                            normalize=False)
    c, y = ds[0]
    assert c.shape == (16000,) and y.shape == (16000,)
    full = list(iter_pairs(tmp_path, "test", sample_rate=16000))
    assert [(p.name, len(c), sr) for p, c, _, sr in full] == [("utt00", 16000, 16000),
                                                             ("utt01", 8000, 16000)]
    native = list(iter_pairs(tmp_path, "test"))
    assert native[1][3] == 22050 and len(native[1][1]) == 11025


def test_mismatched_lengths_truncate(tmp_path):
    make_corpus(tmp_path, lengths=(5000,))
    sf.write(str(tmp_path / "train" / "noisy" / "utt00.wav"), _signal(6000, 9), 16000)
    (p, c, y, _), = iter_pairs(tmp_path, "train")
    assert len(c) == len(y) == 5000


def test_sample_for_sampled_data_source(tmp_path):
    torch = pytest.importorskip("torch")
    make_corpus(tmp_path)
    ds = PairedAudioDataset(tmp_path, "train", segment_frames=16, seed=1)
    clean, noisy = ds.sample(torch.arange(0, 6))
    assert clean.shape == noisy.shape == (6, 15 * 128) and clean.dtype == torch.float32
    # each epoch visits each pair once: noisy peaks normalised to 1 for every row
    torch.testing.assert_close(noisy.abs().amax(-1), torch.ones(6))
    again = ds.sample([3, 4, 5])
    torch.testing.assert_close(again[0], clean[3:])
    perm0 = ds.permutation(0)
    assert sorted(perm0.tolist()) == [0, 1, 2]
    torch.testing.assert_close(clean[0], torch.from_numpy(ds.item(int(perm0[0]), epoch=0)[0]))
    from torch.utils.data import DataLoader

    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch[0].shape == (2, 15 * 128)
