"""The ``digits`` tour demo: a class-conditional 2-D U-Net trained on scikit-learn's digits.

The 1797 8x8 handwritten digits of :func:`sklearn.datasets.load_digits` (values 0..16) are
scaled to ``[-1, 1]`` and split, stratified and with a fixed seed, into training and held-out
digits. A small two-level :class:`~polydiff.core.nn.UNet` (8x8 -> 4x4, so
``padding_multiple = 2`` needs no padding) with a label embedding is trained by the engine
(:class:`~polydiff.core.training.Trainer`, EMA of the weights, a run directory inside the
demo's folder) under EDM's process and preconditioning (Karras et al. 2022: log-normal noise
levels, ``lambda(sigma)`` weighting). Labels are dropped (set to the null class) for a
fraction of the training samples, so one network is also the unconditional model and serves
classifier-free guidance (Ho & Salimans 2022). Samples come from DPM-Solver++(2M) in 10 steps
on EDM's ``rho = 7`` grid (Lu et al. 2022).

Quality is judged against things that give the numbers a scale:

* ``accuracy/*``: an RBF support-vector classifier trained on the real training digits
  labels generated digits; its accuracy against the intended labels is compared with its
  accuracy on held-out real digits (the ceiling) and chance (0.1);
* ``fd_pca20/*``: the Frechet distance between Gaussians fitted to features (the first 20
  principal components of the training pixels) of a sample set and of the held-out digits;
  every set has the same size, so the finite-sample bias is shared. The floor is a subsample
  of real training digits, the baseline per-pixel Gaussian noise with the training digits'
  per-pixel mean and standard deviation;
* ``memorization/nn_ratio``: how far samples lie from their nearest training digit, relative
  to held-out digits (a model that copied its training set would score near 0).

Figures: ``samples.png`` (a row per class: one real held-out digit, then generated ones) and
``loss.png`` (the training loss from the run's ``stats.jsonl``). torch, numpy and
scikit-learn are imported inside :meth:`DigitsDemo.demo` only.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polydiff.cli.demos import write_png
from polydiff.core.cli import DemoReport

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["DigitsDemo", "DigitsSettings", "digits_demo", "frechet_distance", "load_digits_split",
           "load_starter", "nearest_distance", "rescore", "train_digits", "write_starter"]

NUM_CLASSES = 10
SAMPLING_STEPS = 10
_INK = (60, 64, 72)
_RULE = (150, 154, 160)


@dataclass(frozen=True)
class DigitsSettings:
    """Size of one run of the demo.

    Attributes:
        steps: optimizer steps; batch_size: digits per step; lr: peak AdamW learning rate.
        base_channels: U-Net width of level 0 (level 1 has twice as many).
        num_res_blocks: ResNet blocks per level; attention: self-attention at level 1 (4x4)
            besides the middle block's.
        per_class: generated digits per class for the metrics (and the noise baseline and
            floor use as many digits in total).
        grid_columns: generated digits per class shown in ``samples.png``.
        guidance: the classifier-free guidance scale of the guided samples (1 = conditional).
        label_dropout: fraction of training labels replaced by the null class.
        ema_decay: decay of the weight EMA used for sampling.
    """

    steps: int
    batch_size: int = 128
    lr: float = 2e-3
    base_channels: int = 16
    num_res_blocks: int = 1
    attention: bool = False
    per_class: int = 50
    grid_columns: int = 12
    guidance: float = 2.0
    label_dropout: float = 0.15
    ema_decay: float = 0.999


QUICK = DigitsSettings(steps=250, batch_size=64, per_class=20, grid_columns=10)
FULL = DigitsSettings(steps=2000, batch_size=64, per_class=50, grid_columns=12)


# ----------------------------------------------------------------------------- data
def load_digits_split(held_out: float = 0.25, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(x_train, y_train, x_held, y_held)``: images ``(N, 1, 8,
    8)`` float32 in ``[-1, 1]`` and int64 labels, split stratified by class with ``seed``."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(x, y, test_size=held_out, random_state=seed,
                                              stratify=y)
    return x_tr, y_tr, x_ho, y_ho


class _LabelDropout:
    """The training data as the engine reads it (a data source with ``get(positions,
    generator)``): batches ``{"x0", "class_labels"}`` of an
    :class:`~polydiff.core.training.IndexedData`, with each label replaced by the null class
    (``-1``) with probability ``p``, drawn from the step's generator (so a run is
    reproducible)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, p: float, seed: int):
        from polydiff.core.training import IndexedData

        self.inner = IndexedData({"x0": x, "class_labels": labels}, seed=seed)
        self.p = float(p)

    def get(self, positions: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """The batch at global sample ``positions``."""
        import torch

        batch = self.inner.get(positions, generator)
        labels = batch["class_labels"]
        drop = torch.rand(labels.shape, generator=generator, device=generator.device)
        batch["class_labels"] = torch.where(drop.to(labels.device) < self.p,
                                            torch.full_like(labels, -1), labels)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


# ----------------------------------------------------------------------------- metrics
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b``:
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})`` (the FID formula
    of Heusel et al. 2017; symmetric eigendecompositions in float64, no ``sqrtm``)."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(w.clip(min=0.0))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cb @ root_a).clip(min=0.0)
    return float(mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * np.sqrt(cross).sum())


def nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``a`` to its nearest row of ``b``."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(d2.min(1).clip(min=0.0))


# ----------------------------------------------------------------------------- figures
def _digit_grid(rows: list[np.ndarray], real: list[np.ndarray], scale: int = 4,
                gap: int = 4, pad: int = 8) -> np.ndarray:
    """One row per class: a real digit, a grey rule, then the generated ones; ink (``+1``)
    dark on white. Returns an ``(H, W, 3)`` uint8 image."""
    import numpy as np

    cols, size = len(rows[0]), 8 * scale
    cell, rule = size + gap, 3 * gap  # the real column is followed by a wider gap
    width = 2 * pad + (cols + 1) * cell - gap + rule
    height = 2 * pad + len(rows) * cell - gap
    img = np.full((height, width, 3), 255, np.uint8)
    x_rule = pad + cell - gap + rule // 2
    img[pad:height - pad, x_rule - 1:x_rule + 1] = _RULE

    def put(x: np.ndarray, r: int, c: int) -> None:
        pix = np.clip((1.0 - (np.asarray(x).reshape(8, 8) + 1.0) / 2.0) * 255.0, 0, 255)
        y0, x0 = pad + r * cell, pad + c * cell + (rule if c else 0)
        img[y0:y0 + size, x0:x0 + size] = np.kron(pix, np.ones((scale, scale)))[:, :, None]

    for r, (gen, ref) in enumerate(zip(rows, real)):
        put(ref, r, 0)
        for c, x in enumerate(gen):
            put(x, r, c + 1)
    return img


def _smooth(values: list[float], half_width: int = 3) -> list[float]:
    """Centred moving average over ``2 half_width + 1`` points (fewer at the ends)."""
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half_width):i + half_width + 1]
        out.append(sum(window) / len(window))
    return out


# ----------------------------------------------------------------------------- training
STARTER_DIR = Path(__file__).resolve().parent / "starter" / "digits"
MANIFEST = "manifest.json"
TRAIN_COMMAND = "polydiff train-digits -o OUT"


def _network(s: DigitsSettings) -> Any:
    from polydiff.core.nn import UNet, UNetConfig

    return UNet(UNetConfig(
        dims=2, in_channels=1, base_channels=s.base_channels, channel_mults=(1, 2),
        num_res_blocks=s.num_res_blocks, attention_levels=(1,) if s.attention else (),
        num_heads=2, mid_attention=True, time_embedding="fourier", time_scale=1.0,
        scale_shift=True, num_classes=NUM_CLASSES, norm_groups=8))


def _denoiser(net: Any, sigma_data: float) -> Any:
    from polydiff.core.denoiser import EDMDenoiser
    from polydiff.core.processes import EDM

    return EDMDenoiser(net, EDM(sigma_data=sigma_data), sigma_data=sigma_data)


def train_digits(s: DigitsSettings, run_dir: Path, *, resume: bool = False,
                 ckpt_every: int = 0, extra: dict[str, Any] | None = None
                 ) -> tuple[Any, float, int]:
    """Train the digits U-Net with the engine into ``run_dir`` (a fresh run unless
    ``resume``; checkpoints every ``ckpt_every`` steps, 0 = only at the end). Returns
    ``(denoiser with the EMA weights, training seconds, steps)``."""
    import torch

    from polydiff.core.losses import DiffusionLoss
    from polydiff.core.training import TrainConfig, Trainer

    x_tr, y_tr, _, _ = load_digits_split()
    sigma_data = float(x_tr.std())
    from polydiff.core.training import seeded

    with seeded(0):  # the engine's seeded construction (the global RNG is kept)
        net = _network(s)
    denoiser = _denoiser(net, sigma_data)
    loss = DiffusionLoss(denoiser.process, weighting="edm", time_sampling="lognormal",
                         sigma_data=sigma_data)
    if run_dir.exists() and not resume:  # never resume a differently sized run by accident
        shutil.rmtree(run_dir)
    config = TrainConfig(
        steps=s.steps, batch_size=s.batch_size, lr=s.lr, lr_warmup=min(100, s.steps // 5),
        grad_clip=1.0, ema_decay=s.ema_decay, ema_warmup="power", ema_power=0.75,
        seed=0, log_every=max(1, s.steps // 100), ckpt_every=ckpt_every,
        keep_last=1, run_dir=str(run_dir), desc="digits", extra=dict(extra or {}))
    data = _LabelDropout(torch.from_numpy(x_tr), torch.from_numpy(y_tr), s.label_dropout,
                         seed=0)
    tic = time.perf_counter()
    # the engine echoes its log lines to stdout: keep stdout clean (``tour --json``)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(denoiser, loss, data, config)
        trainer.fit(resume=resume)
    train_s = time.perf_counter() - tic
    if trainer.ema is not None:
        trainer.ema.copy_to()  # sample with the EMA weights (training is over)
    denoiser.eval()
    return denoiser, train_s, int(trainer.step)


def _loss_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    from polydiff.core.training.rundir import read_stats

    stats = read_stats(run_dir)
    return [int(r["step"]) for r in stats], [float(r["loss"]) for r in stats]


def load_starter(directory: Path | None = None) -> tuple[Any, dict[str, Any]] | None:
    """The shipped starter model (EMA weights) as a denoiser and its manifest, or ``None``
    when the package carries none."""
    import json

    from polydiff.core.nn import UNet

    d = Path(directory) if directory is not None else STARTER_DIR
    if not (d / MANIFEST).is_file():
        return None
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    net = UNet.from_pretrained(d)
    denoiser = _denoiser(net, float(manifest["sigma_data"]))
    denoiser.eval()
    return denoiser, manifest


def write_starter(out: Path, s: DigitsSettings | None = None, *, resume: bool = False,
                  rescore_per_class: int = 20) -> dict[str, Any]:
    """Train with ``s`` (default :data:`FULL`) into ``out/run`` and write the starter files
    to ``out/starter``: the U-Net's EMA weights (``save_pretrained``) and ``manifest.json``
    (command, settings, commit, device, wall time, loss curve and the held-out metrics that
    :func:`rescore` reproduces). Returns the manifest."""
    import json
    import subprocess

    import torch

    from polydiff.core.utils import atomic_dir

    s = s or FULL
    out = Path(out)
    denoiser, train_s, steps = train_digits(s, out / "run", resume=resume, ckpt_every=500,
                                            extra={"starter": "digits"})
    steps_logged, losses = _loss_curve(out / "run")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    x_tr = load_digits_split()[0]
    manifest: dict[str, Any] = {
        "model": "digits class-conditional U-Net (EDM preconditioning)",
        "train_command": TRAIN_COMMAND + (f" --steps {s.steps}" if s.steps != FULL.steps
                                          else ""),
        "commit": commit or "unknown", "device": _device_name(denoiser),
        "torch": torch.__version__,
        "train_seconds": round(train_s, 1), "steps": steps,
        "settings": {k: getattr(s, k) for k in DigitsSettings.__dataclass_fields__},
        "sigma_data": float(x_tr.std()),
        "parameters": int(sum(p.numel() for p in denoiser.parameters())),
        "loss_curve": {"step": steps_logged, "loss": [round(v, 6) for v in losses]},
        "rescore_per_class": rescore_per_class,
    }
    # scored on the CPU, where the re-scoring test runs (same noise, same arithmetic)
    manifest["heldout_metrics"] = rescore(denoiser.cpu(), per_class=rescore_per_class,
                                          guidance=s.guidance)
    with atomic_dir(out / "starter") as tmp:
        denoiser.model.save_pretrained(tmp)  # an existing folder: the weights go inside
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _device_name(module: Any) -> str:
    import platform

    import torch

    dev = next(module.parameters()).device
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (cuda)"
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def rescore(denoiser: Any, *, per_class: int = 20, guidance: float = 2.0) -> dict[str, float]:
    """Held-out metrics of a digits model from fixed noise: classifier accuracy of its
    conditional and guided samples and their Frechet distance to the held-out digits."""
    import torch
    from sklearn.decomposition import PCA
    from sklearn.svm import SVC

    x_tr, y_tr, x_ho, _ = load_digits_split()
    flat_tr, flat_ho = x_tr.reshape(len(x_tr), -1), x_ho.reshape(len(x_ho), -1)
    classifier = SVC(C=10.0, gamma="scale").fit(flat_tr, y_tr)
    pca = PCA(n_components=20, random_state=0).fit(flat_tr)
    device = next(denoiser.parameters()).device
    labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(per_class)
    want = labels.cpu().numpy()
    out = {}
    for name, g in (("samples", 1.0), (f"samples_cfg{guidance:g}", guidance)):
        x = DigitsDemo._sample(denoiser, labels, g, device).reshape(len(want), -1)
        out[f"accuracy/{name}"] = float((classifier.predict(x) == want).mean())
        out[f"fd_pca20/{name}"] = frechet_distance(pca.transform(x), pca.transform(flat_ho))
    return out


# ----------------------------------------------------------------------------- the demo
UNITS = {"accuracy/": "fraction", "fd_pca20/": "PCA-20 pixel units^2",
         "memorization/": "ratio", "train/seconds": "s", "sample/seconds": "s",
         "seconds": "s", "train/steps": "steps", "train/batch_size": "digits",
         "train/parameters": "parameters", "train/final_loss": "EDM-weighted MSE",
         "sample/steps": "steps", "samples": "digits"}


def _units(metrics: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, str):
            continue
        unit = UNITS.get(k) or next((u for p, u in UNITS.items()
                                     if p.endswith("/") and k.startswith(p)), None)
        if unit:
            out[k] = unit
    return out


class DigitsDemo:
    """Sample and judge a class-conditional U-Net on scikit-learn's 8x8 digits: the shipped
    starter weights (:data:`STARTER_DIR`), or a model trained on the spot."""

    name = "digits"
    summary = ("a small class-conditional U-Net trained on scikit-learn's digits, sampled "
               "with DPM-Solver++(2M) in 10 steps, judged by a classifier and a Frechet "
               "distance")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: DigitsSettings | None = None) -> DemoReport:
        """Load the starter weights (or, when ``settings`` are given or none are shipped,
        train with ``settings`` / :data:`QUICK` / :data:`FULL`), sample, write
        ``samples.png`` and ``loss.png``, and report the metrics."""
        import numpy as np
        import torch
        from sklearn.decomposition import PCA
        from sklearn.svm import SVC

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        starter = load_starter() if settings is None else None
        if starter is not None:
            denoiser, manifest = starter
            s = DigitsSettings(**{**manifest["settings"],
                                  "per_class": QUICK.per_class if quick else FULL.per_class,
                                  "grid_columns": QUICK.grid_columns if quick
                                  else FULL.grid_columns})
            train_s, steps = float(manifest["train_seconds"]), int(manifest["steps"])
            steps_logged = manifest["loss_curve"]["step"]
            losses = manifest["loss_curve"]["loss"]
            source = (f"starter weights shipped with polydiff-cli (trained by "
                      f"'{manifest['train_command']}' at commit {manifest['commit']} in "
                      f"{train_s:.0f} s on {manifest['device']})")
        else:
            s = settings or (QUICK if quick else FULL)
            denoiser, train_s, steps = train_digits(
                s, out_dir / "train", extra={"demo": "digits", "quick": quick})
            steps_logged, losses = _loss_curve(out_dir / "train")
            source = f"trained for this run; run directory {out_dir.name}/train/"
        device = next(denoiser.parameters()).device

        # data, classifier and feature space, all from the training digits
        x_tr, y_tr, x_ho, y_ho = load_digits_split()
        flat_tr, flat_ho = x_tr.reshape(len(x_tr), -1), x_ho.reshape(len(x_ho), -1)
        classifier = SVC(C=10.0, gamma="scale").fit(flat_tr, y_tr)
        pca = PCA(n_components=20, random_state=0).fit(flat_tr)
        feats_ho = pca.transform(flat_ho)

        # samples: conditional, guided and unconditional, all from the same noise
        labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(s.per_class)
        t_sample = time.perf_counter()
        cond = self._sample(denoiser, labels, 1.0, device)
        guided = self._sample(denoiser, labels, s.guidance, device)
        uncond = self._sample(denoiser, torch.full_like(labels, -1), 1.0, device)
        sample_s = time.perf_counter() - t_sample

        # baselines of the same size as the sample sets
        n = len(labels)
        rng = np.random.default_rng(0)
        real = flat_tr[rng.choice(len(flat_tr), n, replace=False)]
        mean, std = flat_tr.mean(0), flat_tr.std(0)
        noise = (mean + std * rng.standard_normal((n, flat_tr.shape[1]))).astype(np.float32)

        def fd(x: np.ndarray) -> float:
            return frechet_distance(pca.transform(x.reshape(len(x), -1)), feats_ho)

        def acc(x: np.ndarray, y: np.ndarray) -> float:
            return float((classifier.predict(x.reshape(len(x), -1)) == y).mean())

        want = labels.cpu().numpy()
        metrics: dict[str, float | str] = {
            "accuracy/heldout_real": acc(flat_ho, y_ho),
            "accuracy/samples": acc(cond, want),
            f"accuracy/samples_cfg{s.guidance:g}": acc(guided, want),
            "accuracy/chance": 1.0 / NUM_CLASSES,
            "fd_pca20/samples": fd(cond),
            f"fd_pca20/samples_cfg{s.guidance:g}": fd(guided),
            "fd_pca20/samples_uncond": fd(uncond),
            "fd_pca20/real_train_floor": fd(real),
            "fd_pca20/noise_baseline": fd(noise),
            # copying check: typical pixel distance of a sample to its nearest training
            # digit, relative to that of a held-out digit (1: as novel as new real digits)
            "memorization/nn_ratio": float(
                np.median(nearest_distance(cond.reshape(n, -1), flat_tr))
                / np.median(nearest_distance(flat_ho, flat_tr))),
        }
        tail = losses[-max(1, len(losses) // 10):]
        metrics.update({
            "train/steps": float(steps), "train/batch_size": float(s.batch_size),
            "train/parameters": float(sum(p.numel() for p in denoiser.parameters())),
            "train/final_loss": float(np.mean(tail)) if tail else math.nan,
            "train/seconds": train_s, "sample/seconds": sample_s,
            "sample/steps": float(SAMPLING_STEPS), "samples": float(n),
            "seconds": time.perf_counter() - tic, "device": str(device),
            "process": "EDM", "sampler": "dpmpp_2m", "model": source,
        })

        rows = [guided[want == k][:s.grid_columns] for k in range(NUM_CLASSES)]
        refs = [x_ho[y_ho == k][0] for k in range(NUM_CLASSES)]
        figures = [write_png(out_dir / "samples.png", _digit_grid(rows, refs))]
        if len(losses) >= 2:
            from polydiff.core.plots import line_plot

            figures.append(line_plot(
                out_dir / "loss.png",
                {"per step": (steps_logged, losses),
                 "moving average (7)": (steps_logged, _smooth(losses))},
                xlabel="training step", ylabel="EDM-weighted loss", logy=True,
                title="digits U-Net: training loss"))
        return DemoReport(title="A class-conditional U-Net on scikit-learn's digits",
                          metrics=metrics, figures=figures, text=_text(s, metrics, source),
                          units=_units(metrics))

    @staticmethod
    def _sample(denoiser: Any, labels: torch.Tensor, guidance: float,
                device: torch.device) -> np.ndarray:
        """``len(labels)`` digits from DPM-Solver++(2M) in :data:`SAMPLING_STEPS` steps on
        EDM's grid (the last step lands on sigma = 0), CFG ``guidance``; fixed noise seed.
        Returns ``(N, 1, 8, 8)`` float32 in ``[-1, 1]``."""
        import torch

        from polydiff.core.grids import time_grid
        from polydiff.core.guidance import ClassifierFreeGuidance
        from polydiff.core.samplers import sample_dpmpp_2m

        process = denoiser.process
        gen = torch.Generator(device=device).manual_seed(1234)
        x = process.prior_sample((len(labels), 1, 8, 8), generator=gen, device=device)
        ts = time_grid(process, SAMPLING_STEPS, "edm", final_zero=True, device=device)
        model = denoiser if guidance == 1.0 else ClassifierFreeGuidance(
            denoiser, guidance,
            uncond=lambda c: {**c, "class_labels": torch.full_like(c["class_labels"], -1)})
        with torch.no_grad():
            out = sample_dpmpp_2m(model, x, ts, cond={"class_labels": labels}, disable=True)
        return out.clamp(-1.0, 1.0).float().cpu().numpy()


def _text(s: DigitsSettings, m: dict[str, float | str], source: str) -> str:
    g = f"{s.guidance:g}"
    return "\n".join([
        f"Data: scikit-learn's 1797 8x8 digits in [-1, 1], {int(m['samples'])} generated per "
        f"run ({s.per_class} per class); 25% held out (stratified, seed 0).",
        f"Model: a 2-level U-Net ({int(m['train/parameters'])} parameters, label embedding "
        "with a null class) in EDM's preconditioning, trained by the polydiff engine for "
        f"{s.steps} steps of {s.batch_size} digits (AdamW, lr {s.lr:g}, EMA {s.ema_decay:g}, "
        f"{s.label_dropout:.0%} of labels dropped) in {m['train/seconds']:.0f} s: {source}.",
        f"Sampling: DPM-Solver++(2M), {SAMPLING_STEPS} steps on EDM's rho=7 grid ending at "
        f"sigma=0; conditional (scale 1), guided (CFG scale {g}) and unconditional.",
        "",
        f"Classifier (RBF SVC on training pixels): {m['accuracy/heldout_real']:.3f} on "
        f"held-out real digits; {m['accuracy/samples']:.3f} on conditional samples and "
        f"{m[f'accuracy/samples_cfg{g}']:.3f} on guided ones (intended labels; chance 0.1).",
        "Frechet distance to the held-out digits in PCA-20 pixel space (lower is better; "
        f"{int(m['samples'])} digits per set): conditional samples "
        f"{m['fd_pca20/samples']:.2f}, guided {m[f'fd_pca20/samples_cfg{g}']:.2f}, "
        f"unconditional {m['fd_pca20/samples_uncond']:.2f}; real training digits (the floor) "
        f"{m['fd_pca20/real_train_floor']:.2f}, per-pixel Gaussian noise with the data's "
        f"mean and std (the baseline) {m['fd_pca20/noise_baseline']:.2f}.",
        "Copying check: the median distance from a conditional sample to its nearest "
        f"training digit is {m['memorization/nn_ratio']:.2f} times that of a held-out real "
        "digit (near 1: samples are as new as unseen real digits; near 0: copies).",
        "",
        f"samples.png: one row per class 0-9, a real held-out digit on the left, then guided "
        f"samples (CFG scale {g}). loss.png: the EDM-weighted training loss from stats.jsonl "
        "(logged window means in grey, their centred 7-point moving average in purple).",
    ])


digits_demo = DigitsDemo()
