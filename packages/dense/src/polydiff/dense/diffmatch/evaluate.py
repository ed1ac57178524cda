"""Scoring DiffMatch and its baselines on held-out data, clean and corrupted.

Test sets:

* :func:`heldout_pairs`: warped pairs (homography, affine, thin-plate spline) of the *test*
  photographs (never seen in training), from a fixed seed, no photometric jitter;
* :func:`middlebury_pairs`: the real Middlebury motorcycle stereo pair (grey), flow
  ``(-disparity, 0)``, scored where the disparity is known.

Methods (:func:`methods`): ``diffmatch`` (the full pipeline), ``diffmatch_coarse`` (before
the x2 super-resolution), ``regressor`` (the same network trained as a direct regressor),
``argmax`` (the cost-volume argmax with sub-cell refinement, i.e. DiffMatch's ``F_init``),
``argmax_daisy`` (the same on DAISY descriptors), and OpenCV's ``dis`` (DIS optical flow,
Kroeger et al. 2016, medium preset) and ``farneback`` (Farneback 2003) when OpenCV is
installed. Learned methods run at the pipeline's working size and their flows are resized
to the input; OpenCV's run at the input size. Metrics: AEPE and PCK-1/3/5 (pixels of the
input) per pair, averaged over pairs, plus seconds per pair (``diffmatch_coarse`` comes out
of the same run as ``diffmatch``: its seconds are those of reading the stored result).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from polydiff.dense.corruptions import corrupt
from polydiff.dense.data import motorcycle_pair, photo_tensors
from polydiff.dense.diffmatch.features import argmax_flow, daisy_features, global_cost
from polydiff.dense.diffmatch.model import DiffMatch
from polydiff.dense.flow import flow_metrics, resize_flow
from polydiff.dense.images import resize_image, to_gray
from polydiff.dense.warps import make_pairs

__all__ = ["EvalPair", "heldout_pairs", "middlebury_pairs", "opencv_flow", "methods",
           "score_method", "score_methods", "evaluate", "METRICS"]

METRICS: tuple[str, ...] = ("aepe", "pck1", "pck3", "pck5")
MethodFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EvalPair:
    """A grey pair (float32 ``(H, W)`` in [0, 1]), its flow (``(2, H, W)`` pixels) and where
    the ground truth is valid."""

    a: np.ndarray
    b: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    name: str


def heldout_pairs(n: int, *, split: str = "test", seed: int = 1234,
                  size: int = 128) -> list[EvalPair]:
    """``n`` warped pairs of the ``split`` photographs (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    pb = make_pairs(photo_tensors(split), gen, n, size)
    return [EvalPair(pb.a[i, 0].numpy(), pb.b[i, 0].numpy(), pb.flow[i].numpy(),
                     pb.valid[i].numpy(), f"{split}-{i}-{pb.kinds[i]}") for i in range(n)]


def middlebury_pairs() -> list[EvalPair]:
    """The Middlebury motorcycle pair (grey, 500x741) with its flow and valid mask."""
    p = motorcycle_pair()
    valid = np.isfinite(p.flow).all(0)
    return [EvalPair(to_gray(p.a), to_gray(p.b), np.nan_to_num(p.flow), valid, p.name)]


def opencv_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """OpenCV's dense optical flow from grey ``a`` to ``b`` (``(2, H, W)`` pixels):
    ``"dis"`` (DIS, medium preset) or ``"farneback"``."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the extra
        from polydiff.core.utils import MissingDependencyError

        raise MissingDependencyError("OpenCV baselines need opencv-python-headless "
                                     "(pip install 'polydiff-dense[baselines]')") from exc
    u8a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    u8b = np.clip(np.round(b * 255), 0, 255).astype(np.uint8)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        f = dis.calc(u8a, u8b, None)
    elif method == "farneback":
        f = cv2.calcOpticalFlowFarneback(u8a, u8b, None, 0.5, 5, 15, 3, 5, 1.2, 0)
    else:
        raise ValueError(f"unknown OpenCV method {method!r}")
    return np.ascontiguousarray(f.transpose(2, 0, 1)).astype(np.float32)


def _daisy_argmax(a: np.ndarray, b: np.ndarray, max_side: int) -> np.ndarray:
    from polydiff.dense.diffmatch.model import working_size

    h, w = working_size(a.shape[0], a.shape[1], max_side)
    da = daisy_features(resize_image(a, h, w))
    db = daisy_features(resize_image(b, h, w))
    init = resize_flow(argmax_flow(global_cost(da, db)), a.shape[0], a.shape[1])
    return init[0].numpy()


def methods(pipe: DiffMatch | None, *, opencv: bool = True, seed: int = 0,
            hypotheses: int | None = None) -> dict[str, MethodFn]:
    """The methods to score (module docstring) as ``fn(a, b) -> flow``; learned ones only
    where ``pipe`` has the networks."""
    out: dict[str, MethodFn] = {}
    if pipe is not None and pipe.coarse is not None:
        memo: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []

        def run(a: np.ndarray, b: np.ndarray, key: str) -> np.ndarray:
            # one pipeline run serves every entry for the same pair of arrays (the last 40
            # pairs are kept, by identity)
            for ma, mb, res in memo:
                if ma is a and mb is b:
                    return res[key]
            res = pipe.match(a, b, seed=seed, hypotheses=hypotheses)
            memo.append((a, b, res))
            del memo[:-40]
            return res[key]

        out["diffmatch"] = lambda a, b: run(a, b, "flow")
        if pipe.sr is not None:
            out["diffmatch_coarse"] = lambda a, b: run(a, b, "coarse")
    if pipe is not None and pipe.regressor is not None:
        def regress(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ta, tb = pipe.to_tensors(a, b)
            f = pipe.regress_tensors(ta, tb)
            return resize_flow(f, a.shape[0], a.shape[1])[0].cpu().numpy()
        out["regressor"] = regress
    if pipe is not None:
        def argmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ta, tb = pipe.to_tensors(a, b)
            prep = pipe.prepare(ta, tb, fine=False)
            return resize_flow(prep.init, a.shape[0], a.shape[1])[0].cpu().numpy()
        out["argmax"] = argmax
    max_side = pipe.config.max_side if pipe is not None else 192
    out["argmax_daisy"] = lambda a, b: _daisy_argmax(a, b, max_side)
    if opencv:
        out["dis"] = lambda a, b: opencv_flow(a, b, "dis")
        out["farneback"] = lambda a, b: opencv_flow(a, b, "farneback")
    return out


def score_methods(fns: dict[str, MethodFn], pairs: Sequence[EvalPair],
                  corruption: str = "clean", severity: int = 3,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean metrics of every method over ``pairs`` with both images corrupted by
    ``corruption`` (fixed per-pair noise, the same corrupted images for every method), plus
    ``seconds`` per pair."""
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in fns}
    secs = dict.fromkeys(fns, 0.0)
    for i, p in enumerate(pairs):
        rng = np.random.default_rng([seed, i])
        a = corrupt(p.a, corruption, severity, rng)
        b = corrupt(p.b, corruption, severity, rng)
        for name, fn in fns.items():
            tic = time.perf_counter()
            with torch.no_grad():
                f = fn(a, b)
            secs[name] += time.perf_counter() - tic
            rows[name].append(flow_metrics(f, p.flow, p.valid))
    out = {}
    for name, r in rows.items():
        out[name] = {k: float(np.mean([x[k] for x in r])) for k in METRICS}
        out[name]["seconds"] = secs[name] / max(len(pairs), 1)
    return out


def score_method(fn: MethodFn, pairs: Sequence[EvalPair], corruption: str = "clean",
                 severity: int = 3, seed: int = 0) -> dict[str, float]:
    """:func:`score_methods` for one method."""
    return score_methods({"m": fn}, pairs, corruption, severity, seed)["m"]


def evaluate(fns: dict[str, MethodFn], sets: dict[str, Sequence[EvalPair]],
             corruptions: Sequence[str] = ("clean",), severity: int = 3, seed: int = 0,
             log: Callable[[str], None] | None = None) -> dict[str, dict[str, dict[str, dict[
                 str, float]]]]:
    """``results[set][corruption][method] = metrics`` for every combination."""
    res: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for set_name, pairs in sets.items():
        res[set_name] = {}
        for c in corruptions:
            res[set_name][c] = by_m = score_methods(fns, pairs, c, severity, seed)
            for name, m in by_m.items():
                if log is not None:
                    log(f"{set_name:>10} {c:>8} {name:>17}: AEPE {m['aepe']:7.3f}  "
                        f"PCK-1 {m['pck1']:.3f}  PCK-3 {m['pck3']:.3f}  PCK-5 "
                        f"{m['pck5']:.3f}  {m['seconds']:.3f} s")
    return res
