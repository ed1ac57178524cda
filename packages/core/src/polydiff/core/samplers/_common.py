"""What every sampler shares: the call surface, centring, per-sample time and progress.

Every polydiff sampler has the signature (one uniform surface, as in k-diffusion)::

    sample_xxx(denoiser, x, ts, *, cond=None, callback=None, disable=None, **hyper) -> Tensor

* ``denoiser``: a :class:`~polydiff.core.denoiser.Denoiser` (never a raw network);
* ``x``: the batch ``(B, ...)`` at time ``ts[0]`` (e.g. ``process.prior_sample``);
* ``ts``: descending process times (:func:`~polydiff.core.grids.time_grid`), float64;
* ``cond``: per-sample conditioning passed to the denoiser as keyword arguments (for
  mean-reverting processes it holds the centre ``y``);
* ``callback``: called after each step with ``{"i", "t", "t_next", "x", "x0"}``;
* ``disable``: passed to tqdm; ``None`` shows a bar only on a terminal outside CI;
* stochastic samplers also take ``generator`` (a ``torch.Generator``) or ``seed``.

Samplers integrate the centred variable ``z = x - c`` (``c`` = 0 except for mean-reverting
processes) so the same code serves every Gaussian process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.grids import check_grid

__all__ = ["Callback", "Sampling", "make_generator"]

Callback = Callable[[dict[str, Any]], None]


def make_generator(generator: torch.Generator | None, seed: int | None,
                   device: torch.device) -> torch.Generator | None:
    """A generator from ``generator`` or ``seed`` (``None`` uses torch's global RNG)."""
    if generator is not None:
        return generator
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class Sampling:
    """Per-call state shared by sampler implementations: the centre, the conditioning and
    float64 time grid, with the denoiser evaluated on the centred variable.

    >>> s = Sampling(denoiser, x, ts, cond)
    >>> z = s.z                      # x - c
    >>> z0, eps = s.denoise(z, i)    # at time ts[i]
    >>> x = s.finish(z)              # z + c
    """

    def __init__(self, denoiser: Denoiser, x: Tensor, ts: Tensor,
                 cond: dict[str, Any] | None = None, callback: Callback | None = None):
        if not isinstance(denoiser, Denoiser):
            raise TypeError("samplers take a polydiff Denoiser; wrap networks with "
                            "polydiff.core.denoiser.ModelDenoiser")
        ts = torch.as_tensor(ts)
        check_grid(denoiser.process, ts)
        self.denoiser = denoiser
        self.process = denoiser.process
        self.cond = dict(cond or {})
        self.c = denoiser.center(self.cond)
        dtype = torch.float32 if x.device.type == "mps" else torch.float64
        self.ts = ts.to(device=x.device, dtype=dtype)
        self.batch = x.shape[0]
        self.z = x if self.c is None else x - self.c
        self.callback = callback
        self.nfe = 0
        p, t = self.process, self.ts
        self.alphas, self.sigmas = p.alpha(t), p.sigma(t)

    @property
    def steps(self) -> int:
        return self.ts.numel() - 1

    def t(self, i: int) -> Tensor:
        """Per-sample time ``(B,)`` at grid index ``i``."""
        return self.ts[i].expand(self.batch)

    def denoise_at(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(z0, eps)`` of the denoiser at per-sample time ``t`` (shape ``(B,)``)."""
        x = z if self.c is None else z + self.c
        x0, eps = self.denoiser.x0_eps(x, t, **self.cond)
        self.nfe += 1
        return (x0 if self.c is None else x0 - self.c), eps

    def denoise(self, z: Tensor, i: int) -> tuple[Tensor, Tensor]:
        return self.denoise_at(z, self.t(i))

    def report(self, i: int, z: Tensor, z0: Tensor | None = None) -> None:
        if self.callback is not None:
            self.callback({"i": i, "t": self.ts[i], "t_next": self.ts[i + 1],
                           "x": self.finish(z), "x0": None if z0 is None else self.finish(z0)})

    def finish(self, z: Tensor) -> Tensor:
        return z if self.c is None else z + self.c
