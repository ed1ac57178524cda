"""The verbs of ``polydiff-med`` (torch is imported here, not in ``main``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.cli import CLIError, emit, load_config, save_config
from polydiff.core.cli import require_at_least as _positive

__all__ = ["load_prior", "starter_dir", "load_slice", "write_like", "cmd_train_prior",
           "cmd_reconstruct", "cmd_subsample", "cmd_anomaly", "cmd_evaluate", "cmd_demo",
           "TRAIN_FILE", "CT_FULL_VIEWS"]

TRAIN_FILE = "train.toml"
#: CT: ``--acceleration R`` means ``CT_FULL_VIEWS / R`` views.
CT_FULL_VIEWS = 120


def starter_dir() -> Path:
    """The starter prior shipped with the app (package data)."""
    return Path(str(resources.files("polydiff.apps.medical") / "weights" / "prior"))


def load_prior(path: str | None = None) -> Any:
    """A trained prior: ``path`` (a ``train-prior`` run folder or a folder with
    ``prior.json`` and ``model/``) or the starter weights."""
    from polydiff.medical.prior import DiffusionPrior

    d = Path(path) if path else starter_dir()
    if not d.exists():
        raise CLIError(f"{d}: no such model folder")
    try:
        return DiffusionPrior.from_pretrained(d)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None


# --------------------------------------------------------------------------- slices
@dataclass
class Slice:
    """An input slice resized to the prior's grid and scaled to [0, 1]."""

    x: Tensor               # (1, 1, S, S)
    source: Any             # MedicalImage
    lo: float
    hi: float

    def to_units(self, x: Tensor) -> np.ndarray:
        """[0, 1] back to the file's units (the input's 0.5-99.5 percentile range)."""
        return (self.lo + x.detach().cpu().double().numpy()[0, 0] * (self.hi - self.lo))


def load_slice(path: str, size: int) -> Slice:
    """Read one 2-D slice (DICOM or NIfTI; one line for anything else), centre-crop to a
    square, resize to ``size`` and scale to [0, 1]."""
    from polydiff.medical.data import resize_square, unit_range
    from polydiff.medical.io import read_image

    img = read_image(path, expect_slice=True)
    t = torch.as_tensor(img.pixels, dtype=torch.float32)
    if img.kind == "nifti":  # NIfTI's first axis is x: show rows top-down
        t = torch.flip(t.T, dims=(0,))
    small = resize_square(t[None, None], size)
    lo, hi = unit_range(small)
    x = ((small - lo) / (hi - lo)).clamp(0, 1)
    return Slice(x=x, source=img, lo=lo, hi=hi)


def _same_file(inp: Path, out: Path) -> None:
    if out.exists() and out.resolve() == inp.resolve():
        raise CLIError(f"{out}: refusing to overwrite the input file; choose another output")


def _check_output(inp: Path, out: Path, kind: str) -> None:
    _same_file(inp, out)
    if out.is_dir():
        raise CLIError(f"{out}: is a folder; give an output file name")
    if kind == "nifti" and not out.name.endswith((".nii", ".nii.gz")):
        raise CLIError(f"{out}: a NIfTI input needs a .nii or .nii.gz output")
    if kind == "dicom" and out.name.endswith((".nii", ".nii.gz", ".png", ".json")):
        raise CLIError(f"{out}: a DICOM input needs a DICOM output (e.g. out.dcm)")


def write_like(sl: Slice, out: Path, x: Tensor, description: str) -> Path:
    """Write ``x`` (``[0, 1]``, the prior's grid) in the input's format and units."""
    from polydiff.medical.io import write_dicom, write_nifti

    pixels = sl.to_units(x)
    src = sl.source
    if src.kind == "dicom":
        ds = src.meta
        spacing = ds.get("PixelSpacing")
        if spacing is not None:
            h, w = src.pixels.shape[-2:]
            f = max(h, w) / pixels.shape[0]
            ds.PixelSpacing = [f"{float(spacing[0]) * f:.6g}", f"{float(spacing[1]) * f:.6g}"]
        return write_dicom(out, pixels, src, description=description)
    arr = np.flip(pixels, axis=0).T.copy()
    return write_nifti(out, arr, src)


def _figure(path: Path, panels: dict[str, Tensor], title: str) -> Path | None:
    from polydiff.core.plots import image_grid, plots_available

    if not plots_available():
        return None
    imgs = torch.cat([v.detach().cpu()[:1, 0] for v in panels.values()])
    return image_grid(path, imgs.numpy(), nrow=1, title=title + " | " + " / ".join(panels),
                      vmin=0.0, vmax=1.0, cell=1.6)


def _views(args: argparse.Namespace) -> int:
    if args.views is not None:
        if args.views < 1:
            raise CLIError(f"--views must be >= 1, got {args.views}")
        return int(args.views)
    return max(1, round(CT_FULL_VIEWS / args.acceleration))


# --------------------------------------------------------------------------- train-prior
def cmd_train_prior(args: argparse.Namespace) -> int:
    """``train-prior``: core's run-folder rule (:func:`polydiff.core.training.start_run`)."""
    from polydiff.core.training.runs import start_run

    with start_run(args.output, resume=args.resume, overwrite=args.overwrite,
                   settings_name=TRAIN_FILE,
                   outputs=("model", "prior.json", "loss.png", "held-out.json")) as run:
        if run.saved_settings is not None and args.config is None:
            args.config = str(run.saved_settings)
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from polydiff.medical.data import TEST_SLICES, template_slices
    from polydiff.medical.prior import PriorTrainSettings, held_out_loss, train_prior

    s = load_config(PriorTrainSettings, args.config, args.set)
    for key in ("steps", "batch_size", "lr", "seed", "device"):
        v = getattr(args, key, None)
        if v is not None:
            setattr(s, key, v)
    _positive("--steps", s.steps)
    _positive("--batch-size", s.batch_size)
    if not s.lr > 0:
        raise CLIError(f"--lr must be positive, got {s.lr}")
    out = Path(args.output)
    save_config(s, out / TRAIN_FILE)
    tic = time.perf_counter()
    prior = train_prior(out, s, resume=args.resume, progress=True)
    secs = time.perf_counter() - tic
    loss = held_out_loss(prior, template_slices(TEST_SLICES, prior.size))
    from polydiff.core.utils import atomic_write

    atomic_write(out / "held-out.json", json.dumps({"test_v_mse": loss}, indent=2) + "\n")
    fig = _loss_plot(out)
    emit({"run": str(out), "model": str(out), "steps": s.steps,
          "parameters": sum(p.numel() for p in prior.net.parameters()),
          "held_out_v_mse": round(loss, 5), "seconds": round(secs, 1),
          "figures": [str(fig)] if fig else []}, args.json)
    return 0


def _loss_plot(run: Path) -> Path | None:
    from polydiff.core.plots import line_plot, plots_available
    from polydiff.core.training.rundir import read_stats

    recs = read_stats(run)
    if len(recs) < 2 or not plots_available():
        return None
    return line_plot(run / "loss.png", {"training loss": ([r["step"] for r in recs],
                                                          [r["loss"] for r in recs])},
                     xlabel="step", ylabel="v-MSE", title="prior training loss", logy=True)


# --------------------------------------------------------------------------- reconstruct
def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``reconstruct``: simulate, reconstruct, write in the input's format."""
    from polydiff.medical.metrics import psnr, ssim
    from polydiff.medical.recon import acquisition_for, reconstruct, simulate, zero_filled

    inp, out = Path(args.input), Path(args.output)
    _same_file(inp, out)
    _positive("--acceleration", args.acceleration)
    _positive("--steps", args.steps)
    prior = load_prior(args.model)
    sl = load_slice(args.input, prior.size)
    _check_output(inp, out, sl.source.kind)
    setting = args.acceleration if args.modality == "mri" else _views(args)
    acq = acquisition_for(args.modality, setting, prior.size,
                          **({"seed": args.seed} if args.modality == "mri" else {}))
    y = simulate(acq, sl.x, seed=args.seed)
    tic = time.perf_counter()
    kw = {"steps": args.steps} if args.steps and args.method not in ("tv", "zero_filled") \
        else {}
    rec = reconstruct(args.method, acq, y, prior, seed=args.seed, **kw)
    secs = time.perf_counter() - tic
    zf = zero_filled(acq, y)
    write_like(sl, out, rec, f"polydiff {args.method} {acq.label}")
    fig = _figure(out.with_suffix("").with_suffix(".png") if out.name.endswith(".nii.gz")
                  else out.with_suffix(".png"),
                  {"input": sl.x, "zero-filled" if args.modality == "mri" else "FBP": zf,
                   args.method: rec}, acq.label)
    emit({"input": str(inp), "output": str(out), "modality": args.modality,
          "acquisition": acq.label, **acq.info, "method": args.method,
          "psnr_db": round(float(psnr(rec, sl.x)), 3), "ssim": round(float(ssim(rec, sl.x)), 4),
          "zero_filled_psnr_db": round(float(psnr(zf, sl.x)), 3),
          "seconds": round(secs, 2), "figure": str(fig) if fig else None,
          "note": "measurements simulated from the input slice (magnitude-only, single-coil)"},
         args.json)
    return 0


# --------------------------------------------------------------------------- subsample
def cmd_subsample(args: argparse.Namespace) -> int:
    """``subsample``: ADS or a fixed mask at the same budget."""
    from polydiff.core.operators import MaskedFourier, cartesian_line_mask
    from polydiff.medical.ads import ADSConfig, active_subsample, fixed_mask_reconstruct
    from polydiff.medical.metrics import psnr, ssim
    from polydiff.medical.recon import MRI_NOISE

    inp, out = Path(args.input), Path(args.output)
    _same_file(inp, out)
    _positive("--acceleration", args.acceleration, 1.0)
    _positive("--particles", args.particles, 2 if args.policy == "ads" else 1)
    _positive("--steps", args.steps, 2)
    prior = load_prior(args.model)
    sl = load_slice(args.input, prior.size)
    _check_output(inp, out, sl.source.kind)
    s = prior.size
    cfg = ADSConfig(acceleration=args.acceleration, particles=args.particles, steps=args.steps)
    g = torch.Generator().manual_seed(args.seed)
    full = MaskedFourier(torch.ones(s), (1, s, s))(sl.x)
    k = full + torch.complex(torch.randn(full.shape, generator=g),
                             torch.randn(full.shape, generator=g)) * (MRI_NOISE / math.sqrt(2))
    tic = time.perf_counter()
    if args.policy == "ads":
        res = active_subsample(prior, k, cfg, seed=args.seed)
        rec, mask, order = res.image, res.masks[0], res.order[0]
    else:
        mask = cartesian_line_mask(s, args.acceleration, kind=args.policy, seed=args.seed)
        rec, order = fixed_mask_reconstruct(prior, k, mask, cfg, seed=args.seed), []
    secs = time.perf_counter() - tic
    write_like(sl, out, rec, f"polydiff subsample {args.policy} {args.acceleration:g}x")
    mask_img = mask.reshape(1, 1, 1, s).expand(1, 1, s, s)
    fig = _figure(out.with_suffix(".png") if not out.name.endswith(".nii.gz")
                  else out.with_suffix("").with_suffix(".png"),
                  {"input": sl.x, "k-space lines": mask_img, args.policy: rec},
                  f"{args.policy}, {int(mask.sum())} lines")
    emit({"input": str(inp), "output": str(out), "policy": args.policy,
          "lines": int(mask.sum()), "acquired_order": order,
          "mask": [int(v) for v in mask.tolist()],
          "psnr_db": round(float(psnr(rec, sl.x)), 3), "ssim": round(float(ssim(rec, sl.x)), 4),
          "seconds": round(secs, 2), "figure": str(fig) if fig else None}, args.json)
    return 0


# --------------------------------------------------------------------------- anomaly
def cmd_anomaly(args: argparse.Namespace) -> int:
    """``anomaly``: maps for given slices, or the synthetic-lesion evaluation."""
    from polydiff.core.utils import atomic_write
    from polydiff.medical.anomaly import AnomalyConfig, anomaly_maps, image_scores

    if not 0.0 < args.t_start < 1.0:
        raise CLIError(f"--t-start must lie in (0, 1), got {args.t_start}")
    prior = load_prior(args.model)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    cfg = AnomalyConfig(t_start=args.t_start)
    if not args.inputs:
        from polydiff.medical.data import TEST_SLICES, split_indices, template_slices
        from polydiff.medical.evaluate import evaluate_anomaly

        res = evaluate_anomaly(prior, template_slices(TEST_SLICES, prior.size),
                               template_slices(split_indices("train"), prior.size), cfg=cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "anomaly.json", json.dumps(res, indent=2) + "\n")
        emit(res, args.json)
        return 0
    slices = [load_slice(p, prior.size) for p in args.inputs]   # all read before writing
    out.mkdir(parents=True, exist_ok=True)
    x = torch.cat([s.x for s in slices])
    maps, rec = anomaly_maps(prior, x, cfg, seed=args.seed)
    scores = image_scores(maps.cpu(), x)
    rows = []
    for i, p in enumerate(args.inputs):
        m = maps[i:i + 1].cpu()
        fig = _figure(out / f"{Path(p).name.split('.')[0]}_anomaly.png",
                      {"input": x[i:i + 1], "reconstruction": rec[i:i + 1].cpu(),
                       "anomaly map": m / m.max().clamp_min(1e-6)}, Path(p).name)
        rows.append({"input": p, "score": round(float(scores[i]), 5),
                     "figure": str(fig) if fig else None})
    res = {"t_start": args.t_start, "slices": rows}
    atomic_write(out / "anomaly.json", json.dumps(res, indent=2) + "\n")
    emit(res, args.json)
    return 0


# --------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: the reconstruction table on held-out and real slices."""
    from polydiff.medical.evaluate import evaluate_reconstruction, summarise, test_sets
    from polydiff.medical.recon import SOLVERS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in SOLVERS]
    if bad or not methods:
        raise CLIError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from "
                       f"{', '.join(SOLVERS)}")
    prior = load_prior(args.model)
    sets = test_sets(prior.size, n_template=2 if args.quick else None)
    overrides = {f"{m}/{s}": {"steps": 20} for m in ("mri", "ct")
                 for s in ("dps", "red_diff", "dc")} if args.quick else None
    rows = evaluate_reconstruction(prior, sets, {"mri": (4.0, 8.0), "ct": (30.0, 60.0)},
                                   methods, overrides=overrides)
    emit({"rows": [r.as_dict() for r in rows], **summarise(rows),
          "note": "measurements simulated (magnitude-only, single-coil)"}, args.json)
    return 0


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the tour demo."""
    from polydiff.apps.medical.demo import DEMO

    report = DEMO.demo(Path(args.output), quick=args.quick)
    emit({"title": report.title, "metrics": report.metrics, "units": report.units,
          "figures": [str(f) for f in report.figures], "text": report.text}, args.json)
    return 0
