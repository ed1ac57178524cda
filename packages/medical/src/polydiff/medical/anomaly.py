"""Anomaly detection with a diffusion prior of healthy anatomy, and minority guidance.

Anomalies. A slice is noised part of the way (to time ``t_start``) and denoised back by the
prior (core's DDIM); what the prior of healthy template anatomy cannot explain stays in the
residual ``|x - x_rec|``, averaged over ``repeats`` noise draws and smoothed
(AnoDDPM's partial diffusion, Wyatt et al. 2022, "AnoDDPM: Anomaly Detection with Denoising
Diffusion Probabilistic Models using Simplex Noise", Sec. 3, here with Gaussian noise). The
image score is the mean of the top 1% of the map inside the brain. Test data: synthetic
lesions (smooth bright or dark ellipses, :func:`add_lesions`) on held-out template slices;
every healthy slice also appears unchanged. Baselines: the residual to the nearest training
slice (an atlas look-up) and to a Gaussian-blurred copy.

Minority guidance. The minority score of an image, ``l(x0) = ||x0 - x0_hat(alpha_s x0 +
sigma_s eps)||^2`` at a fixed intermediate time ``s`` and fixed noise (Um, Lee & Ye 2024,
"Don't Play Favorites: Minority Guidance for Diffusion Models", eq. 5, with squared error in
place of LPIPS), is high for images the prior reconstructs badly: rare features. Its gradient
through the denoised estimate steers sampling towards them (the self-guided variant of Um & Ye
2024, "Self-Guided Generation of Minority Samples Using Diffusion Models"), as core's
:class:`~polydiff.core.guidance.GradientGuidance` with ``on="x0"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.medical.prior import DiffusionPrior

__all__ = ["add_lesions", "AnomalyConfig", "anomaly_maps", "image_scores", "blur",
           "nearest_neighbour_maps", "blur_maps", "minority_score", "minority_sample"]


def blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (reflect padding)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2)
                  / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    xp = F.pad(x, (r, r, r, r), mode="reflect")
    xp = F.conv2d(xp, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(xp, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def add_lesions(x: Tensor, seed: int = 0, *, radius: tuple[float, float] = (2.5, 6.0),
                contrast: tuple[float, float] = (0.25, 0.5)) -> tuple[Tensor, Tensor]:
    """One synthetic lesion per image: a smooth ellipse (random centre inside the brain,
    radii in ``radius`` pixels, random orientation) that brightens or darkens the tissue by
    a factor in ``contrast``. Returns the lesioned images and the lesion masks (0/1)."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    out, masks = x.clone(), torch.zeros_like(x)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype),
                            indexing="ij")
    for i in range(b):
        brain = blur(x[i:i + 1], 1.0)[0, 0] > 0.35
        cand = torch.nonzero(brain)
        if cand.numel() == 0:
            raise ValueError("an image without brain tissue cannot take a lesion")
        cy, cx = cand[int(torch.randint(len(cand), (1,), generator=g))].tolist()
        ra, rb = (radius[0] + (radius[1] - radius[0]) * torch.rand(2, generator=g)).tolist()
        th = float(torch.rand(1, generator=g)) * math.pi
        u = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
        v = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
        inside = ((u / ra) ** 2 + (v / rb) ** 2 <= 1).to(x.dtype)
        soft = blur(inside[None, None], 0.8)[0, 0]
        amp = float(contrast[0] + (contrast[1] - contrast[0]) * torch.rand(1, generator=g))
        sign = 1.0 if float(torch.rand(1, generator=g)) < 0.5 else -1.0
        out[i, 0] = (x[i, 0] * (1 + sign * amp * soft) + 0.15 * sign * soft * brain).clamp(0, 1)
        masks[i, 0] = (soft > 0.5).to(x.dtype) * brain.to(x.dtype)
    return out, masks


@dataclass(frozen=True)
class AnomalyConfig:
    """Partial-diffusion settings: noise to ``t_start``, ``steps`` DDIM steps back, averaged
    over ``repeats`` noise draws, maps smoothed with a Gaussian of ``smooth`` pixels."""

    t_start: float = 0.35
    steps: int = 10
    repeats: int = 2
    smooth: float = 1.0


@torch.no_grad()
def anomaly_maps(prior: DiffusionPrior, x: Tensor, cfg: AnomalyConfig = AnomalyConfig(),
                 seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(maps, reconstructions)``: the smoothed residual maps of partial diffusion and the
    mean reconstruction (module docstring)."""
    from polydiff.core.grids import time_grid
    from polydiff.core.samplers import sample_ddim

    proc = prior.process
    g = torch.Generator(device=prior.device).manual_seed(seed)
    u0 = prior.to_model(x.to(prior.device))
    ts = time_grid(proc, cfg.steps, "uniform", t_start=cfg.t_start, t_end=0.0)
    recs = []
    for _ in range(cfg.repeats):
        t = torch.full((x.shape[0],), cfg.t_start, dtype=torch.float64, device=prior.device)
        ut, _ = proc.marginal(u0, t, generator=g)
        recs.append(prior.from_model(sample_ddim(prior.denoiser, ut, ts, disable=True)))
    rec = torch.stack(recs).mean(0).clamp(0, 1)
    return blur((x.to(rec) - rec).abs(), cfg.smooth), rec


def image_scores(maps: Tensor, x: Tensor, top: float = 0.01) -> Tensor:
    """Mean of the top ``top`` fraction of each map inside the brain (``x > 0.05`` after a
    small blur), ``(B,)``."""
    brain = blur(x, 1.0) > 0.05
    out = []
    for m, bm in zip(maps, brain):
        v = m[bm]
        if v.numel() == 0:
            v = m.flatten()
        k = max(1, int(round(top * v.numel())))
        out.append(v.topk(k).values.mean())
    return torch.stack(out)


def nearest_neighbour_maps(x: Tensor, atlas: Tensor, smooth: float = 1.0) -> Tensor:
    """Residual to the closest (L2) image of ``atlas`` ``(N, 1, H, W)``: a look-up baseline."""
    d = torch.cdist(x.flatten(1).double(), atlas.flatten(1).double())
    nn_img = atlas[d.argmin(1)]
    return blur((x - nn_img).abs(), smooth)


def blur_maps(x: Tensor, sigma: float = 2.0, smooth: float = 1.0) -> Tensor:
    """Residual to a Gaussian-blurred copy: a model-free baseline."""
    return blur((x - blur(x, sigma)).abs(), smooth)


def minority_score(prior: DiffusionPrior, u0: Tensor, *, s: float = 0.5,
                   seed: int = 0) -> Tensor:
    """The minority score ``||u0 - u0_hat(alpha_s u0 + sigma_s eps)||^2`` (mean over pixels)
    of model-space images ``u0`` at time ``s`` with fixed seeded noise; differentiable in
    ``u0``."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(u0.shape, generator=g).to(u0)
    t = torch.full((u0.shape[0],), s, dtype=torch.float64, device=u0.device)
    a, sg = prior.process.alpha(t[:1]).item(), prior.process.sigma(t[:1]).item()
    rec = prior.denoiser.x0(a * u0 + sg * eps, t)
    return ((u0 - rec) ** 2).flatten(1).mean(1)


@torch.no_grad()
def minority_sample(prior: DiffusionPrior, n: int, *, scale: float = 0.0, steps: int = 30,
                    s: float = 0.5, seed: int = 0) -> Tensor:
    """``n`` samples in [0, 1], guided towards high minority score with strength ``scale``
    (0: the unguided sampler with the same noise), DDPM ancestral steps."""
    from polydiff.core.denoiser import Denoiser
    from polydiff.core.grids import time_grid
    from polydiff.core.guidance import GradientGuidance
    from polydiff.core.samplers import sample_ddpm

    den: Denoiser = prior.denoiser
    if scale:
        den = GradientGuidance(prior.denoiser,
                               lambda u: minority_score(prior, u, s=s, seed=seed + 1),
                               scale=scale, on="x0")
    g = torch.Generator(device=prior.device).manual_seed(seed)
    x = prior.process.prior_sample((n, 1, prior.size, prior.size), generator=g,
                                   device=prior.device)
    u = sample_ddpm(den, x, time_grid(prior.process, steps, "uniform", t_end=0.0), generator=g,
                    disable=True)
    return prior.from_model(u).clamp(0, 1)
