"""Image-quality and detection metrics: PSNR, SSIM (Wang et al. 2004) and the area under the
ROC curve (rank statistic), all per image on ``(B, 1, H, W)`` batches in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "auroc", "nmse"]


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(range^2 / MSE)``."""
    mse = ((x - ref) ** 2).reshape(x.shape[0], -1).mean(1).double()
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def nmse(x: Tensor, ref: Tensor) -> Tensor:
    """Normalised MSE ``||x - ref||^2 / ||ref||^2`` per image (the fastMRI NMSE)."""
    d = ((x - ref) ** 2).reshape(x.shape[0], -1).sum(1).double()
    return d / (ref**2).reshape(ref.shape[0], -1).sum(1).double().clamp_min(1e-20)


def _gauss(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)[None, None]


def ssim(x: Tensor, ref: Tensor, data_range: float = 1.0, win: int = 7,
         sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Wang, Bovik, Sheikh & Simoncelli 2004, "Image Quality
    Assessment: From Error Visibility to Structural Similarity", eq. 13 with ``K1 = 0.01``,
    ``K2 = 0.03``), Gaussian window (``win`` x ``win``, ``sigma``) over the valid region,
    averaged over the image."""
    x, ref = x.double(), ref.double()
    w = _gauss(win, sigma, x.dtype).to(x.device)
    c = x.shape[1]
    w = w.expand(c, 1, win, win)

    def filt(v: Tensor) -> Tensor:
        return F.conv2d(v, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(ref)
    sxx = filt(x * x) - mx * mx
    syy = filt(ref * ref) - my * my
    sxy = filt(x * ref) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).reshape(x.shape[0], -1).mean(1)


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive): the
    Mann-Whitney statistic ``P(score_pos > score_neg) + P(tie) / 2``."""
    s = scores.flatten().double()
    y = labels.flatten().bool()
    pos, neg = s[y], s[~y]
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("AUROC needs both positive and negative examples")
    ranks = _average_ranks(s)
    r_pos = ranks[y].sum()
    n_p, n_n = pos.numel(), neg.numel()
    out = float((r_pos - n_p * (n_p + 1) / 2) / (n_p * n_n))
    if not math.isfinite(out):
        raise ValueError("AUROC is not finite")
    return out


def _average_ranks(s: Tensor) -> Tensor:
    """1-based ranks with ties averaged."""
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    n = s.numel()
    i = 0
    vals = sorted_s.tolist()
    pos = torch.arange(1, n + 1, dtype=torch.float64)
    while i < n:
        j = i
        while j + 1 < n and vals[j + 1] == vals[i]:
            j += 1
        ranks[order[i:j + 1]] = pos[i:j + 1].mean()
        i = j + 1
    return ranks
