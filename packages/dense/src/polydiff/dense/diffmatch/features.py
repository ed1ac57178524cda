"""Dense features, the global matching cost and what DiffMatch derives from it.

Nam et al. (2024), "Diffusion Model for Dense Matching" (DiffMatch), Sec. 4.2: features of
both images give a global cost volume ``C(i, j) = <f_A(i), f_B(j)>`` over all pairs of
positions (cosine similarity of L2-normalised features); its argmax is the initial flow
``F_init``; a local cost ``C_l`` (the cost in a ``(2r + 1)^2`` window around ``F_init``)
is injected into the denoiser beside ``F_init``.

Two feature extractors:

* :class:`FeatureNet`: a small CNN trained in this package (:func:`feature_loss`, a
  contrastive loss over the global cost: softmax over every position of B, cross-entropy
  on the true match, as in dense-descriptor learning), giving features at 1/4 (``coarse``,
  the cost volume) and 1/2 (``fine``, the super-resolution stage) of the image size;
* :func:`daisy_features`: classical DAISY descriptors (Tola et al. 2010,
  ``skimage.feature.daisy``) on the same 1/4 grid, the hand-crafted alternative.

Coordinates: a grid of ``(h, w)`` cells spans the image from corner to corner (cell ``j``
sits at image ``x = j (W - 1) / (w - 1)``, ``align_corners=True`` everywhere), so flows move
between resolutions with :func:`~polydiff.dense.flow.resize_flow`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.nn.hub import PretrainedMixin, register_model
from polydiff.dense.flow import pixel_grid, warp

__all__ = ["FeatureNetConfig", "FeatureNet", "standardize", "global_cost", "argmax_flow",
           "local_cost", "feature_loss", "daisy_features"]


def standardize(img: Tensor, eps: float = 1e-3) -> Tensor:
    """Per-image zero mean and unit standard deviation (contrast and brightness invariance)."""
    dims = tuple(range(1, img.ndim))
    mean = img.mean(dim=dims, keepdim=True)
    std = img.std(dim=dims, keepdim=True)
    return (img - mean) / (std + eps)


@dataclass
class FeatureNetConfig:
    """Widths of :class:`FeatureNet`: ``widths`` at 1/2, 1/4 and the dilated 1/4 stage;
    ``dim`` and ``fine_dim`` the output feature sizes at 1/4 and 1/2."""

    widths: tuple[int, int, int] = (16, 32, 48)
    dim: int = 48
    fine_dim: int = 16

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        if len(self.widths) != 3 or min(self.widths) < 1 or self.dim < 1 or self.fine_dim < 1:
            raise ValueError("FeatureNetConfig needs three positive widths and positive dims")


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                                   dilation=dilation), nn.GroupNorm(min(8, cout), cout),
                         nn.GELU())


@register_model
class FeatureNet(PretrainedMixin, nn.Module):
    """A small fully convolutional feature extractor for grey images ``(B, 1, H, W)`` (``H``
    and ``W`` multiples of 4): returns L2-normalised ``(coarse (B, dim, H/4, W/4), fine
    (B, fine_dim, H/2, W/2))``. Dilated convolutions at 1/4 widen the receptive field
    (about 60 pixels) so texture-poor regions still get distinctive features."""

    config_class = FeatureNetConfig

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = cfg = config
        w0, w1, w2 = cfg.widths
        self.stem = nn.Sequential(_block(1, w0, stride=2), _block(w0, w0))
        self.fine_head = nn.Conv2d(w0, cfg.fine_dim, 1)
        self.down = nn.Sequential(_block(w0, w1, stride=2), _block(w1, w1))
        self.context = nn.Sequential(_block(w1, w2, dilation=2), _block(w2, w2, dilation=4),
                                     _block(w2, w2, dilation=8))
        self.head = nn.Conv2d(w1 + w2, cfg.dim, 1)

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(standardize(img))
        fine = F.normalize(self.fine_head(x), dim=1)
        d = self.down(x)
        coarse = self.head(torch.cat([d, self.context(d)], dim=1))
        return F.normalize(coarse, dim=1), fine


def global_cost(fa: Tensor, fb: Tensor) -> Tensor:
    """The global cost volume ``(B, h, w, h', w')``: ``<fa(i), fb(j)>`` for every position
    ``i`` of A and ``j`` of B (cosine similarity for normalised features)."""
    return torch.einsum("bchw,bcxy->bhwxy", fa, fb)


def argmax_flow(cost: Tensor, temperature: float = 0.02) -> Tensor:
    """The flow (``(B, 2, h, w)``, cells) to the best-matching position of B for every position
    of A (both grids of the same size): the argmax of ``cost`` (``(B, h, w, h', w')``), refined to a
    sub-cell position by a soft-argmax over its 3x3 neighbourhood (softmax at
    ``temperature``)."""
    b, h, w, h2, w2 = cost.shape
    if (h, w) != (h2, w2):
        raise ValueError(f"both grids must have the same size, got {(h, w)} and {(h2, w2)}")
    flat = cost.reshape(b, h, w, h2 * w2)
    idx = flat.argmax(-1)
    iy, ix = (idx // w2).float(), (idx % w2).float()
    # sub-cell refinement: soft-argmax over the 3x3 window around the argmax
    vals, offs = [], []
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            y, x = iy.long() + oy, ix.long() + ox
            inside = (y >= 0) & (y < h2) & (x >= 0) & (x < w2)
            j = (y.clamp(0, h2 - 1) * w2 + x.clamp(0, w2 - 1))[..., None]
            v = torch.gather(flat, -1, j)[..., 0]
            vals.append(torch.where(inside, v, torch.full_like(v, -1e4)))
            offs.append((ox, oy))
    wts = torch.softmax(torch.stack(vals, -1) / temperature, dim=-1)
    off = torch.tensor(offs, dtype=cost.dtype, device=cost.device)   # (9, 2)
    dx, dy = (wts * off[:, 0]).sum(-1), (wts * off[:, 1]).sum(-1)
    grid = pixel_grid(h, w, cost.device)
    return torch.stack([ix + dx, iy + dy], dim=1) - grid[None]


def local_cost(fa: Tensor, fb: Tensor, flow: Tensor, radius: int) -> Tensor:
    """The local cost ``(B, (2r + 1)^2, h, w)``: ``<fa(x), fb(x + flow(x) + d)>`` for every
    offset ``d`` in the ``(2r + 1)^2`` window (cells; B's features sampled bilinearly, zero
    outside B). Equals the global cost sampled around ``flow``, without building it."""
    out = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shift = torch.tensor([dx, dy], dtype=flow.dtype, device=flow.device)
            fbw = warp(fb, flow + shift[None, :, None, None], padding_mode="zeros")
            out.append((fa * fbw).sum(1))
    return torch.stack(out, dim=1)


def feature_loss(net: FeatureNet, a: Tensor, b: Tensor, flow: Tensor, valid: Tensor,
                 generator: torch.Generator | None = None, *, temperature: float = 0.05,
                 fine_points: int = 256) -> Tensor:
    """Contrastive loss of :class:`FeatureNet` on pairs with exact flow (image pixels):
    at 1/4, every valid position of A against every position of B (cross-entropy of the
    softmax over ``cost / temperature`` towards the cell nearest the true match); at 1/2 the
    same for ``fine_points`` random positions per image."""
    ca, fa = net(a)
    cb, fb = net(b)
    total = a.new_zeros(())
    for fa_, fb_, pts in ((ca, cb, None), (fa, fb, fine_points)):
        bsz, c, h, w = fa_.shape
        big_h, big_w = flow.shape[-2:]
        sx, sy = (w - 1) / (big_w - 1), (h - 1) / (big_h - 1)
        small = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
        ok = F.interpolate(valid[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5
        tgt = pixel_grid(h, w, flow.device)[None] + torch.stack([small[:, 0] * sx,
                                                                   small[:, 1] * sy], 1)
        tx, ty = tgt[:, 0].round().long(), tgt[:, 1].round().long()
        ok &= (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        label = (ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1)).reshape(bsz, -1)
        qa = fa_.reshape(bsz, c, -1)
        keep = ok.reshape(bsz, -1)
        if pts is not None and pts < h * w:
            dev = generator.device if generator is not None else None
            sel = torch.stack([torch.randperm(h * w, generator=generator, device=dev)[:pts]
                               for _ in range(bsz)]).to(flow.device)
            qa = torch.gather(qa, 2, sel[:, None].expand(bsz, c, pts))
            label, keep = torch.gather(label, 1, sel), torch.gather(keep, 1, sel)
        logits = torch.einsum("bcn,bcm->bnm", qa, fb_.reshape(bsz, c, -1)) / temperature
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), label.reshape(-1),
                             reduction="none")
        total = total + (ce * keep.reshape(-1)).sum() / keep.sum().clamp_min(1)
    return total


def daisy_features(img: np.ndarray, step: int = 4, radius: int = 12) -> Tensor:
    """DAISY descriptors (Tola et al. 2010, ``skimage.feature.daisy``) of a grey image
    ``(H, W)`` on the 1/4 grid: ``(1, D, H/4, W/4)`` float32, L2-normalised. The image is
    reflect-padded by ``radius`` so every grid cell gets a descriptor."""
    from skimage.feature import daisy

    pad = np.pad(np.asarray(img, np.float64), radius, mode="reflect")
    desc = daisy(pad, step=step, radius=radius, rings=2, histograms=6, orientations=8,
                 normalization="l2")
    h, w = img.shape[0] // step, img.shape[1] // step
    out = torch.from_numpy(np.ascontiguousarray(desc[:h, :w].transpose(2, 0, 1))).float()
    return F.normalize(out[None], dim=1)
