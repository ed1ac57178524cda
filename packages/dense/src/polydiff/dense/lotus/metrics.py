"""Metrics of monocular depth and surface-normal estimation.

Depth (affine-invariant disparity, as predicted by relative-depth models, Ranftl et al. 2020,
MiDaS): the prediction is aligned to the true disparity ``1 / depth`` by least-squares scale
and shift over the valid pixels (:func:`align_scale_shift`), turned back into depth, and
scored by

* AbsRel ``= mean |d_hat - d| / d`` (lower is better);
* delta1 ``=`` fraction of pixels with ``max(d_hat / d, d / d_hat) < 1.25`` (higher is better).

Normals: the angle between the predicted and the true unit normal per pixel, in degrees; the
mean and the median, and the fractions of pixels within 11.25, 22.5 and 30 degrees (Fouhey
et al. 2013; the usual protocol of NYUv2 normals).
"""

from __future__ import annotations

import numpy as np

__all__ = ["align_scale_shift", "depth_metrics", "normal_metrics", "angular_error"]


def align_scale_shift(pred: np.ndarray, target: np.ndarray,
                      mask: np.ndarray | None = None) -> tuple[float, float]:
    """``(s, b)`` minimising ``sum (s * pred + b - target)^2`` over ``mask``."""
    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    m = np.isfinite(p) & np.isfinite(t) if mask is None else (np.asarray(mask, bool)
                                                             & np.isfinite(p) & np.isfinite(t))
    if m.sum() < 2:
        raise ValueError("scale-and-shift alignment needs at least two valid pixels")
    a = np.stack([p[m], np.ones(int(m.sum()))], 1)
    (s, b), *_ = np.linalg.lstsq(a, t[m], rcond=None)
    return float(s), float(b)


def depth_metrics(pred_disparity: np.ndarray, depth: np.ndarray,
                  mask: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel and delta1 of an affine-invariant disparity ``pred_disparity`` against the true
    ``depth`` (> 0) over ``mask`` (default: every finite, positive depth), after aligning the
    prediction to ``1 / depth`` by scale and shift. The aligned disparity is clamped below at
    the smallest true disparity's half before inversion (a non-positive disparity has no
    depth)."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    disp = np.where(valid, 1.0 / np.where(valid, depth, 1.0), np.nan)
    s, b = align_scale_shift(pred_disparity, disp, valid)
    aligned = s * np.asarray(pred_disparity, np.float64) + b
    floor = 0.5 * float(np.nanmin(disp[valid]))
    est = 1.0 / np.maximum(aligned[valid], floor)
    true = depth[valid]
    ratio = np.maximum(est / true, true / est)
    return {"absrel": float(np.mean(np.abs(est - true) / true)),
            "delta1": float(np.mean(ratio < 1.25))}


def angular_error(pred: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between ``pred`` and ``normal`` (``(3, ...)`` each;
    ``pred`` need not be unit length)."""
    p = np.asarray(pred, np.float64)
    n = np.asarray(normal, np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=0, keepdims=True), 1e-12)
    n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-12)
    cos = np.clip((p * n).sum(0), -1.0, 1.0)
    out: np.ndarray = np.degrees(np.arccos(cos))
    return out


def normal_metrics(pred: np.ndarray, normal: np.ndarray,
                   mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean and median angular error (degrees) and the fractions within 11.25, 22.5, 30."""
    err = angular_error(pred, normal)
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    err = err[np.isfinite(err)]
    if err.size == 0:
        raise ValueError("no valid pixel to score")
    return {"mean": float(err.mean()), "median": float(np.median(err)),
            "a11": float(np.mean(err < 11.25)), "a22": float(np.mean(err < 22.5)),
            "a30": float(np.mean(err < 30.0))}
