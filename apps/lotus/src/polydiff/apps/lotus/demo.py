"""The ``lotus`` tour demo: depth and surface normals of held-out scenes and a real photograph.

With the starter weights shipped in this package (trained by ``lotus train``, see their
``manifest.json``), the single-step Lotus predictor (He et al. 2024) estimates the depth and
the surface normals of rendered scenes textured with photographs it never saw in training
(``chelsea``, ``coffee``, ``rocket`` from scikit-image), and the depth of the Middlebury 2014
motorcycle (a real photograph; depth from its stereo disparity and calibration). It is
compared with trivial baselines: a floor-like ramp (disparity growing towards the bottom of
the image) for depth, and normals all facing the camera. Depth: AbsRel (lower is better) and
delta1 (higher is better) after least-squares scale and shift alignment; normals: mean
angular error in degrees and the fraction of pixels within 11.25 degrees.

Figures: ``depth.png`` and ``normals.png`` (per row: input, truth, prediction) and
``middlebury.png`` (input, true depth, prediction; black where the truth is unknown).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport

__all__ = ["DEMO", "LotusDemo", "DemoSettings", "QUICK", "FULL"]


@dataclass(frozen=True)
class DemoSettings:
    """One demo run: held-out scenes scored, rows drawn, whether to add Middlebury."""

    scenes: int
    figure_rows: int = 3
    middlebury: bool = True


QUICK = DemoSettings(scenes=4, figure_rows=2)
FULL = DemoSettings(scenes=24, figure_rows=4)

UNITS = {"absrel": "ratio", "delta1": "fraction", "mean": "deg", "median": "deg",
         "a11": "fraction", "a22": "fraction", "a30": "fraction",
         "seconds_per_image": "s", "seconds": "s", "scenes": "scenes"}


def _panel(rows: list[list[Any]], scale: int) -> Any:
    import numpy as np

    from polydiff.dense.images import to_rgb

    gap = 2
    lines = []
    for row in rows:
        tiles = [np.kron(to_rgb(t), np.ones((scale, scale, 1), np.float32)) for t in row]
        h = tiles[0].shape[0]
        sep = np.ones((h, gap, 3), np.float32)
        line = tiles[0]
        for t in tiles[1:]:
            line = np.concatenate([line, sep, t], 1)
        lines.append(line)
    w = lines[0].shape[1]
    out = lines[0]
    for line in lines[1:]:
        out = np.concatenate([out, np.ones((gap, w, 3), np.float32), line], 0)
    return out


def _figures(out_dir: Path, models: dict[str, Any], sets: dict[str, Any], rows: int
             ) -> list[Path]:
    import numpy as np
    import torch

    from polydiff.apps.lotus import workflow as wf
    from polydiff.dense.images import write_png

    figures = []
    for task, m in models.items():
        es = sets["test"]
        img = es.image[:rows]
        with torch.no_grad():
            pred = m.method()(img).numpy()
        panel = []
        for i in range(img.shape[0]):
            rgb = np.moveaxis((img[i].numpy() + 1) / 2, 0, -1)
            if task == "depth":
                truth = wf.colorize_depth(1.0 / es.depth[i, 0].numpy())
                guess = wf.colorize_depth(pred[i, 0])
            else:
                truth = wf.normal_to_rgb(np.moveaxis(es.normal[i].numpy(), 0, -1))
                guess = wf.normal_to_rgb(np.moveaxis(pred[i], 0, -1))
            panel.append([rgb, truth, guess])
        name = "depth.png" if task == "depth" else "normals.png"
        figures.append(write_png(out_dir / name, _panel(panel, 3)))
    if "middlebury" in sets and "depth" in models:
        es = sets["middlebury"]
        with torch.no_grad():
            pred = models["depth"].method()(es.image).numpy()[0, 0]
        rgb = np.moveaxis((es.image[0].numpy() + 1) / 2, 0, -1)
        truth = wf.colorize_depth(1.0 / es.depth[0, 0].numpy())
        figures.append(write_png(out_dir / "middlebury.png",
                                 _panel([[rgb, truth, wf.colorize_depth(pred)]], 3)))
    return figures


def _text(m: dict[str, Any], s: DemoSettings, source: str) -> str:
    lines = [f"Model: {source}.",
             f"Held-out rendered scenes ({s.scenes}, 64x64, textured with test photographs "
             "never seen in training):"]
    if "depth/test/lotus/absrel" in m:
        lines.append(f"  depth AbsRel (lower is better): Lotus {m['depth/test/lotus/absrel']:.3f}"
                     f", ramp baseline {m['depth/test/ramp/absrel']:.3f}; delta1 (higher is "
                     f"better): {m['depth/test/lotus/delta1']:.3f} vs "
                     f"{m['depth/test/ramp/delta1']:.3f}.")
    if "normal/test/lotus/mean" in m:
        lines.append(f"  normals mean angular error: Lotus {m['normal/test/lotus/mean']:.1f} deg"
                     f", facing-camera baseline {m['normal/test/facing/mean']:.1f} deg; within "
                     f"11.25 deg: {m['normal/test/lotus/a11']:.3f} vs "
                     f"{m['normal/test/facing/a11']:.3f}.")
    if "depth/middlebury/lotus/absrel" in m:
        lines.append("Middlebury motorcycle (real photograph, 96x64): depth AbsRel Lotus "
                     f"{m['depth/middlebury/lotus/absrel']:.3f}, ramp baseline "
                     f"{m['depth/middlebury/ramp/absrel']:.3f}.")
    lines += ["", "depth.png / normals.png: per row the input, the truth and the prediction "
              "(depth as disparity, bright = near; normals as (n + 1) / 2). middlebury.png: "
              "the photograph, its true depth and the prediction."]
    return "\n".join(lines)


class LotusDemo:
    """Predict depth and normals of held-out inputs with the starter weights."""

    name = "lotus"
    summary = ("single-step diffusion dense prediction (Lotus): depth and surface normals of "
               "held-out rendered scenes and the Middlebury motorcycle, against trivial "
               "baselines")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: DemoSettings | None = None) -> DemoReport:
        from polydiff.apps.lotus import workflow as wf
        from polydiff.dense.lotus.evaluate import middlebury_set, scene_set, score

        s = settings or (QUICK if quick else FULL)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        manifest = wf.load_manifest()
        models = {task: wf.load_model(task) for task in ("depth", "normal")}
        sets: dict[str, Any] = {"test": scene_set("test", s.scenes)}
        if s.middlebury:
            sets["middlebury"] = middlebury_set()
        metrics: dict[str, Any] = {}
        for task, m in models.items():
            trivial = "ramp" if task == "depth" else "facing"
            for set_name, es in sets.items():
                if es.normal is None and task == "normal":
                    continue
                for name, fn in (("lotus", m.method()), (trivial, wf.trivial_method(task))):
                    for k, v in score(fn, es, task).items():
                        if k != "images":
                            metrics[f"{task}/{set_name}/{name}/{k}"] = v
        figures = _figures(out_dir, models, sets, s.figure_rows)
        metrics["scenes"] = float(s.scenes)
        metrics["seconds"] = time.perf_counter() - tic
        variants = ", ".join(f"{t}: {m.variant}" for t, m in models.items())
        source = (f"starter weights shipped with polydiff-lotus ({variants}; trained at commit "
                  f"{manifest.get('commit', '?')} on {manifest.get('device', '?')})")
        metrics["model"] = source
        units = {k: UNITS.get(k.rsplit("/", 1)[-1], "ratio") for k, v in metrics.items()
                 if not isinstance(v, str)}
        return DemoReport(title="Lotus: depth and normals in one diffusion step",
                          metrics=metrics, figures=figures, text=_text(metrics, s, source),
                          units=units)


DEMO = LotusDemo()
