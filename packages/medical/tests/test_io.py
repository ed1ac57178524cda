"""DICOM and NIfTI in and out on pydicom's real files and generated volumes: rescaling,
windowing, slicing, atomic writes that never overwrite the input, and one clear ValueError for
every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from polydiff.medical.io import (
    read_dicom,
    read_image,
    read_nifti,
    take_slice,
    window,
    write_dicom,
    write_nifti,
)


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def test_reads_real_slices_in_modality_units() -> None:
    ct = read_dicom(_file("CT_small.dcm"))
    raw = pydicom.dcmread(_file("CT_small.dcm")).pixel_array
    assert ct.modality == "CT" and ct.pixels.shape == (128, 128)
    np.testing.assert_allclose(ct.pixels, raw.astype(float) - 1024.0)   # slope 1, int. -1024
    mr = read_image(_file("MR_small.dcm"))
    assert mr.kind == "dicom" and mr.is_slice and mr.window == (600.0, 1600.0)


@pytest.mark.parametrize("name, message", [
    ("rtplan.dcm", "without pixel data"),
    ("rtdose.dcm", "3-D image"),
    ("SC_rgb_small_odd.dcm", "colour image"),
])
def test_bad_dicoms_are_one_line(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        read_image(_file(name))
    assert "\n" not in str(err.value)


def test_non_dicom_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not a DICOM"):
        read_image(bad)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match="neither a DICOM"):
        read_image(other)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.dcm")


def test_dicom_round_trip_and_input_protection(tmp_path: Path) -> None:
    src_path = tmp_path / "ct.dcm"
    shutil.copy(_file("CT_small.dcm"), src_path)
    before = src_path.read_bytes()
    src = read_dicom(src_path)
    img = np.linspace(-1000.0, 1500.0, 64 * 64).reshape(64, 64)
    out = write_dicom(tmp_path / "out.dcm", img, src)
    back = read_dicom(out)
    assert back.pixels.shape == (64, 64)
    np.testing.assert_allclose(back.pixels, img, atol=0.05)
    ds = pydicom.dcmread(out)
    assert ds.SOPInstanceUID != src.meta.SOPInstanceUID and ds.PatientID == src.meta.PatientID
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_dicom(src_path, img, src)
    assert src_path.read_bytes() == before
    with pytest.raises(ValueError, match="2-D"):
        write_dicom(tmp_path / "o3.dcm", np.zeros((2, 4, 4)), src)
    assert not (tmp_path / "o3.dcm").exists()


def test_nifti_volumes_slices_and_round_trip(tmp_path: Path) -> None:
    import nibabel as nib

    vol = np.random.default_rng(0).normal(size=(20, 24, 6)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    img = read_nifti(path)
    assert img.pixels.shape == (20, 24, 6)
    with pytest.raises(ValueError, match="3-D volume"):
        read_image(path, expect_slice=True)
    sl = take_slice(img.pixels, 2)
    np.testing.assert_allclose(sl, vol[:, :, 2])
    with pytest.raises(ValueError, match="out of range"):
        take_slice(img.pixels, 6)
    out = write_nifti(tmp_path / "slice.nii", sl, img)
    back = read_nifti(out, expect_slice=True)
    np.testing.assert_allclose(back.pixels, sl, rtol=1e-6)
    np.testing.assert_allclose(back.meta.affine, img.meta.affine)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_nifti(path, sl, img)


def test_window() -> None:
    hu = np.array([-100.0, 0.0, 40.0, 80.0, 200.0])
    np.testing.assert_allclose(window(hu, 40, 80), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError):
        window(hu, 40, 0)
