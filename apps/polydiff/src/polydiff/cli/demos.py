"""Built-in demos for ``polydiff tour`` that need nothing beyond polydiff-core.

``core-samplers`` (:data:`core_samplers`): on an exact test bed (a random 2-D mixture of
Gaussians under the linear VP process, whose denoiser is known in closed form), three ODE
samplers are judged against the exact probability-flow ODE endpoint
(:func:`~polydiff.core.testbeds.reference_pf_ode`) at several numbers of function
evaluations. Figures are written with a small PNG encoder (zlib + numpy), so the demo needs no
plotting library. torch and numpy are imported inside :meth:`CoreSamplersDemo.demo` only.
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polydiff.core.cli import DemoReport, atomic_write

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

__all__ = ["CoreSamplersDemo", "core_samplers", "png_bytes", "write_png"]

Color = tuple[int, int, int]
_DATA: Color = (200, 200, 200)
_GRID: Color = (225, 228, 232)
_INK: Color = (60, 64, 72)
# sampler key -> (label, colour, colour name); ColorBrewer's colour-blind-safe Dark2 set
_SAMPLERS: dict[str, tuple[str, Color, str]] = {
    "ddim": ("DDIM", (217, 95, 2), "orange"),
    "dpmpp_2m": ("DPM-Solver++(2M)", (117, 112, 179), "purple"),
    "unipc": ("UniPC (bh2, order 3)", (27, 158, 119), "green"),
}
# 3x5 bitmap glyphs (rows top to bottom) for tick labels
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "E": "111100111100111", " ": "000000000000000",
}


def png_bytes(image: Any) -> bytes:
    """Encode an ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array (or ``(H, W)`` grey) as
    an 8-bit, non-interlaced PNG (W3C PNG spec: signature, IHDR, one zlib IDAT with filter
    type 0 on every row, IEND)."""
    import numpy as np

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.size == 0:
        raise ValueError(f"expected an (H, W, 3|4) image, got shape {img.shape}")
    img = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    h, w, c = img.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))


def write_png(path: str | Path, image: Any) -> Path:
    """Write ``image`` (see :func:`png_bytes`) to ``path`` atomically."""
    return atomic_write(path, png_bytes(image))


class _Canvas:
    """A white RGB raster with dots, lines, rectangles and numeric labels (pixel coords)."""

    def __init__(self, width: int, height: int):
        import numpy

        self.np = numpy
        self.img = numpy.full((height, width, 3), 255, numpy.uint8)

    def dots(self, xs: Any, ys: Any, color: Color, radius: int = 1) -> None:
        np = self.np
        h, w = self.img.shape[:2]
        xi, yi = np.rint(np.asarray(xs)).astype(int), np.rint(np.asarray(ys)).astype(int)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dx * dx + dy * dy > radius * radius + radius // 2:
                    continue
                x, y = xi + dx, yi + dy
                keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                self.img[y[keep], x[keep]] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color,
             radius: int = 0) -> None:
        t = self.np.linspace(0.0, 1.0, int(max(abs(x1 - x0), abs(y1 - y0))) + 2)
        self.dots(x0 + t * (x1 - x0), y0 + t * (y1 - y0), color, radius)

    def frame(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 2) -> None:
        for k in range(width):
            self.img[y0 + k, x0:x1] = self.img[y1 - 1 - k, x0:x1] = color
            self.img[y0:y1, x0 + k] = self.img[y0:y1, x1 - 1 - k] = color

    def text(self, x: int, y: int, s: str, color: Color = _INK, scale: int = 2,
             anchor: str = "left") -> None:
        if anchor != "left":
            x -= (4 * len(s) - 1) * scale // (2 if anchor == "center" else 1)
        for ch in s:
            bits = _FONT.get(ch, _FONT[" "])
            for i, bit in enumerate(bits):
                if bit == "1":
                    r, c = divmod(i, 3)
                    ys, xs = y + r * scale, x + c * scale
                    self.img[max(ys, 0):ys + scale, max(xs, 0):xs + scale] = color
            x += 4 * scale


def _scatter_panels(data: np.ndarray, samples: dict[str, np.ndarray], size: int = 260,
                    pad: int = 10) -> np.ndarray:
    """One square panel per sampler: data in grey, the sampler's points in its colour,
    framed in that colour; all panels share one equal-aspect window."""
    import numpy as np

    pts = np.concatenate([data, *samples.values()])
    lo, hi = np.quantile(pts, 0.005, axis=0), np.quantile(pts, 0.995, axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.1
    canvas = _Canvas(len(samples) * (size + pad) + pad, size + 2 * pad)

    def to_px(p: np.ndarray, x0: int) -> tuple[np.ndarray, np.ndarray]:
        u = (p - centre) / half  # [-1, 1]
        return x0 + (u[:, 0] + 1) / 2 * (size - 1), pad + (1 - u[:, 1]) / 2 * (size - 1)

    for i, (key, pts_k) in enumerate(samples.items()):
        x0 = pad + i * (size + pad)
        canvas.dots(*to_px(data, x0), _DATA, radius=1)
        canvas.dots(*to_px(pts_k, x0), _SAMPLERS[key][1], radius=1)
        canvas.frame(x0, pad, x0 + size, pad + size, _SAMPLERS[key][1])
    return canvas.img


class CoreSamplersDemo:
    """polydiff-core's ODE samplers on an exact Gaussian-mixture test bed."""

    name = "core-samplers"
    summary = "engine ODE samplers against the exact PF-ODE on a Gaussian-mixture test bed"

    def demo(self, out_dir: Path, *, quick: bool = False) -> DemoReport:
        """Sample, compare with the exact ODE solution, and write two PNG figures."""
        import torch

        from polydiff.core.grids import time_grid
        from polydiff.core.processes import VPLinear
        from polydiff.core.samplers import sample_ddim, sample_dpmpp_2m, sample_unipc
        from polydiff.core.testbeds import GaussianMixture, reference_pf_ode

        n_samples, nfes = (128, [5, 10, 20, 40]) if quick else (512, [5, 10, 15, 20, 30, 40, 60])
        samplers: dict[str, Callable[..., torch.Tensor]] = {
            "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

        mixture = GaussianMixture.random(2, n_components=4, seed=0, std_range=(0.15, 0.6))
        process = VPLinear()
        gen = torch.Generator().manual_seed(0)
        x_start = mixture.sample_t(n_samples, process.t_max, process, generator=gen)
        data = mixture.sample(2000, generator=gen)
        tic = time.perf_counter()
        exact = reference_pf_ode(mixture, process, x_start, process.t_max, process.t_min)
        reference_s = time.perf_counter() - tic

        denoiser = mixture.denoiser(process)
        errors: dict[str, list[float]] = {k: [] for k in samplers}
        first: dict[str, Any] = {}
        metrics: dict[str, float | str] = {}
        for key, sampler in samplers.items():
            for n in nfes:
                denoiser.nfe = 0
                x = sampler(denoiser, x_start, time_grid(process, n, "logsnr"), disable=True)
                rmse = float((x - exact).square().sum(-1).mean().sqrt())
                errors[key].append(rmse)
                metrics[f"rmse/{key}/nfe={denoiser.nfe}"] = rmse
                first.setdefault(key, x.numpy())
            rate = math.log(errors[key][-2] / errors[key][-1]) / math.log(nfes[-1] / nfes[-2])
            metrics[f"order/{key}"] = rate
        metrics.update({"samples": float(n_samples), "reference_s": reference_s,
                        "process": "VPLinear", "grid": "logsnr"})

        scatter = write_png(out_dir / "samples.png", _scatter_panels(data.numpy(), first))
        from polydiff.core.plots import line_plot

        conv = line_plot(out_dir / "convergence.png",
                         {_SAMPLERS[k][0]: (nfes, errs) for k, errs in errors.items()},
                         xlabel="network evaluations (NFE)",
                         ylabel="RMSE to the exact PF-ODE endpoint", logx=True, logy=True,
                         markers=True, title="convergence on a Gaussian mixture")
        units = {k: ("data units (RMSE)" if k.startswith("rmse/") else
                     "convergence order" if k.startswith("order/") else
                     "points" if k == "samples" else "s")
                 for k, v in metrics.items() if not isinstance(v, str)}
        return DemoReport(
            title="ODE samplers against the exact probability-flow ODE",
            metrics=metrics, figures=[scatter, conv], text=_text(n_samples, nfes, errors),
            units=units)


def _text(n_samples: int, nfes: list[int], errors: dict[str, list[float]]) -> str:
    width = max(len(label) for label, _, _ in _SAMPLERS.values()) + 2
    lines = [
        "Test bed: a random mixture of 4 Gaussians in 2-D under the linear VP process "
        "(beta 0.1..20), whose denoiser is exact; log-SNR time grids from t=1 to t=1e-3.",
        f"RMSE (per point, over {n_samples} points) between each sampler's endpoint and the "
        "exact PF-ODE solution from the same start (DOP853, rtol 1e-11):", "",
        "NFE".ljust(6) + "".join(_SAMPLERS[k][0].ljust(width) for k in errors),
    ]
    for i, n in enumerate(nfes):
        lines.append(str(n).ljust(6) + "".join(f"{errors[k][i]:.3e}".ljust(width)
                                              for k in errors))
    colours = ", ".join(f"{label} {name}" for label, _, name in _SAMPLERS.values())
    lines += ["", f"samples.png: data (grey) and each sampler's points at NFE={nfes[0]}, "
              f"left to right ({colours}). convergence.png: RMSE against NFE, log-log, "
              "same colours. 'order/*' is the empirical convergence order between the two "
              "largest NFEs."]
    return "\n".join(lines)


core_samplers = CoreSamplersDemo()
