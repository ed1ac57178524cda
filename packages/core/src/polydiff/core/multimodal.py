"""Per-modality timesteps: one diffusion model over several modalities, each with its own time.

Bao et al. (2023), "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale"
(UniDiffuser), Sec. 3.1: perturb *every* modality ``m`` of a paired sample with its own time
``t_m`` (drawn independently), ``x_m,t = alpha(t_m) x_m + sigma(t_m) eps_m``, and train one
network ``eps_theta({x_m,t}, {t_m})`` to predict all the noises. Choosing the times at sampling
then selects a distribution:

* ``t_m = t_zero`` (clean, ``sigma = 0``) for an observed modality: the conditional model;
* ``t_m = t_max`` (pure noise) for a modality left out: the marginal of the others;
* one shared ``t`` for the modalities generated together: the joint model.

This module holds the pieces the engine lacks for that, independent of any domain:

* :class:`ModalityLayout`: named modalities with fixed per-sample shapes, packed into one flat
  ``(B, D)`` vector so every polydiff sampler integrates several modalities at once;
* :class:`JointDiffusionLoss`: the objective above for any
  :class:`~polydiff.core.processes.GaussianProcess`, target and weighting of
  :class:`~polydiff.core.losses.DiffusionLoss` (applied per modality), with independent times,
  optional point masses at the clean/noise ends and fixed times (a modality fixed clean gives
  exactly the conditional model's loss);
* :class:`JointDenoiser`: a :class:`~polydiff.core.denoiser.Denoiser` over the modalities
  being generated, the others held at given values and times passed as conditioning
  (``cond[name]`` and ``cond["t_" + name]``), so
  :class:`~polydiff.core.guidance.ClassifierFreeGuidance` with the unconditional branch "the
  other modality is noise at ``t_max``" is UniDiffuser's guidance (Sec. 3.2) unchanged;
* :class:`JointMarginalGuidance`: guidance for joint sampling, each modality's joint
  prediction pushed away from the model's own marginal of that modality (Sec. 3.2).

The network is called as ``model(xs, ts, **cond)`` with mappings modality -> tensor; see
:class:`~polydiff.core.nn.uvit.MultiModalUViT`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.losses import DiffusionLoss, WeightFn
from polydiff.core.param import PREDICTION_TYPES, from_x0_eps, to_x0_eps
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.shapes import append_dims, as_time

__all__ = ["ModalityLayout", "JointDiffusionLoss", "JointDenoiser", "JointMarginalGuidance",
           "time_key"]

JointModel = Callable[..., Mapping[str, Tensor]]


def time_key(name: str) -> str:
    """The conditioning key that carries the time of a held modality: ``"t_" + name``."""
    return f"t_{name}"


# --------------------------------------------------------------------------- layout
class ModalityLayout:
    """Named modalities with fixed per-sample shapes, and their packing into one flat vector.

    ``ModalityLayout({"image": (16, 4), "text": (4, 8)})``: :meth:`pack` concatenates the
    flattened modalities (in the given order) into ``(B, D)``, :meth:`unpack` inverts it.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]]):
        if not shapes:
            raise ValueError("a layout needs at least one modality")
        self.shapes = {str(k): tuple(int(d) for d in v) for k, v in shapes.items()}
        self.sizes = {k: math.prod(v) for k, v in self.shapes.items()}
        if min(self.sizes.values()) < 1:
            raise ValueError(f"every modality needs a non-empty shape, got {self.shapes}")

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def size(self, names: Sequence[str] | None = None) -> int:
        """Flat width of the given modalities (default: all)."""
        return sum(self.sizes[n] for n in self._check(names))

    def _check(self, names: Sequence[str] | None) -> list[str]:
        names = self.names if names is None else list(names)
        unknown = [n for n in names if n not in self.shapes]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"modalities {names} must be distinct names among {self.names}")
        return names

    def pack(self, xs: Mapping[str, Tensor], names: Sequence[str] | None = None) -> Tensor:
        """``(B, D)``: the flattened modalities ``names`` (default: all), in that order."""
        names = self._check(names)
        parts = []
        for n in names:
            x = xs[n]
            if tuple(x.shape[1:]) != self.shapes[n]:
                raise ValueError(f"modality {n!r}: expected shape (B, {self.shapes[n]}), got "
                                 f"{tuple(x.shape)}")
            parts.append(x.reshape(x.shape[0], -1))
        return torch.cat(parts, dim=1)

    def unpack(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Inverse of :meth:`pack`."""
        names = self._check(names)
        if x.ndim != 2 or x.shape[1] != self.size(names):
            raise ValueError(f"expected (B, {self.size(names)}) for {names}, got "
                             f"{tuple(x.shape)}")
        out, start = {}, 0
        for n in names:
            out[n] = x[:, start:start + self.sizes[n]].reshape(x.shape[0], *self.shapes[n])
            start += self.sizes[n]
        return out

    def noise(self, batch: int, names: Sequence[str] | None = None, *,
              generator: torch.Generator | None = None, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """Standard normal tensors for the modalities ``names``."""
        return {n: torch.randn((batch, *self.shapes[n]), generator=generator, device=device,
                               dtype=dtype) for n in self._check(names)}


# --------------------------------------------------------------------------- the loss
class JointDiffusionLoss:
    """UniDiffuser's objective (Bao et al. 2023, Sec. 3.1) for any Gaussian process.

    Per sample, every modality ``m`` gets its own time ``t_m``; the loss is
    ``sum_m weight_m * L_m`` where ``L_m`` is :class:`~polydiff.core.losses.DiffusionLoss`'s
    per-sample loss of modality ``m`` (same ``target``, ``weighting``, ``dim_reduction``)
    computed from the network's joint output. A modality at a clean time (``sigma(t_m) = 0``)
    is input only: its term is 0 (its noise is not identifiable).

    Times (per modality, independently): uniform on ``[t_min, t_max]`` (the paper's
    objective), except with probability ``clean_prob[m]`` exactly clean (``t_zero``) and with
    ``noise_prob[m]`` exactly ``t_max``. These point masses put training weight on the two
    times that conditional and marginal sampling use, which the continuous uniform density
    never hits (an option here; the paper samples discrete times uniformly). A modality in
    ``fixed_times`` always takes that time: ``fixed_times={"text": 0.0}`` with
    ``weights={"text": 0}`` is a conditional model of the other modalities given clean text,
    and the loss equals :class:`~polydiff.core.losses.DiffusionLoss` of that conditional model.
    With probability ``one_clean_prob`` a sample is instead a *conditional* one: exactly one
    modality (uniformly among those not in ``fixed_times``) is clean and the others take their
    uniform times (no point masses), so every conditional task gets direct training signal in
    one model (a mixture over time combinations; 0, the default, draws no extra numbers).

    Args:
        process: the forward process (shared by the modalities, so they can be sampled
            together with one time).
        modalities: names of the modalities (keys of ``x0``).
        target, weighting, min_snr_gamma, sigma_data, dim_reduction: as
            :class:`~polydiff.core.losses.DiffusionLoss` (uniform time sampling).
        weights: per-modality weights (default 1).
        clean_prob, noise_prob: per-modality probabilities of the clean and pure-noise ends.
        one_clean_prob: probability of a sample with exactly one clean modality.
        fixed_times: per-modality fixed times.

    Call ``loss(model, x0, cond=..., t=..., eps=..., generator=...)`` with ``x0`` a mapping
    modality -> ``(B, ...)`` tensor; ``model(xs, ts, **cond)`` returns a mapping modality ->
    prediction of type ``target`` (times cast to the data dtype).
    """

    def __init__(self, process: GaussianProcess, modalities: Sequence[str], *,
                 target: str = "epsilon", weighting: str | WeightFn = "uniform",
                 weights: Mapping[str, float] | None = None,
                 clean_prob: Mapping[str, float] | None = None,
                 noise_prob: Mapping[str, float] | None = None,
                 fixed_times: Mapping[str, float] | None = None,
                 min_snr_gamma: float = 5.0, sigma_data: float = 0.5,
                 dim_reduction: str = "mean", one_clean_prob: float = 0.0):
        self.modalities = list(modalities)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names, got {self.modalities}")
        if target not in PREDICTION_TYPES:
            raise ValueError(f"unknown target {target!r}; expected one of {PREDICTION_TYPES}")
        self.process, self.target = process, target
        self.base = DiffusionLoss(process, target, weighting, min_snr_gamma=min_snr_gamma,
                                  sigma_data=sigma_data, dim_reduction=dim_reduction)
        self.weights = self._per_modality("weights", weights, 1.0, lo=0.0, hi=math.inf)
        self.clean_prob = self._per_modality("clean_prob", clean_prob, 0.0)
        self.noise_prob = self._per_modality("noise_prob", noise_prob, 0.0)
        for m in self.modalities:
            if self.clean_prob[m] + self.noise_prob[m] > 1.0:
                raise ValueError(f"clean_prob + noise_prob of {m!r} exceed 1")
        if any(p > 0 for p in self.clean_prob.values()) and process.t_zero is None:
            raise ValueError(f"{type(process).__name__} has no clean time (t_zero): "
                             "clean_prob needs one")
        self.fixed_times = {str(k): float(v) for k, v in (fixed_times or {}).items()}
        unknown = set(self.fixed_times) - set(self.modalities)
        if unknown:
            raise ValueError(f"fixed_times names unknown modalities {sorted(unknown)}")
        if all(self.weights[m] == 0 for m in self.modalities):
            raise ValueError("at least one modality needs a positive weight")
        self.one_clean_prob = float(one_clean_prob)
        if not 0.0 <= self.one_clean_prob <= 1.0:
            raise ValueError(f"one_clean_prob must lie in [0, 1], got {one_clean_prob}")
        if self.one_clean_prob > 0:
            if process.t_zero is None:
                raise ValueError(f"{type(process).__name__} has no clean time (t_zero): "
                                 "one_clean_prob needs one")
            if len([m for m in self.modalities if m not in self.fixed_times]) < 2:
                raise ValueError("one_clean_prob needs at least two modalities with "
                                 "sampled times")

    def _per_modality(self, name: str, values: Mapping[str, float] | None, default: float, *,
                      lo: float = 0.0, hi: float = 1.0) -> dict[str, float]:
        values = dict(values or {})
        unknown = set(values) - set(self.modalities)
        if unknown:
            raise ValueError(f"{name} names unknown modalities {sorted(unknown)}")
        out = {m: float(values.get(m, default)) for m in self.modalities}
        bad = {m: v for m, v in out.items() if not lo <= v <= hi}
        if bad:
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {bad}")
        return out

    # ------------------------------------------------------------------ times
    def sample_times(self, batch: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Independent per-modality times ``{m: (B,) float64}`` (class docstring)."""
        p = self.process
        t_max = float(p.t_max)
        out, uniform = {}, {}
        for m in self.modalities:
            if m in self.fixed_times:
                out[m] = torch.full((batch,), self.fixed_times[m], dtype=torch.float64,
                                    device=device)
                continue
            u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
            t = uniform[m] = p.t_min + (t_max - p.t_min) * u
            pc, pn = self.clean_prob[m], self.noise_prob[m]
            if pc > 0 or pn > 0:
                r = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
                if pc > 0:
                    assert p.t_zero is not None  # checked in __init__ when clean_prob > 0
                    t = torch.where(r < pc, torch.full_like(t, float(p.t_zero)), t)
                if pn > 0:
                    t = torch.where((r >= pc) & (r < pc + pn), torch.full_like(t, t_max), t)
            out[m] = t
        if self.one_clean_prob > 0:  # conditional samples: one clean modality, others uniform
            assert p.t_zero is not None  # checked in __init__
            free = list(uniform)
            cond = torch.rand(batch, generator=generator, dtype=torch.float64,
                              device=device) < self.one_clean_prob
            which = torch.randint(len(free), (batch,), generator=generator, device=device)
            for i, m in enumerate(free):
                t = torch.where(which == i, torch.full_like(uniform[m], float(p.t_zero)),
                                uniform[m])
                out[m] = torch.where(cond, t, out[m])
        return out

    # ------------------------------------------------------------------ evaluation
    def per_modality(self, model: JointModel, x0: Mapping[str, Tensor], *,
                     cond: Mapping[str, Any] | None = None,
                     t: Mapping[str, Tensor | float] | None = None,
                     eps: Mapping[str, Tensor] | None = None,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-sample losses ``{m: (B,)}`` (unweighted by ``weights``). Times (mapping, per
        sample or scalar) and noises are drawn where not given."""
        missing = [m for m in self.modalities if m not in x0]
        if missing:
            raise ValueError(f"x0 lacks modalities {missing}")
        first = x0[self.modalities[0]]
        batch, device = first.shape[0], first.device
        times = self.sample_times(batch, generator=generator, device=device)
        for m, v in (t or {}).items():
            if m not in times:
                raise ValueError(f"time given for unknown modality {m!r}")
            times[m] = as_time(v, batch, device)
        xt, noise = {}, {}
        for m in self.modalities:
            e = None if eps is None else eps.get(m)
            x_t, noise[m] = self.process.marginal(x0[m], times[m], eps=e, generator=generator)
            clean = append_dims(self.process.sigma(times[m]) == 0, x_t)
            xt[m] = torch.where(clean, x0[m], x_t)
        dtype = first.real.dtype if first.is_complex() else first.dtype
        preds = model(xt, {m: times[m].to(dtype) for m in self.modalities}, **dict(cond or {}))
        out = {}
        for m in self.modalities:
            if m not in preds:
                raise ValueError(f"the model returned no prediction for modality {m!r}")
            true = from_x0_eps(x0[m], noise[m], self.target, xt[m], times[m], self.process)
            sq = (preds[m] - true).square().reshape(batch, -1)
            mse = sq.mean(1) if self.base.dim_reduction == "mean" else sq.sum(1)
            active = self.process.sigma(times[m]) > 0
            w = torch.where(active, self.base.weight_in(torch.where(active, times[m],
                                                                    float(self.process.t_max)),
                                                        self.target), 0.0)
            out[m] = w.to(mse.dtype) * torch.where(active, mse, 0.0)
        return out

    def per_sample(self, model: JointModel, x0: Mapping[str, Tensor], **kwargs: Any) -> Tensor:
        """``sum_m weight_m L_m`` per sample, ``(B,)``."""
        parts = self.per_modality(model, x0, **kwargs)
        return sum(self.weights[m] * parts[m] for m in self.modalities)  # type: ignore[return-value]

    def __call__(self, model: JointModel, x0: Mapping[str, Tensor], *,
                 cond: Mapping[str, Any] | None = None,
                 t: Mapping[str, Tensor | float] | None = None,
                 eps: Mapping[str, Tensor] | None = None,
                 generator: torch.Generator | None = None, reduction: str = "mean") -> Tensor:
        """The loss, reduced over the batch (``"mean"``, ``"sum"`` or ``"none"``)."""
        losses = self.per_sample(model, x0, cond=cond, t=t, eps=eps, generator=generator)
        if reduction == "mean":
            return losses.mean()
        if reduction == "sum":
            return losses.sum()
        if reduction == "none":
            return losses
        raise ValueError(f"unknown reduction {reduction!r}")

    def objective(self) -> Callable[[Any, Any, torch.Generator], Tensor]:
        """``objective(model, batch, generator)`` for :class:`~polydiff.core.training.Trainer`:
        ``batch`` maps each modality to its ``(B, ...)`` tensor (other keys: conditioning)."""

        def fn(model: Any, batch: Mapping[str, Any], generator: torch.Generator) -> Tensor:
            x0 = {m: batch[m] for m in self.modalities}
            cond = {k: v for k, v in batch.items() if k not in x0}
            return self(model, x0, cond=cond, generator=generator)

        return fn


# --------------------------------------------------------------------------- sampling
class JointDenoiser(Denoiser):
    """A denoiser over the flat packing of the modalities ``generate`` of a joint network.

    ``x0_eps(x, t, **cond)``: ``x`` is ``layout.pack`` of the generated modalities, all at the
    time ``t``; every other modality ``m`` of the layout is held at ``cond[m]`` (its value)
    and time ``cond["t_" + m]`` (per sample or scalar): its clean value (``t_zero``) for a
    conditional, noise at ``t_max`` for a marginal (Bao et al. 2023, Sec. 3.1). Remaining
    ``cond`` entries go to the network. The network predicts ``prediction_type`` for each
    modality; only the generated ones are used.
    """

    def __init__(self, model: JointModel, process: GaussianProcess, layout: ModalityLayout,
                 generate: Sequence[str], prediction_type: str = "epsilon",
                 time_input: Callable[[Tensor], Tensor] | None = None):
        super().__init__(process)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}")
        self.model, self.layout = model, layout
        self.generate = layout._check(generate)
        self.held = [m for m in layout.names if m not in self.generate]
        self.prediction_type, self.time_input = prediction_type, time_input

    def network(self, xs: Mapping[str, Tensor], ts: Mapping[str, Tensor],
                cond: Mapping[str, Any]) -> dict[str, Tensor]:
        """Call the network on the generated modalities ``xs`` at times ``ts`` (``(B,)``
        each), the held ones and the rest of the conditioning taken from ``cond``."""
        rest = dict(cond)
        xs, ts = dict(xs), dict(ts)
        first = xs[self.generate[0]]
        b, t_dtype = first.shape[0], ts[self.generate[0]].dtype
        for m in self.held:
            if m not in rest or time_key(m) not in rest:
                raise ValueError(f"modality {m!r} is held: pass cond[{m!r}] and "
                                 f"cond[{time_key(m)!r}]")
            xs[m] = rest.pop(m)
            ts[m] = as_time(rest.pop(time_key(m)), b, first.device, dtype=t_dtype)
        dtype = first.real.dtype if first.is_complex() else first.dtype
        t_in = {m: (self.time_input(v) if self.time_input else v).to(dtype)
                for m, v in ts.items()}
        return dict(self.model(xs, t_in, **rest))

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        out = self.network(self.layout.unpack(x, self.generate),
                           {m: t for m in self.generate}, cond)
        pred = self.layout.pack(out, self.generate)
        return to_x0_eps(pred, self.prediction_type, x, t, self.process)


class JointMarginalGuidance(Denoiser):
    """Classifier-free guidance of joint sampling without a null token (Bao et al. 2023,
    Sec. 3.2): for every generated modality ``m``,
    ``eps_m = (1 + s) eps_m^joint - s eps_m^marginal``, where the joint prediction has every
    generated modality at ``t`` and the marginal of ``m`` holds the other generated modalities
    at pure noise (``t_max``, the fixed draws ``noise``). ``s = 0`` is plain joint sampling.
    Costs one joint and one marginal evaluation per modality per step (batched together).

    Args:
        denoiser: a :class:`JointDenoiser` generating two or more modalities.
        weight: ``s`` (the paper's guidance scale; ``1 + s`` is diffusers' scale).
        noise: ``{m: (B, ...)}`` the noise that stands in for each generated modality in the
            others' marginals (default: drawn once per call from ``generator``).
    """

    def __init__(self, denoiser: JointDenoiser, weight: float, *,
                 noise: Mapping[str, Tensor] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(denoiser.process)
        if len(denoiser.generate) < 2:
            raise ValueError("joint guidance needs a denoiser generating two or more modalities")
        self.denoiser, self.weight = denoiser, float(weight)
        self.noise, self.generator = (dict(noise) if noise is not None else None), generator

    def x0_eps(self, x: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor]:
        d = self.denoiser
        if self.weight == 0.0:
            return d.x0_eps(x, t, **cond)
        gen = d.generate
        b = x.shape[0]
        noise = self.noise or d.layout.noise(b, gen, generator=self.generator, device=x.device,
                                             dtype=x.dtype)
        parts = d.layout.unpack(x, gen)
        t_max = torch.full_like(t, float(self.process.t_max))
        # one batch: the joint input, then for each m the input with the others at noise
        xs_all = [dict(parts)] + [{n: (parts[n] if n == m else noise[n]) for n in gen}
                                  for m in gen]
        ts_all = [{n: t for n in gen}] + [{n: (t if n == m else t_max) for n in gen}
                                          for m in gen]
        k = len(xs_all)
        xs = {n: torch.cat([xx[n] for xx in xs_all]) for n in gen}
        ts = {n: torch.cat([tt[n] for tt in ts_all]) for n in gen}
        big = {key: (torch.cat([v] * k) if torch.is_tensor(v) and v.ndim and v.shape[0] == b
                     else v) for key, v in cond.items()}
        for m in d.held:  # scalar times of held modalities, expanded to the batch first
            big[time_key(m)] = torch.cat([as_time(cond[time_key(m)], b, x.device,
                                                  dtype=t.dtype)] * k)
        out = d.network(xs, ts, big)
        joint = {n: out[n][:b] for n in gen}
        guided = {}
        for i, m in enumerate(gen, start=1):
            marg = out[m][i * b:(i + 1) * b]
            guided[m] = (1.0 + self.weight) * joint[m] - self.weight * marg
        pred = d.layout.pack(guided, gen)
        return to_x0_eps(pred, d.prediction_type, x, t, self.process)
