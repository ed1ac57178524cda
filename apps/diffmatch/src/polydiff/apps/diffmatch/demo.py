"""The ``diffmatch`` tour demo: dense matching on held-out photographs and a real stereo pair.

With the starter weights shipped in this package (trained by ``diffmatch train``, see their
``manifest.json``), DiffMatch (Nam et al. 2024) matches held-out homography / affine /
thin-plate-spline warps of photographs it never saw in training (``chelsea``, ``coffee``,
``rocket`` from scikit-image) and the Middlebury 2014 motorcycle stereo pair. It is compared
with the cost-volume argmax it starts from, the same network trained as a direct regressor,
and OpenCV's DIS and Farneback optical flow (when ``opencv-python-headless`` is installed),
by the average end-point error (AEPE, pixels, lower is better) and PCK-1/3/5 (fraction of
pixels within 1/3/5 pixels). The full demo also scores the pairs under Gaussian noise.

Figures: ``warps.png`` (per row: A, B, the true flow, DiffMatch, argmax, DIS colour-coded,
B warped onto A by DiffMatch) and ``middlebury.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport

__all__ = ["DEMO", "DiffMatchDemo", "DemoSettings", "QUICK", "FULL"]


@dataclass(frozen=True)
class DemoSettings:
    """One demo run: held-out warped pairs, corruptions scored, whether to add Middlebury,
    pairs drawn in ``warps.png``."""

    pairs: int
    corruptions: tuple[str, ...]
    middlebury: bool = True
    figure_rows: int = 2


QUICK = DemoSettings(pairs=3, corruptions=("clean",), figure_rows=1)
FULL = DemoSettings(pairs=16, corruptions=("clean", "noise"), figure_rows=3)

UNITS = {"aepe": "px", "pck1": "fraction", "pck3": "fraction", "pck5": "fraction",
         "seconds": "s"}
SHOWN = ("diffmatch", "regressor", "argmax", "dis", "farneback")


def _units(metrics: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, str):
            continue
        last = k.rsplit("/", 1)[-1]
        out[k] = UNITS.get(last, "pairs" if last == "pairs" else "s" if "seconds" in last
                           else "ratio")
    return out


def _figures(out_dir: Path, pairs: list[Any], mb: list[Any], rows: int,
             fns: dict[str, Any]) -> list[Path]:
    import numpy as np

    from polydiff.apps.diffmatch.workflow import flow_panel
    from polydiff.dense.flow import flow_to_color, warp_image
    from polydiff.dense.images import resize_image, write_png

    figures = []
    panel = []
    for p in pairs[:rows]:   # the evaluation's results for these arrays are reused
        top = float(np.hypot(p.flow[0], p.flow[1]).max())
        flow = fns["diffmatch"](p.a, p.b)
        row = [p.a, p.b, flow_to_color(p.flow, top), flow_to_color(flow, top),
               flow_to_color(fns["argmax"](p.a, p.b), top)]
        if "dis" in fns:
            row.append(flow_to_color(fns["dis"](p.a, p.b), top))
        row.append(warp_image(p.b, flow))
        panel.append(row)
    figures.append(write_png(out_dir / "warps.png", flow_panel(panel, scale=2)))
    if mb:
        p = mb[0]
        h, w = p.a.shape[0] // 2, p.a.shape[1] // 2
        top = float(np.hypot(p.flow[0], p.flow[1])[p.valid].max())
        gt = np.where(p.valid[None], p.flow, np.nan)
        row = [p.a, p.b, flow_to_color(gt, top), flow_to_color(fns["diffmatch"](p.a, p.b), top)]
        if "dis" in fns:
            row.append(flow_to_color(fns["dis"](p.a, p.b), top))
        small = [resize_image(t, h, w) for t in row]
        figures.append(write_png(out_dir / "middlebury.png", flow_panel([small[:3],
                                                                          small[3:]])))
    return figures


def _text(m: dict[str, Any], s: DemoSettings, source: str, names: list[str]) -> str:
    def line(prefix: str) -> str:
        parts = [f"{n} {m[f'{prefix}/{n}/aepe']:.2f}" for n in names
                 if f"{prefix}/{n}/aepe" in m]
        return ", ".join(parts)

    lines = [
        f"Model: {source}.",
        f"Held-out warps ({s.pairs} pairs of test photographs never seen in training, "
        "128x128): AEPE in pixels (lower is better): " + line("warps") + ".",
        "PCK-1 (fraction of pixels within 1 px): " + ", ".join(
            f"{n} {m[f'warps/{n}/pck1']:.3f}" for n in names if f"warps/{n}/pck1" in m) + ".",
    ]
    if "noise" in s.corruptions:
        lines.append("Under Gaussian noise (std 0.08, both images): AEPE " +
                     line("warps_noise") + ".")
    if s.middlebury:
        lines.append("Middlebury motorcycle stereo pair (real, 741x500, scored where the "
                     "disparity is known): AEPE " + line("middlebury") + ".")
    lines += ["", "warps.png: per row A, B, the true flow, DiffMatch, the cost-volume "
              "argmax, DIS (colour: direction; saturation: magnitude), and B warped onto A "
              "by DiffMatch. middlebury.png: the stereo pair, its true flow, DiffMatch and "
              "DIS."]
    return "\n".join(lines)


class DiffMatchDemo:
    """Match held-out pairs with the starter weights and compare with the baselines."""

    name = "diffmatch"
    summary = ("dense matching by conditional diffusion over the flow field (DiffMatch) on "
               "held-out warped photographs and the Middlebury stereo pair, against the "
               "cost-volume argmax, a direct regressor and OpenCV's DIS and Farneback")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: DemoSettings | None = None, model: str | Path | None = None
             ) -> DemoReport:
        from polydiff.apps.diffmatch import workflow as wf
        from polydiff.dense.diffmatch.evaluate import (
            evaluate,
            heldout_pairs,
            methods,
            middlebury_pairs,
        )

        s = settings or (QUICK if quick else FULL)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        pipe, model_dir = wf.load_model(model)
        manifest = wf.load_manifest(model_dir)
        source = (f"starter weights shipped with polydiff-diffmatch (trained by "
                  f"'{manifest.get('train_command', wf.TRAIN_COMMAND)}' at commit "
                  f"{manifest.get('commit', '?')} in {manifest.get('train_seconds', 0):.0f} s "
                  f"on {manifest.get('device', '?')})" if model is None
                  else f"model folder {model_dir}")
        try:
            fns = methods(pipe, opencv=True)
            import cv2  # noqa: F401
        except ImportError:
            fns = methods(pipe, opencv=False)
        fns = {k: v for k, v in fns.items() if k in SHOWN}
        pairs = heldout_pairs(s.pairs)
        sets: dict[str, Any] = {"warps": pairs}
        mb = middlebury_pairs() if s.middlebury else []
        res = evaluate(fns, sets, s.corruptions)
        if mb:
            res.update(evaluate(fns, {"middlebury": mb}, ("clean",)))
        metrics: dict[str, Any] = {}
        for set_name, by_c in res.items():
            for c, by_m in by_c.items():
                prefix = set_name if c == "clean" else f"{set_name}_{c}"
                for name, m in by_m.items():
                    for k in ("aepe", "pck1", "pck3", "pck5"):
                        metrics[f"{prefix}/{name}/{k}"] = m[k]
                    metrics[f"{prefix}/{name}/seconds"] = m["seconds"]
        figures = _figures(out_dir, pairs, mb, s.figure_rows, fns)
        metrics["warps/pairs"] = float(len(pairs))
        metrics["seconds"] = time.perf_counter() - tic
        metrics["model"] = source
        return DemoReport(title="DiffMatch: dense matching by conditional diffusion",
                          metrics=metrics, figures=figures,
                          text=_text(metrics, s, source, list(fns)), units=_units(metrics))


DEMO = DiffMatchDemo()
