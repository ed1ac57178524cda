"""The offline data: template slices and their leak-free splits, deterministic augmentation,
the real pydicom slices, and the fastMRI single-coil reader on a fixture laid out like the
public files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.medical.data import (
    MARGIN,
    TEST_SLICES,
    VAL_SLICES,
    FastMRISingleCoil,
    augment,
    real_slices,
    resize_square,
    split_indices,
    template_slices,
    to_unit,
)


def test_splits_are_disjoint_with_a_margin() -> None:
    train = split_indices("train")
    held = set(TEST_SLICES) | set(VAL_SLICES)
    assert len(train) > 60
    assert min(abs(z - h) for z in train for h in held) > MARGIN
    assert not set(TEST_SLICES) & set(VAL_SLICES)
    with pytest.raises(ValueError):
        split_indices("everything")


def test_template_slices() -> None:
    x = template_slices(TEST_SLICES[:2], 64)
    assert x.shape == (2, 1, 64, 64)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert 0.05 < float(x.mean()) < 0.5                       # brain on a black background
    assert float(x[..., :3, :].max()) < 0.05                  # nothing at the border
    with pytest.raises(ValueError):
        template_slices([500])


def test_augment_is_a_function_of_the_generator() -> None:
    x = template_slices(TEST_SLICES[:4], 32)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1


def test_real_slices() -> None:
    mr, names = real_slices("mr", 64)
    assert "MR_small.dcm" in names and mr.shape[1:] == (1, 64, 64)
    ct, names = real_slices("ct", 32)
    assert names[0] == "CT_small.dcm" and ct.shape[1:] == (1, 32, 32)
    assert float(ct.min()) == 0.0 and float(ct.max()) == 1.0
    with pytest.raises(ValueError):
        real_slices("pet")


def test_resize_and_unit() -> None:
    img = torch.arange(12.0).reshape(1, 3, 4)
    out = resize_square(img, 8)
    assert out.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="constant"):
        to_unit(torch.ones(4, 4))


def test_fastmri_single_coil_fixture(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    folder = tmp_path / "singlecoil_val"
    folder.mkdir()
    img = rng.random((3, 40, 36)).astype(np.float32)
    kspace = np.fft.fftshift(np.fft.fft2(img, norm="ortho"), axes=(-2, -1)).astype(np.complex64)
    with h5py.File(folder / "file1000001.h5", "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_esc", data=img[:, :32, :32])
        f.attrs["acquisition"] = "CORPD_FBK"
    with h5py.File(folder / "file1000002.h5", "w") as f:
        f.create_dataset("kspace", data=kspace[:2])
    ds = FastMRISingleCoil(folder)
    assert len(ds) == 5
    k, target, (name, s) = ds[1]
    assert name == "file1000001.h5" and s == 1 and target.shape == (32, 32)
    rec = FastMRISingleCoil.image(k, crop=None)
    np.testing.assert_allclose(rec.numpy(), np.abs(np.fft.fftshift(img[1], axes=(-2, -1))),
                               atol=1e-5)
    assert ds[4][1] is None
    with h5py.File(folder / "bad.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.complex64))
    with pytest.raises(ValueError, match="multi-coil"):
        FastMRISingleCoil(folder)
