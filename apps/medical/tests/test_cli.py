"""``polydiff-med`` end to end on real pydicom slices and generated NIfTI files: outputs in the
input's format, the input never overwritten, and one line with exit code 2 for every kind of
bad input (non-DICOM files, DICOMs without pixel data, 3-D volumes, bad options)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from polydiff.apps.medical.main import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def mr(tmp_path: Path) -> Path:
    path = tmp_path / "mr.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), path)
    return path


def test_help_is_instant_and_torch_free() -> None:
    code = ("import sys; from polydiff.apps.medical.main import build_parser; "
            "build_parser().format_help(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_reconstruct_mri_and_ct_to_dicom(mr: Path, tmp_path: Path, capsys) -> None:
    before = mr.read_bytes()
    out = tmp_path / "rec.dcm"
    code, stdout, err = run(["reconstruct", mr, "-o", out, "--acceleration", "4", "--steps",
                             "4", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["lines"] == 16 and res["method"] == "dc" and np.isfinite(res["psnr_db"])
    ds = pydicom.dcmread(out)
    assert ds.pixel_array.shape == (64, 64) and ds.SeriesDescription.startswith("polydiff")
    assert mr.read_bytes() == before
    assert (tmp_path / "rec.png").is_file()
    code, stdout, err = run(["reconstruct", mr, "-o", tmp_path / "ct.dcm", "--modality", "ct",
                             "--views", "12", "--method", "tv", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["views"] == 12


def test_nifti_in_nifti_out(tmp_path: Path, capsys) -> None:
    import nibabel as nib

    from polydiff.medical.data import TEST_SLICES, template_slices

    img = template_slices(TEST_SLICES[:1], 64)[0, 0].numpy() * 1000
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.flip(img, 0).T.copy(), np.eye(4)), str(path))
    out = tmp_path / "rec.nii.gz"
    code, stdout, err = run(["reconstruct", path, "-o", out, "--method", "zero_filled",
                             "--json"], capsys)
    assert code == 0, err
    back = np.asarray(nib.load(str(out)).dataobj)
    assert back.shape == (64, 64)
    code, _, err = run(["reconstruct", path, "-o", tmp_path / "x.dcm"], capsys)
    assert code == 2 and "NIfTI input needs" in err


def _bad_inputs(tmp_path: Path) -> list[tuple[Path, str]]:
    import nibabel as nib

    text = tmp_path / "notes.dcm"
    text.write_text("hello")
    vol = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), str(vol))
    return [(text, "not a DICOM file"),
            (Path(get_testdata_file("rtplan.dcm")), "without pixel data"),
            (Path(get_testdata_file("rtdose.dcm")), "3-D image"),
            (vol, "3-D volume"),
            (tmp_path / "missing.dcm", "No such file")]


@pytest.mark.parametrize("verb", ["reconstruct", "subsample"])
def test_bad_input_is_one_line(tmp_path: Path, capsys, verb: str) -> None:
    for path, message in _bad_inputs(tmp_path):
        out = tmp_path / "out.dcm"
        code, stdout, err = run([verb, path, "-o", out], capsys)
        assert code == 2, (path, err)
        assert message.lower() in err.lower() and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_never_overwrites_the_input(mr: Path, capsys) -> None:
    before = mr.read_bytes()
    for verb in ("reconstruct", "subsample"):
        code, _, err = run([verb, mr, "-o", mr], capsys)
        assert code == 2 and "refusing to overwrite the input" in err
    assert mr.read_bytes() == before


def test_bad_options(mr: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(["reconstruct", mr, "-o", tmp_path / "o.dcm", "--acceleration", "0.5"],
                       capsys)
    assert code == 2 and "--acceleration" in err
    code, _, err = run(["reconstruct", mr, "-o", tmp_path / "o.nii"], capsys)
    assert code == 2 and "DICOM input needs a DICOM output" in err
    code, _, err = run(["evaluate", "--methods", "magic"], capsys)
    assert code == 2 and "unknown method" in err
    code, _, err = run(["reconstruct", mr, "-o", tmp_path / "o.dcm", "--model",
                        tmp_path / "nope"], capsys)
    assert code == 2 and "no such model folder" in err


def test_subsample_policies(mr: Path, tmp_path: Path, capsys) -> None:
    res = {}
    for policy in ("ads", "random", "equispaced"):
        out = tmp_path / f"{policy}.dcm"
        code, stdout, err = run(["subsample", mr, "-o", out, "--policy", policy, "--steps", "4",
                                 "--particles", "2", "--json"], capsys)
        assert code == 0, err
        res[policy] = json.loads(stdout)
        assert res[policy]["lines"] == 8 and out.is_file()
    assert len(res["ads"]["acquired_order"]) == 8 - 5


def test_anomaly_on_slices(mr: Path, tmp_path: Path, capsys) -> None:
    code, stdout, err = run(["anomaly", mr, "-o", tmp_path / "an", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert len(res["slices"]) == 1 and (tmp_path / "an" / "anomaly.json").is_file()
    code, _, err = run(["anomaly", mr, "-o", tmp_path / "an2", "--t-start", "1.5"], capsys)
    assert code == 2 and "--t-start" in err
