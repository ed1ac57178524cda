"""Dense flow fields: the Middlebury ``.flo`` format, colour coding, warping, resizing and the
matching metrics.

Convention. A flow ``(2, H, W)`` (or ``(B, 2, H, W)``) from image A to image B holds, at pixel
``(x, y)`` of A, the displacement ``(u, v)`` in pixels such that ``A(x, y)`` matches
``B(x + u, y + v)`` (OpenCV's ``calcOpticalFlow*(prev=A, next=B)`` and the Middlebury
benchmark use the same). :func:`warp` samples B at ``x + flow`` (backward warping), which
reproduces A where the flow is right.

Metrics (:func:`flow_metrics`): the average end-point error ``AEPE = mean |f - f_gt|_2`` and
``PCK-k``, the fraction of pixels whose end-point error is at most ``k`` pixels, over the
pixels where the ground truth is valid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.utils import atomic_write

__all__ = ["FLO_MAGIC", "write_flo", "read_flo", "flow_to_color", "warp", "warp_image",
           "resize_flow", "pixel_grid", "flow_metrics", "endpoint_error", "FlowError"]

#: The float ``202021.25`` at the start of every ``.flo`` file (bytes ``PIEH``).
FLO_MAGIC = 202021.25


class FlowError(ValueError):
    """A file that is not a Middlebury ``.flo`` flow (one line, meant for the user)."""


# --------------------------------------------------------------------------- .flo
def write_flo(path: str | Path, flow: np.ndarray) -> Path:
    """Write ``flow`` (``(2, H, W)`` or ``(H, W, 2)``, pixels) as a Middlebury ``.flo`` file:
    the magic float, int32 width and height, then float32 ``(u, v)`` pairs row by row (little
    endian). Atomic."""
    f = np.asarray(flow, dtype=np.float32)
    if f.ndim == 3 and f.shape[0] == 2 and f.shape[2] != 2:
        f = f.transpose(1, 2, 0)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"expected a (2, H, W) or (H, W, 2) flow, got shape {f.shape}")
    h, w = f.shape[:2]
    head = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes()
    return atomic_write(Path(path), head + np.ascontiguousarray(f, "<f4").tobytes())


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file as a ``(2, H, W)`` float32 array."""
    path = Path(path)
    if not path.is_file():
        raise FlowError(f"{path}: no such file")
    data = path.read_bytes()
    if len(data) < 12 or not math.isclose(float(np.frombuffer(data[:4], "<f4")[0]), FLO_MAGIC):
        raise FlowError(f"{path}: not a Middlebury .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise FlowError(f"{path}: truncated or malformed .flo file ({w}x{h} declared, "
                        f"{len(data)} bytes)")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).transpose(2, 0, 1).copy()


# --------------------------------------------------------------------------- colour coding
def _color_wheel() -> np.ndarray:
    """The 55-colour hue wheel of Baker et al. (2011), "A Database and Evaluation Methodology
    for Optical Flow" (segments red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
    blue-magenta 13, magenta-red 6), as ``(55, 3)`` floats in [0, 1]."""
    segments = [(15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)),
                (4, (0, 1, 0), (0, 1, 1)), (11, (0, 1, 1), (0, 0, 1)),
                (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0))]
    rows = []
    for n, a, b in segments:
        s = np.arange(n)[:, None] / n
        rows.append((1 - s) * np.array(a, float) + s * np.array(b, float))
    return np.concatenate(rows)


def flow_to_color(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Colour-code a ``(2, H, W)`` flow the Middlebury way: hue = direction, saturation =
    magnitude relative to ``max_norm`` (default: the largest finite magnitude), white = no
    motion. Non-finite vectors are black. Returns ``(H, W, 3)`` float32 in [0, 1]."""
    f = np.asarray(flow, np.float64)
    u, v = f[0], f[1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0.0, u), np.where(bad, 0.0, v)
    mag = np.hypot(u, v)
    top = float(max_norm) if max_norm else float(mag.max())
    top = top if top > 0 else 1.0
    wheel = _color_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi                      # in [-1, 1]
    pos = (angle + 1.0) / 2.0 * (n - 1)
    k0 = np.floor(pos).astype(int)
    k1 = (k0 + 1) % n
    frac = (pos - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]
    rad = np.clip(mag / top, 0.0, 1.0)[..., None]
    col = 1.0 - rad * (1.0 - col)                           # towards white at small motion
    col[bad] = 0.0
    return col.astype(np.float32)


# --------------------------------------------------------------------------- warping
def pixel_grid(height: int, width: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """``(2, H, W)`` pixel coordinates ``(x, y)``."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])


def warp(img: Tensor, flow: Tensor, *, padding_mode: str = "border") -> Tensor:
    """Backward warp: ``out(x) = img(x + flow(x))`` by bilinear sampling. ``img`` ``(B, C, h,
    w)``, ``flow`` ``(B, 2, H, W)`` in pixels of ``img``; returns ``(B, C, H, W)``."""
    b, _, h, w = img.shape
    coords = pixel_grid(flow.shape[-2], flow.shape[-1], flow.device, flow.dtype) + flow
    gx = 2.0 * coords[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(img.dtype)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)


def warp_image(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Warp image B (``(H, W)`` or ``(H, W, 3)``) by a flow from A to B (``(2, H, W)``):
    the result is B seen from A's viewpoint (``B(x + flow(x))``)."""
    arr = np.asarray(img, np.float32)
    t = torch.from_numpy(arr if arr.ndim == 3 else arr[..., None]).permute(2, 0, 1)[None]
    out = warp(t, torch.from_numpy(np.asarray(flow, np.float32))[None])
    res = out[0].permute(1, 2, 0).numpy()
    return res if arr.ndim == 3 else res[..., 0]


def resize_flow(flow: Tensor, height: int, width: int) -> Tensor:
    """Resize a ``(B, 2, h, w)`` flow to ``(height, width)`` (bilinear, corners aligned) and
    rescale its vectors to the new pixel size."""
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    out = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=True)
    sx = (width - 1) / max(w - 1, 1)
    sy = (height - 1) / max(h - 1, 1)
    return torch.stack([out[:, 0] * sx, out[:, 1] * sy], dim=1)


# --------------------------------------------------------------------------- metrics
def endpoint_error(flow: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> np.ndarray:
    """Per-pixel end-point error ``|flow - gt|_2`` (``(..., H, W)``), as float64 numpy."""
    f = np.asarray(flow, np.float64)
    g = np.asarray(gt, np.float64)
    return np.sqrt(((f - g) ** 2).sum(axis=-3))


def flow_metrics(flow: Tensor | np.ndarray, gt: Tensor | np.ndarray,
                 valid: Tensor | np.ndarray | None = None,
                 thresholds: tuple[float, ...] = (1.0, 3.0, 5.0)) -> dict[str, float]:
    """``{"aepe", "pck1", "pck3", "pck5"}`` over the ``valid`` pixels (all finite ground-truth
    pixels when ``valid`` is ``None``). Flows ``(2, H, W)`` or ``(B, 2, H, W)``."""
    g = np.asarray(gt, np.float64)
    epe = endpoint_error(flow, g)
    ok = np.isfinite(g).all(axis=-3)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    e = epe[ok]
    if e.size == 0:
        raise ValueError("no valid ground-truth pixel to score")
    out = {"aepe": float(e.mean())}
    for k in thresholds:
        out[f"pck{k:g}"] = float((e <= k).mean())
    return out
