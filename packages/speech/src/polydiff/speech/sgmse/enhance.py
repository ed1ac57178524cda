"""Speech enhancement with a trained SGMSE+ model (or its predictive baseline).

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+), Sec. III-D and IV: the noisy waveform is divided
by its peak, transformed to the compressed complex spectrogram ``y``, the reverse process is
started from ``x_T ~ N(y, sigma(T)^2 I)`` (complex; ``OUVE.prior_sample``) and run with
predictor-corrector sampling (reverse-diffusion predictor, annealed Langevin corrector with
``r = 0.5``, ``N = 30`` steps, one corrector step), and the estimate is transformed back and
multiplied by the peak. All sampling is polydiff-core's (:data:`SAMPLERS` maps names to core
samplers); nothing here integrates an SDE.

Time grid: ``N`` points ``linspace(T, t_eps, N)`` as in SGMSE's code, followed by a last step
to ``t = 0`` (core's ``time_grid(..., final_zero=True)``; SGMSE's last predictor step from
``t_eps`` uses ``dt = 1/N`` instead of ``t_eps``). ODE solvers use a grid uniform in log-SNR.

Predictive-then-diffusion (``sampler="storm"``, after StoRM: Lemercier, Richter, Welker,
Gerkmann (2023), "StoRM: A Diffusion-Based Stochastic Regeneration Model for Speech
Enhancement and Dereverberation"): a first estimate ``x0_hat`` (the predictive baseline's
output ``D(y)`` when a ``predictive`` model is given, else the diffusion model's own one-pass
estimate ``D_theta(y, T)``) is diffused forward to ``t_start`` (``x ~ q(x_t | x0_hat, y)``, the
OUVE marginal) and the reverse process runs from there with the PC sampler. Unlike StoRM,
whose score model is trained conditioned on the predictive estimate, the score model here is
the plain SGMSE model (``t_start`` < T then only removes the predictive stage's artefacts);
``t_start`` and ``x0_init`` work with every sampler.

Long recordings: ``chunk_seconds`` (default :data:`CHUNK_SECONDS`, so memory is bounded and
independent of the file's length) splits the (globally normalised) waveform into chunks that
overlap by ``overlap_seconds``; chunk starts are multiples of the STFT hop, so every chunk
sees the same frame grid as the whole file. In each overlap the outer quarters are context
only (weight 0 for the chunk whose edge lies there) and the central half is cross-faded with
complementary raised-cosine weights (``sin^2`` / ``cos^2``, summing to exactly 1), so there
are no seams. Each chunk of a stochastic sampler draws its own noise (``seed + chunk``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.grids import time_grid
from polydiff.core.samplers.registry import SAMPLERS as REGISTRY
from polydiff.core.samplers.registry import get_sampler
from polydiff.speech.sgmse.model import SGMSE, SGMSEPredictive, as_spec_batch
from polydiff.speech.sgmse.spec import crop_frames, pad_frames

__all__ = [
    "CHUNK_SECONDS", "OVERLAP_SECONDS", "SAMPLERS", "STORM_T_START", "EnhanceStats",
    "chunk_plan", "chunk_weights", "sample_spec", "enhance", "enhance_predictive",
    "enhance_with_stats", "measure_rtf",
]

#: sampler name -> (default grid kind, stochastic): every sampler of core's registry
#: (:mod:`polydiff.core.samplers.registry`), on SGMSE+'s uniform grid for the stochastic and
#: adaptive ones (Richter et al. 2023) and the log-SNR grid for the ODE solvers.
SAMPLERS: dict[str, tuple[str, bool]] = {
    **{name: ("uniform" if spec.stochastic or spec.adaptive else "logsnr", spec.stochastic)
       for name, spec in REGISTRY.items()},
    "storm": ("uniform", True),       # first estimate, forward to t_start, then a base sampler
}
#: Default chunk length and overlap of :func:`enhance` (seconds).
CHUNK_SECONDS = 6.0
OVERLAP_SECONDS = 0.5
#: Default start time of the ``"storm"`` sampler.
STORM_T_START = 0.5


@dataclass
class EnhanceStats:
    """What one :func:`enhance_with_stats` call cost."""

    seconds: float          #: wall-clock compute time (device work included)
    audio_seconds: float    #: length of the input
    nfe: int                #: network evaluations (all chunks)
    chunks: int             #: chunks processed

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of compute per second of audio (< 1 is faster than
        real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_spec(model: SGMSE, y: Tensor, *, sampler: str = "pc", steps: int = 30,
                corrector_steps: int = 1, snr: float = 0.5, seed: int | None = 0,
                generator: torch.Generator | None = None, grid: str | None = None,
                x_init: Tensor | None = None, x0_init: Tensor | None = None,
                t_start: float | None = None, storm_base: str = "pc",
                disable: bool | None = True, **sampler_kw: Any) -> Tensor:
    """Draw clean spectrograms given noisy ones ``y`` ``(B, 1, F, N)`` (``N`` a multiple of
    ``model.padding_multiple``) with a core sampler; returns ``(B, 1, F, N)``.

    ``x_init`` replaces the prior draw ``N(y, sigma(T)^2 I)``; ``t_start`` starts the reverse
    process at that time instead of ``T`` (from ``q(x_t | x0_init, y)``, ``x0_init``
    defaulting to ``y``); ``"storm"`` is the ``storm_base`` sampler (PC by default; a
    deterministic solver such as ``"euler"`` or ``"dpmpp_2m"`` works too) from ``t_start``
    (:data:`STORM_T_START` by default) and ``x0_init`` (default: the model's own one-pass
    estimate at ``T``); ``grid`` overrides the time spacing
    (:func:`polydiff.core.grids.time_grid` kinds); ``sampler_kw`` goes to the core sampler
    (e.g. ``rtol`` for ``"ode"``, ``order`` for ``"unipc"``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y = as_spec_batch(y)
    process, den = model.process, model.denoiser()
    if generator is None and seed is not None:
        generator = torch.Generator(device=y.device).manual_seed(int(seed))
    if sampler == "storm":
        if storm_base not in SAMPLERS or storm_base == "storm":
            raise ValueError(f"unknown storm base sampler {storm_base!r}; expected one of "
                             f"{', '.join(k for k in SAMPLERS if k != 'storm')}")
        t_start = STORM_T_START if t_start is None else t_start
        if x0_init is None:  # the model's own one-pass estimate
            t_max = torch.full((y.shape[0],), float(process.t_max), device=y.device)
            x0_init = den.x0(y, t_max, y=y)
        sampler = storm_base
    kind, stochastic = SAMPLERS[sampler]
    spec = get_sampler(sampler)
    if t_start is not None:
        t_start = float(t_start)
        if not process.t_min < t_start <= process.t_max:
            raise ValueError(f"t_start must be in ({process.t_min}, {process.t_max}], "
                             f"got {t_start}")
    if x_init is not None:
        x = x_init
    elif t_start is None:
        x = process.prior_sample(y.shape, y=y, generator=generator)
    else:
        tt = torch.full((y.shape[0],), t_start, device=y.device)
        x = process.marginal(y if x0_init is None else as_spec_batch(x0_init), tt, y=y,
                             generator=generator)[0]
    # "ode" is adaptive: only its ends matter (T -> t_eps, then a final denoising to t = 0)
    n = 2 if spec.adaptive else steps
    ts = time_grid(process, n, grid or kind, t_start=t_start, final_zero=True,
                   device=y.device)
    common: dict[str, Any] = {"cond": {"y": y}, "disable": disable, **sampler_kw}
    if sampler == "pc":
        common.update(snr=snr, corrector_steps=corrector_steps)
    return spec.run(den, x, ts, generator=generator if stochastic else None, **common)


# --------------------------------------------------------------------------- chunks
def chunk_plan(length: int, chunk: int, overlap: int, hop: int = 1) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering ``[0, length)``: chunks of ``chunk`` samples
    (the last may be shorter) whose consecutive overlaps are exactly ``overlap``; ``chunk``
    and ``overlap`` are rounded down to multiples of ``hop`` so chunk starts are too."""
    chunk, overlap = (int(chunk) // hop) * hop, (int(overlap) // hop) * hop
    if chunk <= 0 or overlap < 0 or 2 * overlap > chunk:
        raise ValueError(f"need 0 <= overlap <= chunk / 2 (after rounding to the hop {hop}), "
                         f"got chunk {chunk} and overlap {overlap} samples")
    if length <= chunk:
        return [(0, length)]
    step = chunk - overlap
    count = math.ceil((length - overlap) / step)
    return [(k * step, min(k * step + chunk, length)) for k in range(count)]


def chunk_weights(plan: list[tuple[int, int]], overlap: int, hop: int = 1) -> list[np.ndarray]:
    """Cross-fade weights of each chunk of ``plan`` (same rounding of ``overlap``): in each
    overlap the outer quarters are context only and the central half fades with ``sin^2``
    / ``cos^2``; the weights of all chunks sum to exactly 1 at every sample."""
    overlap = (int(overlap) // hop) * hop
    margin = overlap // 4
    fade = overlap - 2 * margin
    u = (np.arange(fade, dtype=np.float64) + 0.5) / max(fade, 1)
    rise = np.sin(0.5 * np.pi * u) ** 2
    out = []
    for k, (s, e) in enumerate(plan):
        w = np.ones(e - s, dtype=np.float64)
        if k > 0:
            w[:margin] = 0.0
            w[margin:margin + fade] = rise
        if k < len(plan) - 1:
            n = e - s
            w[n - margin - fade:n - margin] = 1.0 - rise
            w[n - margin:] = 0.0
        out.append(w)
    return out


# --------------------------------------------------------------------------- waves
def _as_wave(noisy: Any) -> np.ndarray:
    arr = noisy.detach().cpu().numpy() if isinstance(noisy, Tensor) else np.asarray(noisy)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (T,), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("the noisy waveform is empty")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"expected real audio samples, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("the noisy waveform contains NaN or infinite samples")
    return arr


def _device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        from polydiff.gpu import select_device

        dev = select_device(device)
        model.to(dev)
        return dev
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _process_chunk(model: SGMSE | SGMSEPredictive, wave: Tensor, sample_kw: dict[str, Any],
                   seed: int | None, predictive: SGMSEPredictive | None = None) -> Tensor:
    """One normalised chunk ``(T,)`` -> its estimate ``(T,)``."""
    length = wave.shape[-1]
    n_fft = model.representation.config.n_fft
    padded = torch.nn.functional.pad(wave, (0, max(n_fft - length, 0)))  # very short inputs
    storm = sample_kw.get("sampler") == "storm"
    centred = isinstance(model, SGMSE) and model.config.center == "predictive"
    multiple = model.padding_multiple
    if isinstance(model, SGMSE) and predictive is not None and (storm or centred):
        multiple = math.lcm(multiple, predictive.padding_multiple)
    y, n = pad_frames(model.spectrogram(padded[None]), multiple)
    if isinstance(model, SGMSE):
        kw = dict(sample_kw)
        if centred:  # StoRM-style: process and condition centred on D(y)
            y = model.condition(y)
            if storm:
                kw["x0_init"] = y
        elif storm and predictive is not None:
            kw["x0_init"] = predictive(y)
        x = sample_spec(model, y, seed=seed, **kw)
    else:
        x = model(y)
    return model.waveform(crop_frames(x, n), padded.shape[-1])[0, :length]


def enhance_with_stats(model: SGMSE | SGMSEPredictive, noisy: Any, sr: int, *,
                       sampler: str = "pc", steps: int = 30, corrector_steps: int = 1,
                       snr: float = 0.5, seed: int = 0,
                       chunk_seconds: float | None = CHUNK_SECONDS,
                       overlap_seconds: float = OVERLAP_SECONDS,
                       device: str | torch.device | None = None,
                       progress: bool | None = False,
                       predictive: SGMSEPredictive | None = None,
                       **sampler_kw: Any) -> tuple[np.ndarray, EnhanceStats]:
    """:func:`enhance`, also returning what it cost (:class:`EnhanceStats`)."""
    from polydiff.gpu.timing import synchronize
    from polydiff.speech.audio import resample

    if not isinstance(model, SGMSE | SGMSEPredictive):
        raise TypeError(f"expected an SGMSE or SGMSEPredictive model, got {type(model).__name__}")
    if predictive is not None:
        if not isinstance(predictive, SGMSEPredictive):
            raise TypeError(f"predictive must be an SGMSEPredictive model, got "
                            f"{type(predictive).__name__}")
        if predictive.representation.config != model.representation.config:
            raise ValueError("the predictive and diffusion models use different STFT settings")
    if isinstance(model, SGMSE) and model.config.center == "predictive":
        if predictive is not None:
            model.attach_predictive(predictive)
        elif model.predictive is None:
            raise ValueError("this SGMSE model is centred on a predictive estimate: pass its "
                             "predictive model (predictive=..., sgmse enhance --predictive)")
        predictive = model.predictive
    if int(sr) != sr or sr < 1000:
        raise ValueError(f"sample rate must be an integer >= 1000 Hz, got {sr}")
    wave = _as_wave(noisy)
    sr, rate = int(sr), model.sample_rate
    orig_len = wave.shape[0]
    work = resample(wave, sr, rate) if sr != rate else wave
    peak = float(np.abs(work).max())
    dev = _device(model, device)
    counter = [0]
    models = [model] + ([predictive] if predictive is not None else [])
    hooks = [m.net.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
             for m in models]
    was_training = [m.training for m in models]
    if predictive is not None:
        predictive.to(dev)
    for m in models:
        m.eval()
    synchronize(dev)
    start = time.perf_counter()
    try:
        if peak == 0.0:  # silence in, silence out
            out, plan = np.zeros_like(work), [(0, work.shape[0])]
        else:
            x = torch.as_tensor(work / peak, dtype=torch.float32, device=dev)
            hop = model.representation.config.hop_length
            weights: list[np.ndarray | None]
            if chunk_seconds is None or chunk_seconds * rate >= work.shape[0]:
                plan, weights = [(0, work.shape[0])], [None]
            else:
                overlap = int(overlap_seconds * rate)
                plan = chunk_plan(work.shape[0], int(chunk_seconds * rate), overlap, hop)
                weights = list(chunk_weights(plan, overlap, hop))
            kw = {"sampler": sampler, "steps": steps, "corrector_steps": corrector_steps,
                  "snr": snr, "disable": None if progress is None else not progress,
                  **sampler_kw}
            out = np.zeros(work.shape[0], dtype=np.float64)
            with torch.no_grad():
                for k, ((s, e), w) in enumerate(zip(plan, weights, strict=True)):
                    est = _process_chunk(model, x[s:e], kw, seed + k,
                                         predictive).double().cpu().numpy()
                    out[s:e] += est if w is None else w * est
            out *= peak
        synchronize(dev)
        seconds = time.perf_counter() - start
    finally:
        for h in hooks:
            h.remove()
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
    if sr != rate:
        out = resample(out, rate, sr)[:orig_len]
        out = np.pad(out, (0, orig_len - out.shape[0]))
    stats = EnhanceStats(seconds=seconds, audio_seconds=orig_len / sr, nfe=counter[0],
                         chunks=len(plan))
    return out.astype(np.float32), stats


def enhance(model: SGMSE | SGMSEPredictive, noisy: Any, sr: int, *, sampler: str = "pc",
            steps: int = 30, corrector_steps: int = 1, snr: float = 0.5, seed: int = 0,
            chunk_seconds: float | None = CHUNK_SECONDS,
            overlap_seconds: float = OVERLAP_SECONDS, device: str | torch.device | None = None,
            progress: bool | None = False, predictive: SGMSEPredictive | None = None,
            **sampler_kw: Any) -> np.ndarray:
    """Enhance one noisy recording ``noisy`` ``(T,)`` (NumPy or torch) at ``sr`` Hz; returns
    a float32 ``(T,)`` wave at ``sr`` (module docstring for the procedure).

    Args:
        model: an :class:`~.model.SGMSE` (sampled) or :class:`~.model.SGMSEPredictive` (one
            forward pass; the sampler arguments are ignored).
        sampler: a key of :data:`SAMPLERS` (``"pc"``: SGMSE+'s predictor-corrector).
        steps: reverse steps ``N`` (ignored by ``"ode"``, which is adaptive).
        corrector_steps, snr: the annealed Langevin corrector of ``"pc"``.
        seed: seeds the prior draw and the sampler noise (chunk ``k`` uses ``seed + k``).
        chunk_seconds: process in chunks of this length (default :data:`CHUNK_SECONDS`:
            memory bounded whatever the file's length; ``None``: the whole file at once);
            overlap_seconds: their overlap (at most half a chunk).
        predictive: the predictive model whose output starts the ``"storm"`` sampler.
        device: run there (the model is moved); default: where the model is.
        progress: show the sampler's progress bar (``None``: automatic).
        sampler_kw: extra arguments of the core sampler.

    Other sample rates are resampled to the model's and back. Raises ``ValueError`` (one
    line) for an empty, non-finite or multi-channel input.
    """
    return enhance_with_stats(model, noisy, sr, sampler=sampler, steps=steps,
                              corrector_steps=corrector_steps, snr=snr, seed=seed,
                              chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                              device=device, progress=progress, predictive=predictive,
                              **sampler_kw)[0]


def enhance_predictive(model: SGMSEPredictive, noisy: Any, sr: int, *,
                       chunk_seconds: float | None = CHUNK_SECONDS,
                       overlap_seconds: float = OVERLAP_SECONDS,
                       device: str | torch.device | None = None) -> np.ndarray:
    """Enhance with the predictive baseline (one forward pass per chunk); see
    :func:`enhance`."""
    if not isinstance(model, SGMSEPredictive):
        raise TypeError(f"expected an SGMSEPredictive model, got {type(model).__name__}")
    return enhance(model, noisy, sr, chunk_seconds=chunk_seconds,
                   overlap_seconds=overlap_seconds, device=device)


def measure_rtf(model: SGMSE | SGMSEPredictive, seconds: float = 4.0, *, repeats: int = 1,
                warmup: bool = True, seed: int = 0, **enhance_kw: Any) -> EnhanceStats:
    """Real-time factor of :func:`enhance` on ``seconds`` of seeded noise at the model's
    rate (best of ``repeats`` runs after an optional warm-up run): seconds of compute per
    second of audio, in :attr:`EnhanceStats.rtf`."""
    rate = model.sample_rate
    rng = np.random.default_rng(seed)
    wave = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    if warmup:
        enhance_with_stats(model, wave[: min(len(wave), rate)], rate, **enhance_kw)
    best: EnhanceStats | None = None
    for _ in range(max(1, repeats)):
        _, stats = enhance_with_stats(model, wave, rate, **enhance_kw)
        if best is None or stats.seconds < best.seconds:
            best = stats
    assert best is not None
    return best
