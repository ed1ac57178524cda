"""The ``cdcd`` tour demo: class-conditional digit tokens from the starter CDCD model next to
the vanilla discrete diffusion model trained with the same steps.

Data: scikit-learn's real 8x8 handwritten digits at 4 grey levels (64 tokens each). Both
starter models (see ``weights/manifest.json``) generate one digit for each held-out test
label; a digit classifier (RBF SVM on real training digits) reads them. Headline numbers:
correspondence (classifier accuracy against the class asked for; the classifier's accuracy
on real test digits is the ceiling, chance is 0.1) and quality (distance to the nearest real
test digit of the class, grey values in [0, 1]; grey-level histogram total variation).
Figure: ten digits per class from each model. torch, numpy and scikit-learn are imported
inside :meth:`CDCDDemo.demo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport

__all__ = ["DEMO", "DemoSettings", "QUICK", "FULL", "CDCDDemo", "units"]


@dataclass(frozen=True)
class DemoSettings:
    """One demo run's size: held-out digits scored, sampler jumps, digits per class shown."""

    digits: int
    steps: int
    per_class: int
    seed: int = 0


QUICK = DemoSettings(digits=60, steps=10, per_class=4)
FULL = DemoSettings(digits=359, steps=25, per_class=10)


def units(metrics: dict[str, Any]) -> dict[str, str]:
    """The unit of every numeric metric of the demo (a ``KeyError`` for an unknown one)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, str):
            continue
        if k == "seconds":
            out[k] = "s"
        elif k in ("held_out_digits", "sampler_steps"):
            out[k] = "count"
        elif "accuracy" in k or k == "chance":
            out[k] = "fraction"
        elif k.endswith("nn_distance"):
            out[k] = "L2 distance of grey values in [0, 1] (64 pixels)"
        elif k.endswith("level_tv"):
            out[k] = "total variation distance (0-1)"
        else:
            raise KeyError(f"no unit for the demo metric {k!r}")
    return out


class CDCDDemo:
    """The tour entry of the ``cdcd`` app."""

    name = "cdcd"
    summary = ("Discrete contrastive diffusion: class-conditional digit tokens, CDCD vs the "
               "vanilla variational objective at equal training steps")

    def demo(self, out_dir: Path, *, quick: bool) -> DemoReport:
        import numpy as np
        import torch

        from polydiff.apps.cdcd.starter import manifest, starter_model
        from polydiff.multimodal.cdcd import DigitJudge, load_digit_tokens, score_digits

        s = QUICK if quick else FULL
        tic = time.perf_counter()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        models = {name: starter_model(name) for name in ("cdcd", "vanilla")}
        levels = models["cdcd"].config.num_tokens
        splits = load_digit_tokens(levels=levels)
        data = splits.test.subset(np.arange(min(s.digits, len(splits.test))))
        judge = DigitJudge.fit(splits.train, levels)
        m: dict[str, Any] = {}
        for name, model in models.items():
            sc = score_digits(model, data, judge, steps=s.steps, seed=s.seed)
            for key in ("accuracy", "nn_distance", "level_tv"):
                m[f"{name}/{key}"] = round(float(sc[key]), 4)
        assert data.labels is not None  # the digits are labelled
        m["ceiling/real_digit_accuracy"] = round(judge.accuracy(data.tokens, data.labels), 4)
        m["chance"] = 0.1
        m["held_out_digits"] = len(data)
        m["sampler_steps"] = s.steps
        figures = _figures(out_dir, models, s, torch)
        m["starter_weights"] = str(manifest().get("commit", "?"))[:12]
        m["seconds"] = round(time.perf_counter() - tic, 2)
        return DemoReport(title="CDCD: contrastive vs vanilla discrete diffusion on digit "
                          "tokens", metrics=m, figures=figures, text=_text(m),
                          units=units(m))


def _figures(out: Path, models: dict[str, Any], s: DemoSettings, torch: Any) -> list[Path]:
    from polydiff.core.plots import image_grid, plots_available
    from polydiff.multimodal.cdcd import dequantise_digits

    if not plots_available():
        return []
    labels = torch.arange(10).repeat_interleave(s.per_class)
    figs = []
    for name, model in models.items():
        tokens = model.generate(len(labels), labels=labels, steps=s.steps, seed=s.seed + 7)
        grey = dequantise_digits(tokens.numpy(), model.config.num_tokens).reshape(-1, 8, 8)
        figs.append(image_grid(out / f"digits_{name}.png", grey, nrow=10,
                               row_labels=[str(d) for d in range(10)], vmin=0.0, vmax=1.0,
                               title=f"{name}: {s.per_class} digits per class"))
    return figs


def _text(m: dict[str, Any]) -> str:
    return "\n".join([
        f"Data: {m['held_out_digits']} held-out real 8x8 digits (scikit-learn) at 4 grey "
        f"levels; one digit generated per held-out label with {m['sampler_steps']} sampler "
        "jumps.",
        f"Correspondence (classifier accuracy; real digits {m['ceiling/real_digit_accuracy']:.3f}, "
        f"chance 0.1): CDCD {m['cdcd/accuracy']:.3f} vs vanilla {m['vanilla/accuracy']:.3f}.",
        f"Quality (distance to the nearest real digit, lower is better): CDCD "
        f"{m['cdcd/nn_distance']:.3f} vs vanilla {m['vanilla/nn_distance']:.3f}; grey-level "
        f"histogram TV {m['cdcd/level_tv']:.3f} vs {m['vanilla/level_tv']:.3f}.",
        "Both models: same network, data, optimizer steps, batch and seed (starter weights).",
    ])


DEMO = CDCDDemo()
