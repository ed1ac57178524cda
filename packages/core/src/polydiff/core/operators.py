"""Differentiable linear measurement operators ``y = A x`` for inverse problems.

One interface, :class:`LinearOperator`, for every forward model a diffusion prior is asked to
invert (inpainting masks, undersampled Fourier measurements, Radon transforms, ...): each
operator maps a batch ``x`` of shape ``(B, *in_shape)`` to measurements ``(B, *out_shape)``
and knows

* :meth:`~LinearOperator.forward` (``A x``, differentiable, so DPS-style guidance can take
  gradients through it);
* :meth:`~LinearOperator.adjoint` (``A^T y``): by default the exact vector-Jacobian product of
  the forward map (a linear map's Jacobian is the map itself); subclasses give closed forms;
* :meth:`~LinearOperator.prox` (``argmin_z ||A z - y||^2 + lam ||z - x||^2``), the
  data-consistency step of projection samplers and RED-type solvers: conjugate gradients on the
  normal equations by default, closed forms where they exist;
* :meth:`~LinearOperator.pinv` (least-squares solution from zero), :meth:`~LinearOperator.norm`
  (power iteration for ``||A||``).

Inner products are real: for complex measurements ``<u, v> = Re sum conj(u) v``, so
``<A x, y> = <x, A^T y>`` holds for real images and complex k-space alike.

Operators here:

* :class:`Masking`: ``y = m * x`` (inpainting, missing values);
* :class:`MaskedFourier`: single-coil Cartesian MRI, ``y = M F x`` with the orthonormal 2-D
  DFT and a k-space mask in centred (``fftshift``) layout; closed-form adjoint and prox;
* :class:`ParallelBeamRadon`: the parallel-beam Radon transform (line integrals through the
  image along rays at given angles, bilinear interpolation, written with ``grid_sample``),
  with filtered back-projection :meth:`~ParallelBeamRadon.fbp`.

Mask helpers: :func:`cartesian_line_mask` (1-D phase-encoding line masks with a fully sampled
centre, random or equispaced outer lines, as in the fastMRI challenge, Zbontar et al. 2018).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LinearOperator", "Masking", "MaskedFourier", "ParallelBeamRadon",
           "cartesian_line_mask", "conjugate_gradient", "inner", "ramp_filter"]


def inner(u: Tensor, v: Tensor) -> Tensor:
    """Per-sample real inner product ``Re sum conj(u) v`` over all but the first dimension."""
    prod = (u.conj() * v).real if (u.is_complex() or v.is_complex()) else u * v
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor | None = None,
                       iters: int = 20, tol: float = 1e-10) -> Tensor:
    """Solve ``K x = b`` for a symmetric positive (semi-)definite ``K`` given as ``apply``,
    per sample of the batch (Hestenes & Stiefel 1952). Stops after ``iters`` iterations or
    when every residual norm falls below ``tol`` times the norm of ``b``."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = inner(r, r)
    stop = tol * tol * inner(b, b).clamp_min(torch.finfo(rs.dtype).tiny)
    shape = (-1,) + (1,) * (b.ndim - 1)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        kp = apply(p)
        denom = inner(p, kp)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(torch.finfo(rs.dtype).tiny),
                            torch.zeros_like(rs))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * kp
        rs_new = inner(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny),
                           torch.zeros_like(rs))
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return x


class LinearOperator(nn.Module):
    """A linear measurement operator ``A`` on batches ``(B, *in_shape)`` (module docstring).

    Subclasses implement :meth:`forward`; they may override :meth:`adjoint`, :meth:`normal`
    and :meth:`prox` with closed forms. Buffers (masks, grids) move with ``.to(device)``.

    Args:
        in_shape: the per-sample shape of ``x`` (e.g. ``(1, H, W)``).
    """

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        """``A^T y`` (real inner products): the exact vector-Jacobian product of the forward
        map, computed by autograd from ``x = 0``."""
        dtype = y.real.dtype if y.is_complex() else y.dtype
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *self.in_shape), dtype=dtype, device=y.device,
                            requires_grad=True)
            (grad,) = torch.autograd.grad(inner(self.forward(x), y.detach()).sum(), x)
        return grad

    def normal(self, x: Tensor) -> Tensor:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))

    def prox(self, x: Tensor, y: Tensor, lam: float | Tensor, iters: int = 30) -> Tensor:
        """``argmin_z ||A z - y||^2 + lam ||z - x||^2`` (``lam > 0``; per-sample tensors
        allowed): conjugate gradients on ``(A^T A + lam) z = A^T y + lam x``, from ``x``."""
        lam_b = _per_sample(lam, x)
        return conjugate_gradient(lambda z: self.normal(z) + lam_b * z,
                                  self.adjoint(y) + lam_b * x, x0=x, iters=iters)

    def pinv(self, y: Tensor, iters: int = 50, damping: float = 0.0) -> Tensor:
        """The least-squares solution ``argmin ||A x - y||^2 (+ damping ||x||^2)`` reached by
        conjugate gradients from ``x = 0`` (the minimum-norm one for ``damping = 0``)."""
        b = self.adjoint(y)
        return conjugate_gradient(lambda z: self.normal(z) + damping * z, b, iters=iters)

    @torch.no_grad()
    def norm(self, iters: int = 30, seed: int = 0, device: torch.device | str | None = None
             ) -> float:
        """``||A||`` (largest singular value) by power iteration on ``A^T A``."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((1, *self.in_shape), generator=g, dtype=torch.float64)
        x = x.to(device=device or _device_of(self))
        dtype = _dtype_of(self)
        x = x.to(dtype) if dtype is not None else x.float()
        val = 0.0
        for _ in range(iters):
            x = x / x.norm()
            x = self.normal(x)
            val = float(x.norm())
        return math.sqrt(val)


def _device_of(m: nn.Module) -> torch.device:
    for b in m.buffers():
        return b.device
    return torch.device("cpu")


def _dtype_of(m: nn.Module) -> torch.dtype | None:
    for b in m.buffers():
        if b.is_floating_point():
            return b.dtype
    return None


def _per_sample(v: float | Tensor, x: Tensor) -> Tensor | float:
    if torch.is_tensor(v) and v.ndim == 1:
        return v.to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return v


class Masking(LinearOperator):
    """``y = m * x`` for a fixed 0/1 (or weighting) mask ``m`` broadcastable to ``in_shape``:
    inpainting and missing values. Self-adjoint; closed-form prox."""

    mask: Tensor  # buffer

    def __init__(self, mask: Tensor, in_shape: Sequence[int] | None = None):
        super().__init__(tuple(mask.shape) if in_shape is None else in_shape)
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.mask * x

    def adjoint(self, y: Tensor) -> Tensor:
        return self.mask * y

    def prox(self, x: Tensor, y: Tensor, lam: float | Tensor, iters: int = 30) -> Tensor:
        lam_b = _per_sample(lam, x)
        m = self.mask
        den = m * m + lam_b
        return torch.where(den > 0, (m * y + lam_b * x) / torch.where(den > 0, den, 1.0), x)


# --------------------------------------------------------------------------- MRI
def cartesian_line_mask(n: int, acceleration: float, *, center_fraction: float = 0.08,
                        kind: str = "random", seed: int = 0) -> Tensor:
    """A 1-D mask over ``n`` phase-encoding lines in centred k-space layout (index ``n // 2``
    is the DC line) with ``round(n / acceleration)`` sampled lines: the
    ``round(n * center_fraction)`` lines around DC always, the rest ``"random"`` (uniform
    without replacement, seeded) or ``"equispaced"`` (evenly spread over the outer lines),
    as the fastMRI masks (Zbontar et al. 2018, "fastMRI: An Open Dataset and Benchmarks for
    Accelerated MRI", Sec. 4.2). Returns a float ``(n,)`` tensor of 0/1."""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if kind not in ("random", "equispaced"):
        raise ValueError(f"kind must be 'random' or 'equispaced', got {kind!r}")
    budget = max(1, round(n / acceleration))
    n_center = min(budget, max(1, round(n * center_fraction)))
    mask = torch.zeros(n)
    start = n // 2 - n_center // 2
    mask[start:start + n_center] = 1.0
    rest = budget - n_center
    outer = torch.nonzero(mask == 0).flatten()
    if rest > 0:
        if kind == "random":
            g = torch.Generator().manual_seed(seed)
            pick = outer[torch.randperm(outer.numel(), generator=g)[:rest]]
        else:
            pos = torch.linspace(0, outer.numel() - 1, rest + 2)[1:-1] if rest < outer.numel() \
                else torch.arange(outer.numel(), dtype=torch.float32)
            pick = outer[pos.round().long().unique()]
            if pick.numel() < rest:  # rounding collisions: fill with the nearest free lines
                free = outer[~torch.isin(outer, pick)]
                pick = torch.cat([pick, free[: rest - pick.numel()]])
        mask[pick] = 1.0
    return mask


class MaskedFourier(LinearOperator):
    """Single-coil Cartesian MRI: ``y = M * fftshift(F x)`` with ``F`` the orthonormal 2-D DFT
    over the last two dimensions and ``M`` a k-space mask in centred layout (broadcast against
    ``(B, C, H, W)``: a ``(W,)`` line mask selects phase-encoding columns, a ``(B, 1, 1, W)``
    one differs per sample). Images are real; measurements complex.

    Adjoint ``A^T y = Re F^H ifftshift(M y)``. For real images ``A^T A = F^H M_s F`` with the
    symmetrised mask ``M_s(k) = (M(k) + M(-k)) / 2`` (the Hermitian symmetry of real images'
    spectra), which gives :meth:`prox` in closed form.
    """

    mask: Tensor  # buffer

    def __init__(self, mask: Tensor, in_shape: Sequence[int]):
        super().__init__(in_shape)
        h, w = self.in_shape[-2:]
        m = mask.detach().to(torch.float32)
        if m.ndim == 1:
            m = m.reshape(1, w)
        if m.shape[-1] != w or (m.ndim >= 2 and m.shape[-2] not in (1, h)):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images "
                             f"{h}x{w}")
        self.register_buffer("mask", m)

    def set_mask(self, mask: Tensor) -> None:
        """Replace the mask (same broadcasting rules; e.g. after acquiring more lines)."""
        self.mask = mask.detach().to(self.mask)

    def forward(self, x: Tensor) -> Tensor:
        k = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
        return self.mask * k

    def adjoint(self, y: Tensor) -> Tensor:
        k = torch.fft.ifftshift(self.mask * y, dim=(-2, -1))
        return torch.fft.ifft2(k, norm="ortho").real

    def zero_filled(self, y: Tensor, magnitude: bool = False) -> Tensor:
        """The zero-filled reconstruction: ``A^T y`` (or the magnitude ``|F^H M y|``)."""
        if not magnitude:
            return self.adjoint(y)
        return torch.fft.ifft2(torch.fft.ifftshift(self.mask * y, dim=(-2, -1)),
                               norm="ortho").abs()

    def symmetric_mask(self) -> Tensor:
        """``M_s`` in unshifted FFT layout (the weights of ``A^T A`` in k-space)."""
        h, w = self.in_shape[-2:]
        m = torch.fft.ifftshift(self.mask.expand(*self.mask.shape[:-2], h, w), dim=(-2, -1))
        flipped = torch.roll(torch.flip(m, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
        return 0.5 * (m + flipped)

    def normal(self, x: Tensor) -> Tensor:
        return torch.fft.ifft2(self.symmetric_mask() * torch.fft.fft2(x, norm="ortho"),
                               norm="ortho").real

    def prox(self, x: Tensor, y: Tensor, lam: float | Tensor, iters: int = 30) -> Tensor:
        """Closed form: ``z = F^H [F(A^T y + lam x) / (M_s + lam)]``; with ``lam = 0`` the
        unmeasured frequencies keep those of ``x`` (hard data consistency)."""
        lam_b = _per_sample(lam, x)
        ms = self.symmetric_mask()
        num = torch.fft.fft2(self.adjoint(y) + lam_b * x, norm="ortho")
        if isinstance(lam_b, float | int) and lam_b == 0:
            kx = torch.fft.fft2(x, norm="ortho")
            out = torch.where(ms > 0, num / ms.clamp_min(1e-12), kx)
        else:
            out = num / (ms + lam_b)
        return torch.fft.ifft2(out, norm="ortho").real


# --------------------------------------------------------------------------- CT
def ramp_filter(n: int, window: str = "ram-lak", dtype: torch.dtype = torch.float32) -> Tensor:
    """The frequency response (length ``n``, FFT layout) of the discrete ramp filter of Kak &
    Slaney (1988), "Principles of Computerized Tomographic Imaging", eq. 3.61 (spatial kernel
    ``h[0] = 1/4``, ``h[k] = -1/(pi k)^2`` for odd ``k``, 0 for even ``k``; unit detector
    spacing), optionally apodised by a ``"hann"`` or ``"shepp-logan"`` window."""
    k = torch.arange(n, dtype=torch.float64)
    k = torch.where(k > n // 2, k - n, k)  # signed offsets, circular
    h = torch.zeros(n, dtype=torch.float64)
    h[k == 0] = 0.25
    odd = (k.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    resp = torch.fft.fft(h).real
    f = torch.fft.fftfreq(n, dtype=torch.float64)  # cycles per sample, |f| <= 1/2
    if window == "hann":
        resp = resp * 0.5 * (1 + torch.cos(2 * math.pi * f))
    elif window == "shepp-logan":
        resp = resp * torch.sinc(f)
    elif window != "ram-lak":
        raise ValueError(f"unknown window {window!r}; expected ram-lak, hann or shepp-logan")
    return resp.to(dtype)


class _SparseLinear(torch.autograd.Function):
    """``x -> W x`` for a sparse ``W`` with the exact transpose as its backward."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, wt: Tensor) -> Tensor:  # type: ignore[override]
        ctx.wt, ctx.w = wt, w
        return torch.sparse.mm(w, x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return torch.sparse.mm(ctx.wt, g), None, None


class ParallelBeamRadon(LinearOperator):
    """The parallel-beam Radon transform of ``(B, C, N, N)`` images: for angle ``theta`` and
    detector offset ``s`` (pixels from the centre), the line integral
    ``p(theta, s) = int f(s e_theta + u e_theta^perp) du`` with ``e_theta = (cos, sin)``,
    approximated by bilinear samples every ``step`` pixels along the ray (Radon 1917; the
    ray-driven discretisation of Kak & Slaney 1988, ch. 3). Output ``(B, C, n_angles, n_det)``.

    Coordinates: pixel ``(i, j)`` (row, column) has its centre at ``x = j + 1/2 - N/2``,
    ``y = N/2 - i - 1/2`` (x to the right, y up), one pixel per unit; pixels outside the image
    are 0. The samples' bilinear weights are summed once into a sparse matrix ``W`` (rays x
    pixels), so the forward map is ``W x`` and the adjoint (back-projection) is exactly ``W^T``.

    Args:
        image_size: ``N``.
        angles: projection angles in radians (default: ``n_angles`` evenly over ``[0, pi)``).
        n_angles: the number of evenly spaced angles when ``angles`` is not given.
        n_det: detector bins (default ``ceil(N sqrt 2)``, every ray through the image);
            bin spacing one pixel.
        step: sample spacing along rays in pixels.
        channels: ``C``.
    """

    angles: Tensor  # buffers
    w_rows: Tensor
    w_cols: Tensor
    w_vals: Tensor

    def __init__(self, image_size: int, *, angles: Tensor | Sequence[float] | None = None,
                 n_angles: int | None = None, n_det: int | None = None, step: float = 0.5,
                 channels: int = 1):
        super().__init__((channels, image_size, image_size))
        if angles is None:
            if not n_angles or n_angles < 1:
                raise ValueError("give angles or a positive n_angles")
            angles = torch.arange(n_angles, dtype=torch.float64) * (math.pi / n_angles)
        th = torch.as_tensor(angles, dtype=torch.float64).flatten()
        n = int(image_size)
        self.n_det = int(n_det or math.ceil(n * math.sqrt(2)))
        self.step = float(step)
        self.register_buffer("angles", th.float())
        rows, cols, vals = self._weights(th, n)
        self.register_buffer("w_rows", rows)
        self.register_buffer("w_cols", cols)
        self.register_buffer("w_vals", vals)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def _weights(self, th: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """COO entries (ray, pixel, weight) of ``W``, duplicates summed, float64 weights."""
        half_len = 0.5 * math.sqrt(2) * n + 1.0
        n_u = 2 * int(math.ceil(half_len / self.step)) + 1
        s = torch.arange(self.n_det, dtype=torch.float64) - (self.n_det - 1) / 2
        u = (torch.arange(n_u, dtype=torch.float64) - (n_u - 1) / 2) * self.step
        c, sn = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        xs = s[None, :, None] * c - u[None, None, :] * sn   # (A, D, U)
        ys = s[None, :, None] * sn + u[None, None, :] * c
        col = xs + n / 2 - 0.5   # continuous pixel coordinates (0 = first centre)
        row = n / 2 - 0.5 - ys
        ray = torch.arange(th.numel() * self.n_det).reshape(th.numel(), self.n_det, 1)
        ray = ray.expand_as(col)
        c0, r0 = torch.floor(col), torch.floor(row)
        fc, fr = col - c0, row - r0
        idx, w, rays = [], [], []
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            rr, cc = r0 + dr, c0 + dc
            wt = (fr if dr else 1 - fr) * (fc if dc else 1 - fc)
            ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n) & (wt > 0)
            idx.append((rr[ok] * n + cc[ok]).long())
            w.append(wt[ok] * self.step)
            rays.append(ray[ok])
        with warnings.catch_warnings():  # "sparse invariant checks are implicitly disabled"
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rays), torch.cat(idx)]),
                                          torch.cat(w), (th.numel() * self.n_det, n * n),
                                          check_invariants=False).coalesce()
        i = coo.indices()
        return i[0].clone(), i[1].clone(), coo.values().clone()

    def _matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (dtype, device)
        if key not in self._cache:
            n2 = self.in_shape[-1] * self.in_shape[-2]
            shape = (self.n_angles * self.n_det, n2)
            idx = torch.stack([self.w_rows, self.w_cols]).to(device)
            vals = self.w_vals.to(device=device, dtype=dtype)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                w = torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False)
                wt = torch.sparse_coo_tensor(idx.flip(0), vals, shape[::-1],
                                             check_invariants=False)
                self._cache = {key: (w.coalesce().to_sparse_csr(),
                                     wt.coalesce().to_sparse_csr())}
        return self._cache[key]

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cache = {}
        return super()._apply(fn, recurse)

    @property
    def n_angles(self) -> int:
        return int(self.angles.numel())

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[0], x.shape[1]
        w, wt = self._matrices(x.dtype, x.device)
        cols = x.reshape(b * c, -1).t()
        out = _SparseLinear.apply(cols.contiguous(), w, wt)
        return out.t().reshape(b, c, self.n_angles, self.n_det)

    def adjoint(self, y: Tensor) -> Tensor:
        b, c = y.shape[0], y.shape[1]
        w, wt = self._matrices(y.dtype, y.device)
        cols = y.reshape(b * c, -1).t()
        out = _SparseLinear.apply(cols.contiguous(), wt, w)
        return out.t().reshape(b, c, *self.in_shape[-2:])

    def fbp(self, sino: Tensor, window: str = "ram-lak") -> Tensor:
        """Filtered back-projection: ramp-filter every projection along the detector
        (zero-padded to avoid wrap-around; :func:`ramp_filter`), then back-project with the
        adjoint and ``pi / n_angles`` (the angular quadrature weight of angles evenly spread
        over ``[0, pi)``)."""
        n = self.n_det
        pad = 1 << int(math.ceil(math.log2(2 * n)))
        resp = ramp_filter(pad, window, dtype=sino.dtype).to(sino.device)
        spec = torch.fft.fft(F.pad(sino, (0, pad - n)), dim=-1) * resp
        filt = torch.fft.ifft(spec, dim=-1).real[..., :n]
        return self.adjoint(filt) * (math.pi / self.n_angles)
