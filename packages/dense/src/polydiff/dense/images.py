"""Image input and output shared by the dense-prediction systems (matching, depth, normals).

Images are handled as float32 arrays in ``[0, 1]``: ``(H, W)`` luminance or ``(H, W, 3)``
RGB. :func:`read_image` accepts any file Pillow opens (8- and 16-bit grey, palette, RGBA, ...)
and turns a file that is not an image into one :class:`ImageError` line; :func:`write_png`
writes atomically (a temporary name, then a rename), so a failed run never leaves half a file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.core.utils import atomic_write

__all__ = ["ImageError", "read_image", "to_gray", "to_rgb", "resize_image", "write_png",
           "encode_png", "same_size"]


class ImageError(ValueError):
    """A file that is not a readable image (one line, meant for the user)."""


def read_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as float32 in ``[0, 1]``: ``(H, W)`` for grey images, ``(H, W, 3)`` for
    colour ones (alpha is dropped, palette images are expanded)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                top = 65535.0 if arr.max() > 255 else 255.0
                return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
            if mode == "F":
                arr = np.asarray(im, dtype=np.float32)
                span = float(arr.max() - arr.min()) or 1.0
                return ((arr - arr.min()) / span).astype(np.float32)
            if mode in ("1", "L"):
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            if mode == "LA":
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__})") from None


def to_gray(img: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601 weights) of an RGB image; grey images pass through."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] >= 3:
        return (img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0]
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")


def to_rgb(img: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` copy: grey images are repeated over the three channels."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return img[..., :3].copy()


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``(height, width)`` with anti-aliasing (scikit-image), float32 in [0, 1]."""
    from skimage.transform import resize

    img = np.asarray(img, dtype=np.float32)
    if img.shape[:2] == (height, width):
        return img.copy()
    out = resize(img, (height, width) + img.shape[2:], order=1, anti_aliasing=True,
                 preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def same_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``b`` resized to ``a``'s size when they differ, with a note saying so (else ``None``)."""
    if a.shape[:2] == b.shape[:2]:
        return b, None
    note = (f"the second image ({b.shape[1]}x{b.shape[0]}) was resized to the first one's "
            f"size ({a.shape[1]}x{a.shape[0]})")
    return resize_image(b, a.shape[0], a.shape[1]), note


def _uint8(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.round(np.asarray(arr, np.float64) * 255.0), 0, 255).astype(np.uint8)


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a float image in ``[0, 1]`` (or uint8), grey or RGB."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | Path, img: np.ndarray, **_: Any) -> Path:
    """Write ``img`` (float in ``[0, 1]`` or uint8; grey or RGB) as a PNG, atomically."""
    return atomic_write(Path(path), encode_png(img))
