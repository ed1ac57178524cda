"""Offline real data: MNI152 template slices (training, validation, held-out test), the real
CT and MR slices bundled with pydicom, augmentations, and a fastMRI single-coil loader.

Template. nilearn ships the MNI ICBM152 2009a nonlinear symmetric T1 template (1 mm,
197 x 233 x 189, skull-stripped; an average of 152 subjects, smoother than one scan). It is
read with nibabel from nilearn's package folder, without importing nilearn. Axial slices are
cropped to a 200 mm square around the brain, resized to ``size x size`` (area averaging) and
scaled to [0, 1] by the 99.5th percentile of brain voxels.

Splits (axial slice index ``z``, 1 mm apart): test slabs ``z in [56, 64)`` and ``[96, 104)``
(slices 56, 58, ..., 102), a validation slab ``[124, 132)``; every slice within
:data:`MARGIN` mm of a test or validation slab is excluded from training, the rest of
``z in [8, 150]`` is training data. Hyper-parameters are tuned on the validation slices only.

Real slices (never trained on, never tuned on): ``CT_small.dcm`` (a 128 x 128 spine CT) and the
two 512 x 512 head CTs of pydicom's test files (JPEG 2000; skipped when the decoder is missing);
``MR_small.dcm`` (a 64 x 64 MR slice) and ``examples_overlay.dcm`` (an abdominal MR). Each is
rescaled (slope/intercept), cropped to a centred square, resized and scaled to [0, 1] between
its 0.5th and 99.5th percentiles. Measurements are simulated from these images: magnitude-only,
single-coil, not comparable with fastMRI numbers.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MARGIN", "TEST_SLICES", "VAL_SLICES", "TEMPLATE_FILE", "template_path",
           "load_template", "template_slices", "split_indices", "resize_square", "to_unit",
           "unit_range",
           "augment", "AugmentConfig", "real_slices", "REAL_FILES", "FastMRISingleCoil"]

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEST_SLICES: tuple[int, ...] = (56, 58, 60, 62, 96, 98, 100, 102)
VAL_SLICES: tuple[int, ...] = (124, 126, 128, 130)
MARGIN = 5
Z_RANGE = (8, 150)
CROP_MM = 200

#: pydicom test files used as real held-out slices, by modality.
REAL_FILES: dict[str, tuple[str, ...]] = {
    "ct": ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"),
    "mr": ("MR_small.dcm", "examples_overlay.dcm"),
}


def template_path() -> Path:
    """The template file inside the installed nilearn (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MNI152 template comes with nilearn: pip install nilearn "
                                "(or polydiff-medical[data])")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nilearn is installed but has no {TEMPLATE_FILE}")
    return path


_TEMPLATE: np.ndarray | None = None


def load_template() -> np.ndarray:
    """The template volume ``(197, 233, 189)`` (x: left-right, y: posterior-anterior,
    z: inferior-superior), float32, cached in memory."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import nibabel as nib
        from nibabel.dataobj_images import DataobjImage

        img = nib.load(str(template_path()))
        assert isinstance(img, DataobjImage)  # a NIfTI file (nib.load's type is broader)
        _TEMPLATE = np.asarray(img.dataobj, dtype=np.float32)
    return _TEMPLATE


def resize_square(img: Tensor, size: int) -> Tensor:
    """Centre-crop (or zero-pad) the last two dimensions to a square, then resize to
    ``size x size`` by area averaging (bilinear when enlarging)."""
    h, w = img.shape[-2:]
    s = max(h, w)
    ph, pw = s - h, s - w
    img = F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    x = img.reshape(-1, 1, s, s).float()
    mode = "area" if s >= size else "bilinear"
    out = F.interpolate(x, size=(size, size), mode=mode,
                        **({} if mode == "area" else {"align_corners": False}))
    return out.reshape(*img.shape[:-2], size, size)


def unit_range(img: Tensor, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """The ``lo`` and ``hi`` percentiles of ``img`` (the range :func:`to_unit` maps to
    [0, 1]); one line for a constant image."""
    flat = img.flatten().double()
    a, b = float(torch.quantile(flat, lo / 100)), float(torch.quantile(flat, hi / 100))
    if not b > a:
        raise ValueError("the image is constant: nothing to reconstruct")
    return a, b


def to_unit(img: Tensor, lo: float = 0.5, hi: float = 99.5) -> Tensor:
    """Scale to [0, 1] between the ``lo`` and ``hi`` percentiles (clipped)."""
    a, b = unit_range(img, lo, hi)
    return ((img - a) / (b - a)).clamp(0, 1).float()


def template_slices(indices: Sequence[int], size: int = 64) -> Tensor:
    """Axial template slices ``z`` in ``indices`` as ``(n, 1, size, size)`` in [0, 1],
    displayed with anterior up and the subject's left on the image right (radiological)."""
    vol = load_template()
    brain = vol > 10
    xs, ys = np.nonzero(brain.any(axis=2))
    cx, cy = (xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2
    scale = float(np.percentile(vol[brain], 99.5))
    half = CROP_MM // 2
    out = []
    for z in indices:
        if not 0 <= z < vol.shape[2]:
            raise ValueError(f"axial slice {z} outside the template (0..{vol.shape[2] - 1})")
        sl = np.zeros((CROP_MM, CROP_MM), dtype=np.float32)
        x0, y0 = cx - half, cy - half
        xa, xb = max(x0, 0), min(x0 + CROP_MM, vol.shape[0])
        ya, yb = max(y0, 0), min(y0 + CROP_MM, vol.shape[1])
        sl[xa - x0:xb - x0, ya - y0:yb - y0] = vol[xa:xb, ya:yb, z]
        img = np.flipud(sl.T).copy()  # rows: anterior at the top; columns: x
        out.append(torch.from_numpy(img))
    t = torch.stack(out)[:, None] / scale
    return resize_square(t, size).clamp(0, 1)


def split_indices(split: str) -> tuple[int, ...]:
    """Axial slice indices of ``"train"``, ``"val"`` or ``"test"`` (module docstring)."""
    if split == "test":
        return TEST_SLICES
    if split == "val":
        return VAL_SLICES
    if split != "train":
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    held = TEST_SLICES + VAL_SLICES
    return tuple(z for z in range(Z_RANGE[0], Z_RANGE[1] + 1)
                 if all(abs(z - h) > MARGIN for h in held))


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations of training slices (all on by default).

    Attributes:
        flip: left-right flips with probability 1/2.
        rotate_deg: rotations uniform in ``[-rotate_deg, rotate_deg]``.
        scale: zoom uniform in ``[scale[0], scale[1]]`` (> 1 enlarges).
        shift: translations uniform in ``[-shift, shift]`` of the half-width.
        gamma: intensity ``x ** g`` with ``log g`` uniform in ``[-log gamma, log gamma]``.
        contrast: intensity multiplied by a factor uniform in ``[1 - contrast, 1]``.
    """

    flip: bool = True
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.25)
    shift: float = 0.08
    gamma: float = 1.5
    contrast: float = 0.2


def augment(x: Tensor, generator: torch.Generator | None = None,
            cfg: AugmentConfig = AugmentConfig()) -> Tensor:
    """Augment a batch ``(B, 1, H, W)`` in [0, 1] (a pure function of ``generator``'s state):
    one random affine warp per image (flip, rotation, zoom, shift; bilinear, zero outside)
    and a random gamma and contrast."""
    b = x.shape[0]
    dev, dt = x.device, x.dtype

    def u(lo: float, hi: float) -> Tensor:
        r = torch.rand(b, generator=generator, device=generator.device if generator else None)
        return (lo + (hi - lo) * r.double()).to(device=dev, dtype=dt)

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    zoom = u(cfg.scale[0], cfg.scale[1])
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0).to(dt) if cfg.flip else torch.ones_like(ang)
    tx, ty = u(-cfg.shift, cfg.shift), u(-cfg.shift, cfg.shift)
    c, s = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([c * flip, -s, tx], -1),
                         torch.stack([s * flip, c, ty], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lg = math.log(cfg.gamma)
    g = torch.exp(u(-lg, lg))
    out = out.clamp(0, 1) ** g.reshape(b, 1, 1, 1)
    return out * u(1 - cfg.contrast, 1.0).reshape(b, 1, 1, 1)


def real_slices(modality: str, size: int = 64) -> tuple[Tensor, list[str]]:
    """The real held-out slices of ``modality`` (``"ct"`` or ``"mr"``) bundled with pydicom,
    as ``(n, 1, size, size)`` in [0, 1], with their file names (module docstring). Files
    whose pixel data cannot be decoded here (JPEG 2000 without a decoder) are skipped."""
    from pydicom.data import get_testdata_file

    from polydiff.medical.io import read_dicom

    if modality not in REAL_FILES:
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    imgs, names = [], []
    for name in REAL_FILES[modality]:
        path = get_testdata_file(name)
        if path is None:
            continue
        try:
            img = read_dicom(path).pixels
        except (ValueError, RuntimeError):
            continue
        imgs.append(to_unit(resize_square(torch.as_tensor(img)[None], size))[0])
        names.append(name)
    if not imgs:
        raise FileNotFoundError(f"no real {modality} slice could be read from pydicom's files")
    return torch.stack(imgs)[:, None], names


class FastMRISingleCoil:
    """Reader of the fastMRI single-coil files (Zbontar et al. 2018): one HDF5 file per
    volume with ``kspace`` ``(slices, H, W)`` complex64 (centred k-space, readout along H,
    phase encoding along W) and ``reconstruction_esc`` ``(slices, 320, 320)`` (the magnitude
    reference, absent in test files), in a folder such as ``singlecoil_val/``.

    ``FastMRISingleCoil(folder)[i]`` returns ``(kspace, target, (file name, slice))`` for the
    ``i``-th slice over all files (sorted by name); ``target`` is ``None`` without a reference.
    Needs ``h5py`` (``polydiff-medical[fastmri]``).
    """

    def __init__(self, folder: str | Path):
        try:
            import h5py
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("reading fastMRI files needs h5py: pip install "
                              "polydiff-medical[fastmri]") from err
        self._h5py = h5py
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no fastMRI folder at {self.folder}")
        self.files = sorted(self.folder.glob("*.h5"))
        if not self.files:
            raise FileNotFoundError(f"{self.folder} holds no .h5 files")
        self.index: list[tuple[Path, int]] = []
        for f in self.files:
            with h5py.File(f, "r") as h:
                if "kspace" not in h:
                    raise ValueError(f"{f.name}: no 'kspace' dataset (not a fastMRI file)")
                ks = h["kspace"]
                if ks.ndim != 3:
                    raise ValueError(f"{f.name}: kspace has shape {ks.shape}; single-coil "
                                     "files hold (slices, H, W) (multi-coil is not supported)")
                self.index += [(f, i) for i in range(ks.shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor | None, tuple[str, int]]:
        path, s = self.index[i]
        with self._h5py.File(path, "r") as h:
            k = torch.from_numpy(np.asarray(h["kspace"][s]))
            ref = h.get("reconstruction_esc")
            target = torch.from_numpy(np.asarray(ref[s])) if ref is not None else None
        return k, target, (path.name, s)

    @staticmethod
    def image(kspace: Tensor, crop: int | None = 320) -> Tensor:
        """The magnitude image of a centred k-space slice (orthonormal inverse DFT),
        centre-cropped to ``crop x crop`` as fastMRI's references are."""
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)),
                                                 norm="ortho"), dim=(-2, -1)).abs()
        if crop is None:
            return img
        h, w = img.shape[-2:]
        ch, cw = min(crop, h), min(crop, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        return img[..., top:top + ch, left:left + cw]
