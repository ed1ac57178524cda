"""The evaluation shared by ``polydiff-med evaluate``, the tour demo and the benchmark:
held-out test sets, reconstruction tables, active subsampling against fixed masks at equal
budget, and anomaly-detection AUROC.

Test sets (:func:`test_sets`): ``template`` (the held-out axial template slices), ``real-mr``
(pydicom's MR slices) and ``real-ct`` (pydicom's CT slices). MRI is simulated on ``template``
and ``real-mr``, CT on ``template`` and ``real-ct`` (each modality on images of its own kind
plus the template).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from polydiff.medical.prior import DiffusionPrior

__all__ = ["test_sets", "RECON_SETS", "ReconRow", "evaluate_reconstruction", "summarise",
           "evaluate_ads", "evaluate_anomaly", "evaluate_minority"]

#: Which test sets each modality is simulated on.
RECON_SETS: dict[str, tuple[str, ...]] = {"mri": ("template", "real-mr"),
                                          "ct": ("template", "real-ct")}


def test_sets(size: int = 64, n_template: int | None = None) -> dict[str, tuple[Tensor,
                                                                               list[str]]]:
    """``{name: (images (n, 1, size, size) in [0, 1], labels)}`` (module docstring)."""
    from polydiff.medical.data import TEST_SLICES, real_slices, template_slices

    zs = TEST_SLICES if n_template is None else TEST_SLICES[:: max(1, len(TEST_SLICES)
                                                                  // n_template)][:n_template]
    out = {"template": (template_slices(zs, size), [f"z={z}" for z in zs])}
    for mod in ("mr", "ct"):
        imgs, names = real_slices(mod, size)
        out[f"real-{mod}"] = (imgs, names)
    return out


@dataclass
class ReconRow:
    """One (modality, setting, set, method) cell: mean PSNR/SSIM over images and seeds."""

    modality: str
    setting: float
    dataset: str
    method: str
    psnr: float
    ssim: float
    psnr_std: float
    n: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "setting": self.setting, "set": self.dataset,
                "method": self.method, "psnr_db": round(self.psnr, 3),
                "ssim": round(self.ssim, 4), "psnr_std_db": round(self.psnr_std, 3),
                "images": self.n, "seconds": round(self.seconds, 2)}


Supervised = dict[str, Callable[[Tensor], Tensor]]


def evaluate_reconstruction(prior: DiffusionPrior, sets: dict[str, tuple[Tensor, list[str]]],
                            settings: dict[str, Sequence[float]], methods: Sequence[str], *,
                            seeds: Sequence[int] = (0,), supervised: Supervised | None = None,
                            overrides: dict[str, dict[str, Any]] | None = None,
                            log: Callable[[str], None] | None = None) -> list[ReconRow]:
    """PSNR/SSIM of every method (``recon.SOLVERS`` plus ``"supervised"`` when a network per
    modality is given in ``supervised``) for every modality setting (MRI accelerations, CT
    view counts) on the modality's sets. Seeds vary the MRI mask, the measurement noise and
    the samplers' noise."""
    from polydiff.medical.metrics import psnr, ssim
    from polydiff.medical.recon import acquisition_for, reconstruct, simulate

    rows: list[ReconRow] = []
    for mod, values in settings.items():
        for setting in values:
            for name in RECON_SETS[mod]:
                if name not in sets:
                    continue
                x = sets[name][0].to(prior.device)
                for method in methods:
                    ps, ss, secs = [], [], 0.0
                    for seed in seeds:
                        acq = acquisition_for(mod, setting, prior.size,
                                              **({"seed": seed} if mod == "mri" else {}))
                        acq.op.to(prior.device)
                        y = simulate(acq, x.cpu(), seed=seed).to(prior.device)
                        tic = time.perf_counter()
                        if method == "supervised":
                            if not supervised or mod not in supervised:
                                continue
                            from polydiff.medical.recon import zero_filled

                            with torch.no_grad():
                                r = supervised[mod](zero_filled(acq, y))
                        else:
                            r = reconstruct(method, acq, y, prior, seed=seed,
                                            **(overrides or {}).get(f"{mod}/{method}", {}))
                        secs += time.perf_counter() - tic
                        ps.append(psnr(r.cpu(), x.cpu()))
                        ss.append(ssim(r.cpu(), x.cpu()))
                    if not ps:
                        continue
                    p, s = torch.cat(ps), torch.cat(ss)
                    row = ReconRow(mod, float(setting), name, method, float(p.mean()),
                                   float(s.mean()), float(p.std()) if p.numel() > 1 else 0.0,
                                   int(p.numel()), secs)
                    rows.append(row)
                    if log is not None:
                        log(f"{mod} {setting:g} {name:9s} {method:12s} {row.psnr:6.2f} dB "
                            f"SSIM {row.ssim:.3f} ({secs:.1f} s)")
    return rows


def summarise(rows: list[ReconRow], methods: Sequence[str] = ("dps", "red_diff", "dc"),
              versus: Sequence[str] = ("zero_filled", "tv")) -> dict[str, Any]:
    """Does the best diffusion solver beat each baseline in ``versus`` on every
    (modality, setting, set) cell, by PSNR? Returns the per-cell margins and a verdict."""
    cells: dict[tuple[str, float, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r.modality, r.setting, r.dataset), {})[r.method] = r.psnr
    out: list[dict[str, Any]] = []
    ok = True
    for (mod, setting, name), vals in cells.items():
        diff = {m: vals[m] for m in methods if m in vals}
        if not diff:
            continue
        best = max(diff, key=lambda k: diff[k])
        entry: dict[str, Any] = {"modality": mod, "setting": setting, "set": name,
                                 "best_diffusion": best}
        for v in versus:
            if v in vals:
                margin = diff[best] - vals[v]
                entry[f"margin_vs_{v}_db"] = round(margin, 3)
                ok = ok and margin > 0
        out.append(entry)
    return {"cells": out, "diffusion_beats_baselines_everywhere": ok}


def evaluate_ads(prior: DiffusionPrior, images: Tensor, *, acceleration: float = 8.0,
                 particles: int = 4, steps: int = 60, seeds: Sequence[int] = (0,),
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """ADS against random and equispaced masks with the same budget and centre, the same
    sampler (DPS) and particle count: PSNR/SSIM of the particle means (per policy)."""
    from polydiff.core.operators import MaskedFourier, cartesian_line_mask
    from polydiff.medical.ads import ADSConfig, active_subsample, fixed_mask_reconstruct
    from polydiff.medical.metrics import psnr, ssim
    from polydiff.medical.recon import MRI_NOISE

    s = prior.size
    cfg = ADSConfig(acceleration=acceleration, particles=particles, steps=steps)
    res: dict[str, dict[str, list[Tensor]]] = {k: {"psnr": [], "ssim": []}
                                               for k in ("ads", "random", "equispaced")}
    x = images.to(prior.device)
    masks: dict[str, Tensor] = {}
    for seed in seeds:
        g = torch.Generator().manual_seed(10_000 + seed)
        full = MaskedFourier(torch.ones(s), (1, s, s)).to(prior.device)(x)
        noise = torch.complex(torch.randn(full.shape, generator=g),
                              torch.randn(full.shape, generator=g)) * (MRI_NOISE / 2**0.5)
        truth_k = full + noise.to(full)
        tic = time.perf_counter()
        ads = active_subsample(prior, truth_k, cfg, seed=seed)
        outs = {"ads": ads.image}
        masks["ads"] = ads.masks
        for kind in ("random", "equispaced"):
            m = cartesian_line_mask(s, acceleration, center_fraction=cfg.center_fraction,
                                    kind=kind, seed=seed)
            masks[kind] = m
            outs[kind] = fixed_mask_reconstruct(prior, truth_k, m.to(prior.device), cfg,
                                                seed=seed)
        for k, r in outs.items():
            res[k]["psnr"].append(psnr(r.cpu(), x.cpu()))
            res[k]["ssim"].append(ssim(r.cpu(), x.cpu()))
        if log is not None:
            log(f"ADS seed {seed}: {time.perf_counter() - tic:.1f} s")
    out: dict[str, Any] = {"acceleration": acceleration,
                           "lines": int(masks["random"].sum()), "particles": particles,
                           "steps": steps, "images": int(x.shape[0]), "seeds": len(seeds)}
    for k, v in res.items():
        out[k] = {"psnr_db": round(float(torch.cat(v["psnr"]).mean()), 3),
                  "ssim": round(float(torch.cat(v["ssim"]).mean()), 4)}
    out["ads_minus_random_db"] = round(out["ads"]["psnr_db"] - out["random"]["psnr_db"], 3)
    out["ads_minus_equispaced_db"] = round(out["ads"]["psnr_db"]
                                           - out["equispaced"]["psnr_db"], 3)
    out["ads_masks"] = masks["ads"].tolist()
    return out


def evaluate_anomaly(prior: DiffusionPrior, images: Tensor, atlas: Tensor, *,
                     seeds: Sequence[int] = (0, 1), cfg: Any = None) -> dict[str, Any]:
    """Image- and pixel-level AUROC of partial-diffusion anomaly maps against the
    nearest-training-slice and blur baselines, on held-out slices with and without one
    synthetic lesion each (``seeds`` give different lesions)."""
    from polydiff.medical.anomaly import (
        AnomalyConfig,
        add_lesions,
        anomaly_maps,
        blur_maps,
        image_scores,
        nearest_neighbour_maps,
    )
    from polydiff.medical.metrics import auroc

    cfg = cfg or AnomalyConfig()
    healthy = images
    sick, masks = [], []
    for seed in seeds:
        les, m = add_lesions(images, seed=seed)
        sick.append(les)
        masks.append(m)
    x = torch.cat([healthy, *sick])
    pix = torch.cat([torch.zeros_like(healthy), *masks])
    labels = torch.cat([torch.zeros(healthy.shape[0]), torch.ones(x.shape[0]
                                                                  - healthy.shape[0])])
    maps = {"diffusion": anomaly_maps(prior, x, cfg)[0].cpu(),
            "nearest_training_slice": nearest_neighbour_maps(x, atlas),
            "blur_residual": blur_maps(x)}
    brain = x > 0.05
    out: dict[str, Any] = {"healthy": int(healthy.shape[0]),
                           "lesioned": int(x.shape[0] - healthy.shape[0])}
    for k, m in maps.items():
        out[k] = {"image_auroc": round(auroc(image_scores(m, x), labels), 4),
                  "pixel_auroc": round(auroc(m[brain], pix[brain]), 4)}
    return out


def evaluate_minority(prior: DiffusionPrior, atlas: Tensor, *, n: int = 8,
                      scales: Sequence[float] = (0.0, 200.0), steps: int = 30,
                      seed: int = 0) -> dict[str, Any]:
    """Minority guidance: the minority score of samples and their distance to the nearest
    training slice, unguided (scale 0) and guided, from the same noise."""
    from polydiff.medical.anomaly import minority_sample, minority_score

    out: dict[str, Any] = {"samples": n, "steps": steps}
    for sc in scales:
        x = minority_sample(prior, n, scale=sc, steps=steps, seed=seed)
        with torch.no_grad():
            ms = minority_score(prior, prior.to_model(x), seed=seed + 7).cpu()
        d = torch.cdist(x.cpu().flatten(1).double(), atlas.flatten(1).double()).min(1).values
        out[f"scale={sc:g}"] = {"minority_score": round(float(ms.mean()), 5),
                                "nn_distance": round(float(d.mean()), 4)}
    return out
