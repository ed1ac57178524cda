"""Random geometric warps with exact dense flow: homographies, affine maps and thin-plate
splines, as in the synthetic training pairs of GLU-Net / DiffMatch (Truong et al. 2020; Nam
et al. 2024, "Diffusion Model for Dense Matching", Sec. 5: homography, affine and TPS
transformations of real images).

A mapping ``T`` sends every pixel ``x`` of image A to its match ``T(x)`` in image B (pixels of
B). A pair is made from one photograph ``P`` by choosing B's window on it, ``B(y) = P(o + z
y)``, and sampling A as ``A(x) = B(T(x)) = P(o + z T(x))`` straight from the photograph (so
A has content where ``T(x)`` leaves B's frame). Each random transformation is evaluated on a
coarse lattice of control points (``control`` per side, 33 by default) and extended to every
pixel by bilinear interpolation: that interpolated map *is* the pair's mapping, so the flow
from A to B, ``T(x) - x``, is exact (affine maps are reproduced exactly; homographies and
splines to well under a pixel) and generating a pair costs little. The flow is *valid*
where ``T(x)`` falls inside B.

Everything random comes from a ``torch.Generator``, so a pair is a function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.dense.flow import pixel_grid

__all__ = ["WARP_KINDS", "WarpStrength", "homography_from_points", "apply_homography",
           "random_affine", "random_homography", "random_tps", "tps_mapping", "random_mapping",
           "control_grid",
           "PairBatch", "make_pairs", "photometric_jitter"]

WARP_KINDS: tuple[str, ...] = ("homography", "affine", "tps")


@dataclass(frozen=True)
class WarpStrength:
    """Ranges of the random warps, as fractions of the image size where they are lengths.

    Attributes:
        rotation_deg: affine rotation, uniform in ``+-rotation_deg``.
        log_scale: log of the isotropic scale, uniform in ``+-log_scale``.
        aniso: log of the x/y scale ratio, uniform in ``+-aniso``.
        shear: shear, uniform in ``+-shear``.
        translation: translation, uniform in ``+-translation`` (fraction of the size).
        corner: homography corner offsets, uniform in ``+-corner`` (fraction of the size).
        tps_sigma: standard deviation of the thin-plate spline control-point offsets.
        tps_grid: control points per side of the spline's grid.
        zoom: range of photograph pixels per image pixel (B's window on the photograph).
    """

    rotation_deg: float = 20.0
    log_scale: float = 0.2
    aniso: float = 0.08
    shear: float = 0.08
    translation: float = 0.12
    corner: float = 0.1
    tps_sigma: float = 0.045
    tps_grid: int = 4
    zoom: tuple[float, float] = (0.6, 1.2)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


# --------------------------------------------------------------------------- homographies
def homography_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """The 3x3 homography ``H`` (``H[2, 2] = 1``) with ``H src_i ~ dst_i`` for four point
    pairs ``(4, 2)``: the direct linear transform, an 8x8 solve in float64."""
    src, dst = src.double(), dst.double()
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist()):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                           torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, torch.ones(1, dtype=torch.float64)]).reshape(3, 3)


def apply_homography(h: Tensor, pts: Tensor) -> Tensor:
    """Map ``(2, ...)`` points by the homography ``h``."""
    shape = pts.shape
    p = pts.reshape(2, -1).double()
    q = h.double() @ torch.cat([p, torch.ones_like(p[:1])])
    return (q[:2] / q[2:]).reshape(shape)


def _affine_matrix(gen: torch.Generator, s: WarpStrength, size: tuple[int, int],
                   scale: float = 1.0) -> Tensor:
    """A random affine map about the image centre, as a 3x3 matrix on pixel coordinates."""
    h, w = size
    ang = math.radians(_uniform(gen, -s.rotation_deg, s.rotation_deg) * scale)
    sc = math.exp(_uniform(gen, -s.log_scale, s.log_scale) * scale)
    an = math.exp(_uniform(gen, -s.aniso, s.aniso) * scale)
    sh = _uniform(gen, -s.shear, s.shear) * scale
    tx = _uniform(gen, -s.translation, s.translation) * w * scale
    ty = _uniform(gen, -s.translation, s.translation) * h * scale
    rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]],
                       dtype=torch.float64)
    lin = rot @ torch.tensor([[sc * an, sh], [0.0, sc / an]], dtype=torch.float64)
    c = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64)
    m = torch.eye(3, dtype=torch.float64)
    m[:2, :2] = lin
    m[:2, 2] = c - lin @ c + torch.tensor([tx, ty], dtype=torch.float64)
    return m


def control_grid(size: tuple[int, int], control: int = 33) -> Tensor:
    """``(2, control, control)`` pixel coordinates of a regular lattice spanning an image of
    ``size`` from corner to corner."""
    h, w = size
    gy, gx = torch.meshgrid(torch.linspace(0, h - 1, control, dtype=torch.float64),
                            torch.linspace(0, w - 1, control, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([gx, gy])


def random_affine(gen: torch.Generator, size: tuple[int, int],
                  strength: WarpStrength = WarpStrength(), control: int = 33) -> Tensor:
    """Random affine transformation (rotation, scale, anisotropy, shear, translation about
    the centre) at the ``(2, control, control)`` lattice of :func:`control_grid`."""
    m = _affine_matrix(gen, strength, size)
    return apply_homography(m, control_grid(size, control))


def random_homography(gen: torch.Generator, size: tuple[int, int],
                      strength: WarpStrength = WarpStrength(), control: int = 33) -> Tensor:
    """A random homography at the lattice of :func:`control_grid`: a milder affine map
    whose four image
    corners are then moved independently by up to ``strength.corner`` of the size."""
    h, w = size
    m = _affine_matrix(gen, strength, size, scale=0.6)
    corners = torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=torch.float64)
    moved = apply_homography(m, corners.T).T
    jitter = (torch.rand(4, 2, generator=gen, dtype=torch.float64) * 2 - 1)
    moved = moved + jitter * strength.corner * torch.tensor([w, h], dtype=torch.float64)
    hom = homography_from_points(corners, moved)
    return apply_homography(hom, control_grid(size, control))


# --------------------------------------------------------------------------- thin-plate splines
def _tps_kernel(r2: Tensor) -> Tensor:
    """``U(r) = r^2 log r^2`` (the thin-plate radial basis, up to a factor), 0 at r = 0."""
    return torch.where(r2 > 0, r2 * torch.log(r2.clamp_min(1e-300)), torch.zeros_like(r2))


def tps_mapping(ctrl: Tensor, offsets: Tensor, points: Tensor,
                regularization: float = 0.0) -> Tensor:
    """The thin-plate spline mapping at ``points`` (``(2, ...)`` pixels) that moves the
    control points ``ctrl``
    (``(K, 2)`` pixels) by ``offsets`` (``(K, 2)``) and interpolates with minimal bending
    energy (Bookstein 1989): ``T(x) = x + a0 + A x + sum_k w_k U(|x - c_k|)``."""
    scale = float(points.abs().max()) or 1.0
    c = ctrl.double() / scale
    k = c.shape[0]
    kmat = _tps_kernel(((c[:, None] - c[None]) ** 2).sum(-1))
    kmat = kmat + regularization * torch.eye(k, dtype=torch.float64)
    p = torch.cat([torch.ones(k, 1, dtype=torch.float64), c], 1)
    top = torch.cat([kmat, p], 1)
    bottom = torch.cat([p.T, torch.zeros(3, 3, dtype=torch.float64)], 1)
    rhs = torch.cat([offsets.double() / scale, torch.zeros(3, 2, dtype=torch.float64)])
    coef = torch.linalg.solve(torch.cat([top, bottom]), rhs)          # (K + 3, 2)
    grid = points.double().reshape(2, -1).T / scale                    # (N, 2)
    u = _tps_kernel(((grid[:, None] - c[None]) ** 2).sum(-1))          # (N, K)
    disp = u @ coef[:k] + torch.cat([torch.ones(len(grid), 1, dtype=torch.float64), grid],
                                    1) @ coef[k:]
    return (grid + disp).T.reshape(points.shape) * scale


def random_tps(gen: torch.Generator, size: tuple[int, int],
               strength: WarpStrength = WarpStrength(), control: int = 33) -> Tensor:
    """A random thin-plate spline at the lattice of :func:`control_grid` (a ``tps_grid`` x
    ``tps_grid``
    grid of control points moved by Gaussian offsets) composed after a mild affine map."""
    h, w = size
    n = strength.tps_grid
    gy, gx = torch.meshgrid(torch.linspace(0, h - 1, n, dtype=torch.float64),
                            torch.linspace(0, w - 1, n, dtype=torch.float64), indexing="ij")
    ctrl = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    off = torch.randn(n * n, 2, generator=gen, dtype=torch.float64) * strength.tps_sigma
    off = off * torch.tensor([w, h], dtype=torch.float64)
    spline = tps_mapping(ctrl, off, control_grid(size, control))
    m = _affine_matrix(gen, strength, size, scale=0.6)
    return apply_homography(m, spline)


def random_mapping(kind: str, gen: torch.Generator, size: tuple[int, int],
                   strength: WarpStrength = WarpStrength(), control: int = 33) -> Tensor:
    """A random ``(2, H, W)`` mapping of ``kind`` (one of :data:`WARP_KINDS`): the
    transformation at a ``control`` x ``control`` lattice, interpolated bilinearly to every
    pixel (module docstring)."""
    if kind == "homography":
        lattice = random_homography(gen, size, strength, control)
    elif kind == "affine":
        lattice = random_affine(gen, size, strength, control)
    elif kind == "tps":
        lattice = random_tps(gen, size, strength, control)
    else:
        raise ValueError(f"unknown warp kind {kind!r}; expected one of {WARP_KINDS}")
    return F.interpolate(lattice[None], size=size, mode="bilinear", align_corners=True)[0]


# --------------------------------------------------------------------------- pairs
@dataclass
class PairBatch:
    """Image pairs with their exact flow: ``a``, ``b`` ``(B, 1, H, W)`` in [0, 1], ``flow``
    ``(B, 2, H, W)`` pixels from A to B, ``valid`` ``(B, H, W)`` bool, ``kinds`` the warp
    kind of each pair."""

    a: Tensor
    b: Tensor
    flow: Tensor
    valid: Tensor
    kinds: list[str]


def _sample_photo(photo: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of a ``(1, Hp, Wp)`` photograph at ``(2, H, W)`` pixel coordinates
    (reflection outside it)."""
    hp, wp = photo.shape[-2:]
    gx = 2.0 * coords[0] / (wp - 1) - 1.0
    gy = 2.0 * coords[1] / (hp - 1) - 1.0
    grid = torch.stack([gx, gy], -1)[None].to(photo.dtype)
    return F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="reflection",
                         align_corners=True)[0]


def make_pairs(photos: list[Tensor], gen: torch.Generator, batch: int, size: int = 128,
               kinds: tuple[str, ...] = WARP_KINDS,
               strength: WarpStrength = WarpStrength()) -> PairBatch:
    """``batch`` random pairs from the ``(1, Hp, Wp)`` photographs ``photos`` (uniform choice
    of photograph and warp kind, a random window of B): see the module docstring."""
    a, b, flows, valid, names = [], [], [], [], []
    base = pixel_grid(size, size, dtype=torch.float64)
    for _ in range(batch):
        photo = photos[int(torch.randint(len(photos), (), generator=gen))]
        kind = kinds[int(torch.randint(len(kinds), (), generator=gen))]
        hp, wp = photo.shape[-2:]
        zoom = _uniform(gen, *strength.zoom)
        zoom = min(zoom, (min(hp, wp) - 1) / (size - 1))
        ox = _uniform(gen, 0.0, wp - 1 - zoom * (size - 1))
        oy = _uniform(gen, 0.0, hp - 1 - zoom * (size - 1))
        origin = torch.tensor([ox, oy], dtype=torch.float64)[:, None, None]
        mapping = random_mapping(kind, gen, (size, size), strength)
        b.append(_sample_photo(photo, origin + zoom * base))
        a.append(_sample_photo(photo, origin + zoom * mapping))
        flows.append((mapping - base).float())
        inside = ((mapping[0] >= 0) & (mapping[0] <= size - 1) & (mapping[1] >= 0)
                  & (mapping[1] <= size - 1))
        valid.append(inside)
        names.append(kind)
    return PairBatch(torch.stack(a).float(), torch.stack(b).float(), torch.stack(flows),
                     torch.stack(valid), names)


def _blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images (reflect padding)."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    out = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(
        c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(
        c, 1, 1, 1), groups=c)


def photometric_jitter(img: Tensor, gen: torch.Generator, *, strength: float = 1.0) -> Tensor:
    """Random brightness, contrast and gamma per image, a Gaussian blur (std up to 1.5 px)
    on a third of the images and Gaussian noise (std up to 0.08): training augmentation that
    makes matching rely on structure, not exact intensities or fine texture."""
    n = img.shape[0]
    shape = (n,) + (1,) * (img.ndim - 1)

    def rnd(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=gen, device=img.device)

    gamma = torch.exp(rnd(-0.3, 0.3) * strength)
    out = img.clamp(0, 1) ** gamma
    mean = out.mean(dim=tuple(range(1, img.ndim)), keepdim=True)
    out = (out - mean) * torch.exp(rnd(-1.2, 0.3) * strength) + mean + rnd(-0.1, 0.1) * strength
    blur = torch.rand(n, generator=gen) < 0.33 * strength
    sigmas = 0.5 + torch.rand(n, generator=gen)
    for i in torch.nonzero(blur).flatten().tolist():
        out[i:i + 1] = _blur(out[i:i + 1], float(sigmas[i]))
    sigma = rnd(0.0, 0.08) * strength * (torch.rand(shape, generator=gen) < 0.5)
    out = out + sigma * torch.randn(img.shape, generator=gen, device=img.device)
    return out.clamp(0, 1)
