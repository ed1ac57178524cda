"""The ``unidiffuser`` tour demo: one model for every image-text distribution of captioned
digits, against dedicated models trained with the same compute.

Data: scikit-learn's real 8x8 handwritten digits, each captioned from its label and three
measured attributes (thickness, slant, size; tertiles within the class), so a caption fits
many digits and a digit many captions. The demo loads the app's starter weights (trained by
``unidiffuser train``; see ``weights/manifest.json``): the UniDiffuser model and the two
dedicated baselines (text->image only, image->text only) with the same network, data, steps
and batch. On held-out digits it samples:

* text -> image from held-out captions: a digit classifier (RBF SVM trained on real training
  digits) reads the generated images; accuracy against the prompt's digit, next to the
  dedicated text->image model, the classifier on real held-out digits (ceiling) and chance;
* image -> text for held-out images: the caption's digit and attributes against the truth,
  next to the dedicated image->text model;
* joint image-caption pairs (caption digit = classifier's reading of the image) and the two
  marginals (class histograms vs the data, total-variation distance), which no dedicated
  model can sample;
* the chains image -> text -> image and text -> image -> text.

Figures: text->image grids of both models, image->text and joint examples, and the
text->image accuracy against the guidance scale. torch, numpy and scikit-learn are imported
inside :meth:`UniDiffuserDemo.demo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport

__all__ = ["DEMO", "DemoSettings", "QUICK", "FULL", "UniDiffuserDemo", "units"]


@dataclass(frozen=True)
class DemoSettings:
    """One demo run's size: held-out digits scored per task, joint/marginal samples, sampler
    steps, and the guidance scales of the guidance curve (empty: none)."""

    digits: int
    joint: int
    steps: int
    curve: tuple[float, ...] = ()
    seed: int = 0


QUICK = DemoSettings(digits=60, joint=60, steps=6)
FULL = DemoSettings(digits=360, joint=360, steps=12, curve=(0.0, 1.0, 2.0, 5.0))


def _unit(images: Any) -> Any:
    return (images[:, 0] + 1.0) / 2.0


def _figures(out: Path, models: dict[str, Any], data: Any, s: DemoSettings,
             guidance: dict[str, dict[str, float]]) -> list[Path]:
    import numpy as np

    from polydiff.core.plots import image_grid, plots_available
    from polydiff.multimodal.data import DIGIT_WORDS
    from polydiff.multimodal.unidiffuser import sample

    if not plots_available():
        return []
    figs = []
    prompts = [f"a thick {DIGIT_WORDS[d]} leaning right" if d % 2 else
               f"a thin small {DIGIT_WORDS[d]}" for d in range(10)]
    cols = 6
    for name, key in (("unidiffuser", "joint"), ("dedicated", "t2i")):
        m = models[key]
        out_s = sample(m, "t2i", prompts=[p for p in prompts for _ in range(cols)],
                       guidance=guidance[key]["t2i"], steps=s.steps, seed=s.seed)
        figs.append(image_grid(out / f"t2i_{name}.png", _unit(out_s.images), nrow=10,
                               row_labels=prompts, vmin=0, vmax=1,
                               title=f"text -> image, {name} model"))
    pick = np.arange(8)
    caps = sample(models["joint"], "i2t", images=data.images[pick],
                  guidance=guidance["joint"]["i2t"], steps=s.steps, seed=s.seed).captions
    figs.append(image_grid(out / "i2t_unidiffuser.png", _unit(data.images[pick]), nrow=8,
                           row_labels=caps, vmin=0, vmax=1,
                           title="image -> text (held-out digits), UniDiffuser"))
    pairs = sample(models["joint"], "joint", n=8, steps=s.steps, seed=s.seed)
    figs.append(image_grid(out / "joint_unidiffuser.png", _unit(pairs.images), nrow=8,
                           row_labels=pairs.captions, vmin=0, vmax=1,
                           title="joint image-caption pairs, UniDiffuser"))
    return figs


class UniDiffuserDemo:
    """Score the starter UniDiffuser against the dedicated models on held-out digits."""

    name = "unidiffuser"
    summary = ("UniDiffuser on captioned real digits: text->image, image->text, joint pairs "
               "and marginals from one transformer vs dedicated models of the same compute")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: DemoSettings | None = None) -> DemoReport:
        """Run the comparison (``QUICK`` or ``FULL`` unless ``settings``) into ``out_dir``."""
        import numpy as np
        import torch

        from polydiff.apps.unidiffuser.starter import manifest, starter_model
        from polydiff.multimodal.data import DigitAttributes, load_captioned_digits
        from polydiff.multimodal.unidiffuser import sample
        from polydiff.multimodal.unidiffuser.evaluation import (
            score_i2t,
            score_joint,
            score_t2i,
        )
        from polydiff.multimodal.unidiffuser.metrics import DigitJudge

        s = settings or (QUICK if quick else FULL)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        man = manifest()
        models = {t: starter_model(t) for t in ("joint", "t2i", "i2t")}
        meta = models["joint"].meta
        splits = load_captioned_digits(seed=int(meta.get("split_seed", 0)))
        attrs = DigitAttributes.from_dict(meta["attributes"])
        data = splits.test.subset(np.arange(min(s.digits, len(splits.test))))
        assert splits.train.labels is not None and data.labels is not None  # labelled digits
        judge = DigitJudge.fit(splits.train.images, splits.train.labels, attrs)
        guidance = {t: {k: float(v) for k, v in m.meta.get("guidance", {}).items()}
                    for t, m in models.items()}
        for per_mode in guidance.values():
            per_mode.setdefault("t2i", 0.0)
            per_mode.setdefault("i2t", 0.0)
        metrics: dict[str, Any] = {}
        with torch.random.fork_rng(devices=[]):
            for key in ("joint", "t2i"):
                r = score_t2i(models[key], data, judge, guidance=guidance[key]["t2i"],
                              steps=s.steps, seed=s.seed)
                metrics[f"t2i/{key}/digit_accuracy"] = r["label_acc"]
                metrics[f"t2i/{key}/attribute_accuracy"] = r["attr_acc"]
            for key in ("joint", "i2t"):
                r = score_i2t(models[key], data, judge, guidance=guidance[key]["i2t"],
                              steps=s.steps, seed=s.seed)
                metrics[f"i2t/{key}/digit_accuracy"] = r["label_acc"]
                metrics[f"i2t/{key}/attribute_accuracy"] = r["attr_acc"]
                metrics[f"i2t/{key}/caption_accuracy"] = r["strict_acc"]
            jn = max(10, min(s.joint, len(splits.test)))
            joint = score_joint(models["joint"], splits.test, judge, n=jn, steps=s.steps,
                                seed=s.seed)
            metrics.update({f"unidiffuser/{k}": v for k, v in joint.items()})
            chain = sample(models["joint"], "i2t2i", images=data.images[:20],
                           guidance=guidance["joint"]["i2t"], steps=s.steps, seed=s.seed)
            assert chain.images is not None  # what i2t2i returns
            metrics["chain/i2t2i_digit_kept"] = float(np.mean(
                judge.classify(chain.images) == data.labels[:20]))
            curve: dict[str, list[float]] = {"joint": [], "t2i": []}
            for g in s.curve:
                for key in curve:
                    curve[key].append(score_t2i(models[key], data, judge, guidance=g,
                                                steps=s.steps, seed=s.seed)["label_acc"])
            figures = _figures(out_dir, models, data, s, guidance)
        if s.curve:
            from polydiff.core.plots import line_plot, plots_available

            if plots_available():
                figures.append(line_plot(
                    out_dir / "t2i_guidance.png",
                    {"UniDiffuser": (list(s.curve), curve["joint"]),
                     "dedicated text->image": (list(s.curve), curve["t2i"])},
                    xlabel="guidance scale s", ylabel="digit accuracy of generated images",
                    title="text -> image accuracy vs guidance (held-out prompts)",
                    markers=True))
            for i, g in enumerate(s.curve):
                metrics[f"t2i_curve/joint/s={g:g}"] = curve["joint"][i]
                metrics[f"t2i_curve/t2i/s={g:g}"] = curve["t2i"][i]
        metrics["ceiling/classifier_accuracy_on_real_digits"] = float(
            np.mean(judge.classify(data.images) == data.labels))
        metrics["chance"] = 0.1
        for task, key in (("t2i", "digit_accuracy"), ("i2t", "caption_accuracy")):
            ded = metrics[f"{task}/{task}/{key}"]
            metrics[f"ratio/{task}_{key}_unidiffuser_over_dedicated"] = (
                metrics[f"{task}/joint/{key}"] / ded if ded > 0 else float("nan"))
        metrics["held_out_digits"] = float(len(data))
        metrics["seconds"] = time.perf_counter() - tic
        metrics["starter_weights"] = man.get("commit", "?")
        return DemoReport(title="UniDiffuser: one transformer for every image-text distribution",
                          metrics=metrics, figures=figures, text=_text(s, metrics, guidance),
                          units=units(metrics))


def units(metrics: dict[str, Any]) -> dict[str, str]:
    """The unit of every numeric metric of the demo (a ``KeyError`` for an unknown one)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, str):
            continue
        if k == "seconds":
            out[k] = "s"
        elif k == "held_out_digits":
            out[k] = "digits"
        elif k.startswith("ratio/"):
            out[k] = "ratio"
        elif k.endswith("_tv"):
            out[k] = "total variation distance (0-1)"
        elif "accuracy" in k or "consistency" in k or k in ("chance", "chain/i2t2i_digit_kept") \
                or k.startswith("t2i_curve/") or k.endswith("/readable"):
            out[k] = "fraction"
        else:
            raise KeyError(f"no unit for the demo metric {k!r}")
    return out


def _text(s: DemoSettings, m: dict[str, Any], guidance: dict[str, dict[str, float]]) -> str:
    n = int(m["held_out_digits"])
    return "\n".join([
        f"Data: {n} held-out real digits (scikit-learn), captioned from label and measured "
        "thickness, slant and size. Models: the starter weights (UniDiffuser, and dedicated "
        "text->image / image->text models with the same network, data, steps and batch).",
        f"Sampling: DPM-Solver++(2M), {s.steps} steps; guidance s chosen on validation "
        f"digits (UniDiffuser t2i {guidance['joint']['t2i']:g}, i2t "
        f"{guidance['joint']['i2t']:g}; dedicated t2i {guidance['t2i']['t2i']:g}, i2t "
        f"{guidance['i2t']['i2t']:g}), the unconditional branch being the model's own "
        "marginal.",
        "",
        f"text -> image, digit accuracy (classifier on real digits): UniDiffuser "
        f"{m['t2i/joint/digit_accuracy']:.3f} vs dedicated {m['t2i/t2i/digit_accuracy']:.3f} "
        f"(real digits {m['ceiling/classifier_accuracy_on_real_digits']:.3f}, chance 0.100); "
        f"named attributes right: {m['t2i/joint/attribute_accuracy']:.3f} vs "
        f"{m['t2i/t2i/attribute_accuracy']:.3f} (chance 0.333).",
        f"image -> text, caption fully right (digit and every named attribute): UniDiffuser "
        f"{m['i2t/joint/caption_accuracy']:.3f} vs dedicated "
        f"{m['i2t/i2t/caption_accuracy']:.3f}; digit right {m['i2t/joint/digit_accuracy']:.3f}"
        f" vs {m['i2t/i2t/digit_accuracy']:.3f}.",
        f"Only UniDiffuser: joint pairs whose caption names the digit the classifier reads "
        f"{m['unidiffuser/joint/label_consistency']:.3f}; marginal class histograms vs data "
        f"(total variation) images {m['unidiffuser/marginal/image_tv']:.3f}, captions "
        f"{m['unidiffuser/marginal/text_tv']:.3f} (as many real labels resampled: "
        f"{m['unidiffuser/marginal/resample_tv']:.3f}); image -> text -> image keeps the "
        f"digit in {m['chain/i2t2i_digit_kept']:.2f} of cases.",
        "",
        "Honest reading: tiny models and 8x8 images; attributes are tertiles within a class, "
        "so borderline digits make even a perfect captioner miss some. tools/bench/"
        "unidiffuser.py trains all three models from scratch and sweeps the guidance.",
    ])


DEMO = UniDiffuserDemo()
