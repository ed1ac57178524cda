"""Offline real images for dense prediction, and loaders for the standard flow-corpus layouts.

* The photographs bundled with scikit-image (no network), split **by source photograph**
  into training, validation and test sets (:data:`PHOTO_SPLITS`), so no test pair shares
  content with a training pair.
* The Middlebury 2014 *motorcycle* stereo pair with its ground-truth disparity
  (``skimage.data.stereo_motorcycle``, Scharstein et al. 2014, quarter resolution): a real
  matching test (:func:`motorcycle_pair`) whose flow from the left to the right view is
  ``(-d, 0)``.
* :func:`load_flow_folder`: image pairs with ``.flo`` ground truth laid out as the MPI
  Sintel training set (``<root>/<pass>/<scene>/frame_NNNN.png`` with
  ``<root>/flow/<scene>/frame_NNNN.flo``) or the Middlebury flow set
  (``<root>/other-data/<scene>/frame10.png``, ``frame11.png`` and
  ``<root>/other-gt-flow/<scene>/flow10.flo``), read from a folder the user downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polydiff.dense.flow import read_flo
from polydiff.dense.images import read_image, resize_image, to_gray

__all__ = ["PHOTO_SPLITS", "load_photo", "photo_tensors", "motorcycle_pair", "FlowPair",
           "load_flow_folder", "motorcycle_depth", "MOTORCYCLE_CALIBRATION"]

#: scikit-image's bundled photographs by split (natural photographs held out for testing;
#: ``astronaut`` for validation; textures, micrographs, documents and the rest for training).
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("brick", "camera", "cell", "coins", "grass", "gravel", "hubble_deep_field",
              "immunohistochemistry", "moon", "page", "retina", "text", "clock"),
    "val": ("astronaut",),
    "test": ("chelsea", "coffee", "rocket"),
}


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as float32 luminance in [0, 1]."""
    import skimage.data

    names = {n for split in PHOTO_SPLITS.values() for n in split}
    if name not in names:
        raise ValueError(f"unknown photograph {name!r}; expected one of {sorted(names)}")
    img = np.asarray(getattr(skimage.data, name)())
    arr = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    return to_gray(arr)


@functools.lru_cache(maxsize=8)
def _photos(split: str, short_side: int) -> tuple[torch.Tensor, ...]:
    out = []
    for name in PHOTO_SPLITS[split]:
        img = load_photo(name)
        h, w = img.shape
        f = short_side / min(h, w)
        if f < 1.0:
            img = resize_image(img, max(2, round(h * f)), max(2, round(w * f)))
        out.append(torch.from_numpy(img)[None].contiguous())
    return tuple(out)


def photo_tensors(split: str, short_side: int = 256) -> list[torch.Tensor]:
    """The photographs of ``split`` as ``(1, H, W)`` float32 tensors, downscaled (with
    anti-aliasing) so their shorter side is at most ``short_side``."""
    if split not in PHOTO_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(PHOTO_SPLITS)}")
    return list(_photos(split, int(short_side)))


@dataclass
class FlowPair:
    """Two images (float32 in [0, 1], ``(H, W)`` or ``(H, W, 3)``) and the flow from the
    first to the second (``(2, H, W)`` pixels; NaN where there is no ground truth)."""

    a: np.ndarray
    b: np.ndarray
    flow: np.ndarray
    name: str = ""


def motorcycle_pair() -> FlowPair:
    """The Middlebury motorcycle pair (left view = A, right view = B; RGB) with the flow
    ``(-disparity, 0)`` from left to right, NaN where the disparity is unknown."""
    import skimage.data

    left, right, disp = skimage.data.stereo_motorcycle()
    d = np.asarray(disp, np.float32)
    d = np.where(np.isfinite(d), d, np.nan).astype(np.float32)
    flow = np.stack([-d, np.where(np.isfinite(d), 0.0, np.nan).astype(np.float32)])
    return FlowPair(left.astype(np.float32) / 255.0, right.astype(np.float32) / 255.0, flow,
                    "middlebury-motorcycle")


#: Calibration of the quarter-resolution motorcycle pair (``skimage.data.stereo_motorcycle``'s
#: docstring): focal length and the principal points' offset ``doffs`` in pixels, baseline
#: in millimetres.
MOTORCYCLE_CALIBRATION: dict[str, float] = {"focal": 994.978, "doffs": 31.086,
                                            "baseline": 193.001}


def motorcycle_depth() -> tuple[np.ndarray, np.ndarray]:
    """The left motorcycle view (RGB float32 in [0, 1], ``(500, 741, 3)``) and its metric
    depth in millimetres, ``baseline * focal / (disparity + doffs)`` (Scharstein et al.
    2014's conversion), NaN where the disparity is unknown."""
    pair = motorcycle_pair()
    c = MOTORCYCLE_CALIBRATION
    disp = -pair.flow[0]
    with np.errstate(invalid="ignore"):
        depth = c["baseline"] * c["focal"] / (disp + c["doffs"])
    return pair.a, depth.astype(np.float32)


def _sintel_pairs(root: Path, pass_name: str) -> list[tuple[Path, Path, Path, str]]:
    out = []
    for scene in sorted(p for p in (root / pass_name).iterdir() if p.is_dir()):
        frames = sorted(scene.glob("frame_*.png"))
        for f0, f1 in zip(frames, frames[1:]):
            flo = root / "flow" / scene.name / (f0.stem + ".flo")
            if flo.is_file():
                out.append((f0, f1, flo, f"{scene.name}/{f0.stem}"))
    return out


def _middlebury_pairs(root: Path) -> list[tuple[Path, Path, Path, str]]:
    out = []
    for scene in sorted(p for p in (root / "other-data").iterdir() if p.is_dir()):
        f0, f1 = scene / "frame10.png", scene / "frame11.png"
        flo = root / "other-gt-flow" / scene.name / "flow10.flo"
        if f0.is_file() and f1.is_file() and flo.is_file():
            out.append((f0, f1, flo, scene.name))
    return out


#: Middlebury's marker for an unknown flow vector (components above 1e9).
UNKNOWN_FLOW = 1e9


def load_flow_folder(root: str | Path, pass_name: str = "clean") -> list[FlowPair]:
    """Every image pair with a ground-truth ``.flo`` under ``root`` (layouts in the module
    docstring; Sintel's ``pass_name`` is ``clean`` or ``final``). Unknown vectors (Middlebury
    stores components > 1e9) become NaN."""
    root = Path(root)
    if (root / "other-data").is_dir():
        found = _middlebury_pairs(root)
    elif (root / pass_name).is_dir() and (root / "flow").is_dir():
        found = _sintel_pairs(root, pass_name)
    else:
        raise ValueError(f"{root}: neither a Sintel layout ({pass_name}/ and flow/) nor a "
                         "Middlebury flow layout (other-data/ and other-gt-flow/)")
    if not found:
        raise ValueError(f"{root}: no image pair with a ground-truth .flo file")
    pairs = []
    for f0, f1, flo, name in found:
        flow = read_flo(flo)
        flow = np.where(np.abs(flow) > UNKNOWN_FLOW, np.nan, flow).astype(np.float32)
        pairs.append(FlowPair(read_image(f0), read_image(f1), flow, name))
    return pairs
