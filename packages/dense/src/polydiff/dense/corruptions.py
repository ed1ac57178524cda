"""Image corruptions for robustness tests, after Hendrycks & Dietterich (2019),
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ImageNet-C;
DiffMatch's robustness study uses the same families): additive Gaussian noise, Gaussian
blur, JPEG compression and contrast reduction, each at severities 1-5.

All take and return float32 images in [0, 1] (grey ``(H, W)`` or RGB ``(H, W, 3)``) and draw
randomness from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["CORRUPTIONS", "corrupt", "gaussian_noise", "gaussian_blur", "jpeg", "contrast"]

#: severity 1..5 -> parameter (ImageNet-C's values where they exist).
_NOISE = (0.04, 0.06, 0.08, 0.10, 0.14)
_BLUR = (0.7, 1.0, 1.5, 2.0, 3.0)
_JPEG = (25, 18, 15, 10, 7)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)


def _level(table: tuple[float, ...], severity: int) -> float:
    if not 1 <= int(severity) <= len(table):
        raise ValueError(f"severity must be 1..{len(table)}, got {severity}")
    return float(table[int(severity) - 1])


def gaussian_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise (std 0.04..0.14) and clip."""
    s = _level(_NOISE, severity)
    return np.clip(img + rng.normal(0.0, s, img.shape), 0, 1).astype(np.float32)


def gaussian_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation 0.7..3 pixels (scipy/scikit-image filter)."""
    from skimage.filters import gaussian

    s = _level(_BLUR, severity)
    axis = -1 if img.ndim == 3 else None
    return np.clip(gaussian(img, sigma=s, channel_axis=axis, preserve_range=True), 0,
                   1).astype(np.float32)


def jpeg(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A JPEG round trip at quality 25..7 (Pillow)."""
    from PIL import Image

    q = int(_level(_JPEG, severity))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as im:
        return (np.asarray(im, np.float32) / 255.0).reshape(img.shape)


def contrast(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Shrink towards the mean intensity by the factor 0.4..0.05."""
    c = _level(_CONTRAST, severity)
    mean = img.mean(axis=(0, 1), keepdims=True)
    return np.clip((img - mean) * c + mean, 0, 1).astype(np.float32)


CORRUPTIONS = {"noise": gaussian_noise, "blur": gaussian_blur, "jpeg": jpeg,
               "contrast": contrast}


def corrupt(img: np.ndarray, kind: str, severity: int = 3,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply corruption ``kind`` (a key of :data:`CORRUPTIONS`, or ``"clean"``: the image
    itself, as float32, not a copy)."""
    if kind == "clean":
        return np.asarray(img, np.float32)
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected clean or one of "
                         f"{sorted(CORRUPTIONS)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    return CORRUPTIONS[kind](np.asarray(img, np.float32), severity, rng)
