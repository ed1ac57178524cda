"""Image I/O: DICOM (pydicom) and NIfTI (nibabel) in and out, intensity windowing, slicing.

Readers return a :class:`MedicalImage`: the pixels as float64 in the modality's units (DICOM
``RescaleSlope``/``RescaleIntercept`` applied: Hounsfield units for CT) plus what a writer
needs to produce a well-formed file of the same kind (the source dataset or NIfTI header).
Bad input raises one ``ValueError`` line naming the file and the problem: not a DICOM/NIfTI
file, a DICOM without pixel data, pixel data that cannot be decoded, colour images, and 3-D
volumes (multi-frame DICOM, 3-D NIfTI) where a single slice is expected (pick one with
:func:`take_slice`).

Writers never overwrite the file they read from (:func:`write_dicom` and :func:`write_nifti`
refuse ``path == source``) and write atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_path

__all__ = ["MedicalImage", "read_dicom", "write_dicom", "read_nifti", "write_nifti",
           "read_image", "take_slice", "window", "WINDOWS", "is_dicom"]

#: Common display windows ``(centre, width)`` (CT in Hounsfield units).
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0), "subdural": (75.0, 215.0), "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0),
}


@dataclass
class MedicalImage:
    """Pixels (float64, modality units) plus their source.

    Attributes:
        pixels: ``(H, W)`` for a slice or ``(D, H, W)`` / ``(X, Y, Z)`` for a volume.
        kind: ``"dicom"`` or ``"nifti"``.
        path: the file read.
        modality: DICOM ``Modality`` (``"CT"``, ``"MR"``, ...) or ``""``.
        meta: the pydicom ``Dataset`` (without pixel data) or the nibabel image header/affine.
        window: the file's display window ``(centre, width)`` if it names one.
    """

    pixels: np.ndarray
    kind: str
    path: Path
    modality: str = ""
    meta: Any = None
    window: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_slice(self) -> bool:
        return self.pixels.ndim == 2


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True when the file has the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _first(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v[0]) if isinstance(v, list | tuple) or hasattr(v, "__getitem__") and \
            not isinstance(v, str | bytes) else float(v)
    except (TypeError, ValueError, IndexError):
        return None


def read_dicom(path: str | os.PathLike[str], *, expect_slice: bool = True) -> MedicalImage:
    """Read a DICOM file (module docstring); with ``expect_slice`` a multi-frame (3-D) image
    is refused with one line."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: '{p}'")
    try:
        ds = pydicom.dcmread(p)
    except InvalidDicomError:
        raise ValueError(f"{p}: not a DICOM file (no DICM preamble)") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many kinds on damaged files
        raise ValueError(f"{p}: cannot be read as DICOM ({type(err).__name__}: {err})") \
            from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and \
            "DoubleFloatPixelData" not in ds:
        kind = ds.get("Modality", "") or ds.get("SOPClassUID", "")
        raise ValueError(f"{p}: DICOM file without pixel data ({kind or 'no image'}): "
                         "nothing to reconstruct")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as err:  # noqa: BLE001 - missing decoders, truncated data, ...
        raise ValueError(f"{p}: the pixel data cannot be decoded here "
                         f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(ds.get("SamplesPerPixel", 1)) > 1 or photometric not in ("MONOCHROME1",
                                                                     "MONOCHROME2"):
        raise ValueError(f"{p}: a colour image ({photometric}); only greyscale CT/MR slices "
                         "are supported")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if expect_slice and (frames > 1 or arr.ndim != 2):
        raise ValueError(f"{p}: a 3-D image ({frames} frames, shape {arr.shape}) where one "
                         "2-D slice is expected; extract a slice first")
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    pixels = arr.astype(np.float64) * slope + intercept
    if photometric == "MONOCHROME1":  # bright = low values: store as MONOCHROME2 semantics
        pixels = pixels.max() + pixels.min() - pixels
    c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    meta = copy.deepcopy(ds)
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in meta:
            del meta[tag]
    return MedicalImage(pixels=pixels, kind="dicom", path=p, modality=str(ds.get("Modality",
                                                                                  "")),
                        meta=meta, window=(c, w) if c is not None and w else None)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_dicom(path: str | os.PathLike[str], pixels: np.ndarray, source: MedicalImage, *,
                description: str = "polydiff reconstruction") -> Path:
    """Write a 2-D image (modality units, e.g. HU) as a new DICOM instance derived from
    ``source`` (same patient/study/geometry, new series and SOP instance UIDs, 16-bit signed
    pixels with a rescale slope/intercept that covers the value range). Refuses to overwrite
    ``source``'s file."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = Path(path)
    if _same_file(source.path, out):
        raise ValueError(f"{out}: refusing to overwrite the input file; choose another output")
    img = np.asarray(pixels, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"write_dicom writes one 2-D slice, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError("the image holds NaN or infinite values")
    if source.kind != "dicom" or source.meta is None:
        raise ValueError("write_dicom needs a DICOM source to derive the new file from")
    ds = copy.deepcopy(source.meta)
    lo, hi = float(img.min()), float(img.max())
    slope = max((hi - lo) / 65000.0, 1e-6)
    intercept = lo + 32768.0 * slope
    stored = np.clip(np.round((img - intercept) / slope), -32768, 32767).astype(np.int16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    for tag in ("NumberOfFrames", "PlanarConfiguration", "PixelPaddingValue",
                "SmallestImagePixelValue", "LargestImagePixelValue", "DataSetTrailingPadding"):
        if tag in ds:
            del ds[tag]
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesDescription = description[:64]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.file_meta = copy.deepcopy(source.meta.file_meta) \
        if hasattr(source.meta, "file_meta") else pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out


def read_nifti(path: str | os.PathLike[str], *, expect_slice: bool = False) -> MedicalImage:
    """Read a NIfTI-1/2 image (``.nii``, ``.nii.gz``); 4-D images keep their first volume. With
    ``expect_slice``, images with more than one slice are refused."""
    import nibabel as nib
    from nibabel.dataobj_images import DataobjImage

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: '{p}'")
    try:
        img = nib.load(str(p))
        assert isinstance(img, DataobjImage)  # nib.load is typed as any file-based image
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
        raise ValueError(f"{p}: not a readable NIfTI file ({type(err).__name__})") from None
    if data.ndim == 4:
        data = data[..., 0]
    data = np.squeeze(data) if data.ndim == 3 and 1 in data.shape else data
    if data.ndim not in (2, 3):
        raise ValueError(f"{p}: unsupported NIfTI shape {data.shape}")
    if expect_slice and data.ndim != 2:
        raise ValueError(f"{p}: a 3-D volume ({'x'.join(map(str, data.shape))}) where one 2-D "
                         "slice is expected; extract a slice first")
    return MedicalImage(pixels=data, kind="nifti", path=p, meta=img)


def write_nifti(path: str | os.PathLike[str], data: np.ndarray,
                source: MedicalImage | None = None) -> Path:
    """Write a 2-D or 3-D array as NIfTI (affine and header from ``source`` when given);
    refuses to overwrite ``source``'s file."""
    import nibabel as nib

    out = Path(path)
    if source is not None and _same_file(source.path, out):
        raise ValueError(f"{out}: refusing to overwrite the input file; choose another output")
    arr = np.asarray(data, dtype=np.float32)
    affine = source.meta.affine if source is not None and source.kind == "nifti" \
        else np.eye(4)
    img = nib.Nifti1Image(arr, affine)
    suffix = ".nii.gz" if out.name.endswith(".gz") else ".nii"
    with atomic_path(out) as tmp:
        real = tmp.with_name(tmp.name + suffix)  # nibabel picks the format by extension
        nib.save(img, str(real))
        os.replace(real, tmp)
    return out


def read_image(path: str | os.PathLike[str], *, expect_slice: bool = True) -> MedicalImage:
    """Read a DICOM or NIfTI file, chosen by content (DICOM preamble) or the ``.nii`` /
    ``.nii.gz`` suffix; anything else is refused with one line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: '{p}'")
    if p.name.endswith((".nii", ".nii.gz")):
        return read_nifti(p, expect_slice=expect_slice)
    if is_dicom(p) or p.suffix.lower() in (".dcm", ".dicom"):
        return read_dicom(p, expect_slice=expect_slice)
    raise ValueError(f"{p}: neither a DICOM file (no DICM preamble) nor NIfTI (.nii/.nii.gz)")


def take_slice(volume: np.ndarray, index: int, axis: int = -1) -> np.ndarray:
    """Slice ``index`` of a 3-D volume along ``axis`` (one line for an index out of range)."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"take_slice expects a 3-D volume, got shape {vol.shape}")
    n = vol.shape[axis]
    if not -n <= index < n:
        raise ValueError(f"slice {index} out of range for {n} slices along axis {axis}")
    return np.take(vol, index, axis=axis)


def window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear display windowing to [0, 1]: ``(x - (c - w/2)) / w`` clipped (DICOM PS3.3
    C.11.2.1.2 without the half-pixel offsets)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return np.clip((np.asarray(pixels, dtype=np.float64) - (center - width / 2)) / width, 0, 1)
