"""Progressive distillation: a student that takes one deterministic sampling step where its
teacher takes two.

Implements Algorithm 2 of Salimans & Ho (2022), "Progressive Distillation for Fast Sampling of
Diffusion Models", for every Gaussian process of polydiff and every parameterization (the
student is any :class:`~polydiff.core.denoiser.Denoiser`); Huang et al. (2022), "ProDiff:
Progressive Fast Diffusion Model for High-Quality Text-to-Speech", use it to bring an
x0-predicting 4-step teacher down to 2 steps.

The teacher samples on a descending grid ``t_0 > t_1 > ... > t_N`` of ``N`` steps (even) with
DDIM (``eta = 0``, Song et al. 2021, eq. 12); the student's grid is every other point,
``s_i = t_{2i}`` (:func:`student_grid`), ``N / 2`` steps. For a student step ``s_i -> s_{i+1}``
from ``z = x_t - c`` (``c`` the process centre, 0 for centred processes) the teacher takes the
two DDIM steps ``t_{2i} -> t_{2i+1} -> t_{2i+2}`` and lands on ``z''``; the *target* is the
clean-data estimate ``x~`` whose single DDIM step lands on the same point,

    ``alpha'' x~ + sigma'' (z - alpha x~) / sigma = z''``  =>
    ``x~ = (z'' - (sigma'' / sigma) z) / (alpha'' - (sigma'' / sigma) alpha)``

(Salimans & Ho, Alg. 2, the ``x~`` line; ``''`` marks the end of the student step; when
``sigma'' = 0`` this is ``z'' / alpha''``). The student is trained on
``w(t) |x^_student(z, t) - x~|^2`` with Salimans & Ho's truncated-SNR weight
``w = max(SNR(t), 1)`` (their Sec. 4, "truncated SNR weighting") or ProDiff's plain x0 error.
After training, sampling the student with ``N / 2`` DDIM steps on :func:`student_grid`
reproduces the teacher's ``N`` steps (exactly, for a perfect student: see the tests).

:func:`teacher_target` is pure arithmetic on the teacher's ``(x0, eps)`` (per-sample times);
:class:`ProgressiveDistillationLoss` is the training loss (a Trainer objective through
:meth:`ProgressiveDistillationLoss.objective`); :func:`distill` runs rounds ``N -> N/2 -> ...``
with the engine's :class:`~polydiff.core.training.Trainer`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import Denoiser
from polydiff.core.processes.gaussian import GaussianProcess
from polydiff.core.samplers.ode import ddim_stepper
from polydiff.core.shapes import append_dims

__all__ = ["DISTILL_WEIGHTINGS", "ProgressiveDistillationLoss", "distill", "student_grid",
           "teacher_target"]

DISTILL_WEIGHTINGS = ("truncated_snr", "x0", "snr")


def student_grid(teacher_grid: Tensor) -> Tensor:
    """The student's grid: every other time of the teacher's descending grid of ``N`` steps
    (``N`` even), ``N / 2`` steps with the same ends."""
    ts = torch.as_tensor(teacher_grid, dtype=torch.float64).flatten()
    n = ts.numel() - 1
    if n < 2 or n % 2:
        raise ValueError(f"the teacher grid needs an even number of steps >= 2, got {n}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the teacher grid must decrease strictly")
    return ts[::2].clone()


def _ddim_step(process: GaussianProcess, z: Tensor, z0: Tensor, eps: Tensor, t: Tensor,
               t_next: Tensor) -> Tensor:
    """Core's deterministic DDIM step (:func:`~polydiff.core.samplers.ode.ddim_stepper`,
    ``eta = 0``, Song et al. 2021, eq. 12) of the centred variable from per-sample times
    ``t`` to ``t_next``: one stepper per distinct ``(t, t_next)`` pair (a distillation batch
    has at most ``N / 2``), applied to the samples at that pair."""
    uniq, inverse = torch.unique(torch.stack([t, t_next], 1), dim=0, return_inverse=True)
    steppers = [ddim_stepper(process.alpha(pair), process.sigma(pair)) for pair in uniq.cpu()]
    if len(steppers) == 1:
        return steppers[0].step(0, z, z0, eps)
    out = torch.empty_like(z0)
    for k, stepper in enumerate(steppers):
        sel = inverse == k
        out[sel] = stepper.step(0, z[sel], z0[sel], eps[sel])
    return out


@torch.no_grad()
def teacher_target(teacher: Denoiser, x: Tensor, t: Tensor, t_mid: Tensor, t_next: Tensor,
                   cond: Mapping[str, Any] | None = None) -> Tensor:
    """The distillation target ``x~`` (module docstring): the clean-data estimate whose one
    DDIM step ``t -> t_next`` lands where the teacher's two DDIM steps ``t -> t_mid ->
    t_next`` land. ``t``, ``t_mid``, ``t_next``: per-sample times ``(B,)`` (or scalars);
    returns ``x~`` in ``x``'s space (centre added back)."""
    cond = dict(cond or {})
    p = teacher.process
    b = x.shape[0]
    t, t_mid, t_next = (torch.as_tensor(v, dtype=torch.float64, device=x.device).expand(b)
                        for v in (t, t_mid, t_next))
    c = teacher.center(cond)
    z = x if c is None else x - c
    x0, eps = teacher.x0_eps(x, t, **cond)
    z0 = x0 if c is None else x0 - c
    z_mid = _ddim_step(p, z, z0, eps, t, t_mid)
    x0, eps = teacher.x0_eps(z_mid if c is None else z_mid + c, t_mid, **cond)
    z0 = x0 if c is None else x0 - c
    z_next = _ddim_step(p, z_mid, z0, eps, t_mid, t_next)
    a_n, s_n = p.alpha(t_next), p.sigma(t_next)
    ratio = s_n / p.sigma(t)
    target = (z_next - append_dims(ratio, z) * z) / append_dims(a_n - ratio * p.alpha(t), z)
    return target if c is None else target + c


class ProgressiveDistillationLoss:
    """The student's loss of one distillation round (Salimans & Ho 2022, Algorithm 2).

    Args:
        teacher: the teacher denoiser (frozen here: evaluated under ``no_grad``).
        teacher_grid: the teacher's descending grid of ``N`` steps (``N`` even), e.g.
            ``time_grid(process, N, "uniform", t_end=process.t_zero)``.
        weighting: ``"truncated_snr"`` (``max(SNR, 1)`` on the x0 error, Salimans & Ho),
            ``"x0"`` (the plain x0 error, ProDiff), ``"snr"`` (the eps error), or a
            callable ``w(t)``.
        dim_reduction: ``"mean"`` or ``"sum"`` of the squared error over non-batch dims.

    ``loss(student, x0, cond=..., mask=..., generator=..., index=...)``: draws a student step
    ``i`` per sample (uniform over the ``N / 2`` steps unless ``index`` is given), noises
    ``x0`` to ``s_i`` by the forward process, and compares the student's x0 estimate with
    :func:`teacher_target`. ``mask`` as in :class:`~polydiff.core.losses.DiffusionLoss`.
    """

    def __init__(self, teacher: Denoiser, teacher_grid: Tensor,
                 weighting: str | Callable[[Tensor], Tensor] = "truncated_snr", *,
                 dim_reduction: str = "mean"):
        if not isinstance(teacher, Denoiser):
            raise TypeError("the teacher must be a polydiff Denoiser")
        if not callable(weighting) and weighting not in DISTILL_WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of "
                             f"{DISTILL_WEIGHTINGS} or a callable")
        if dim_reduction not in ("mean", "sum"):
            raise ValueError("dim_reduction must be 'mean' or 'sum'")
        self.teacher, self.weighting, self.dim_reduction = teacher, weighting, dim_reduction
        self.teacher_grid = torch.as_tensor(teacher_grid, dtype=torch.float64).flatten()
        self.student_grid = student_grid(self.teacher_grid)
        self.process = teacher.process

    @property
    def student_steps(self) -> int:
        return self.student_grid.numel() - 1

    def times(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(t, t_mid, t_next)`` of student steps ``index`` (ints, any shape)."""
        tg = self.teacher_grid.to(index.device)
        return tg[2 * index], tg[2 * index + 1], tg[2 * index + 2]

    def weight(self, t: Tensor) -> Tensor:
        """The weight on the x0-space squared error at time ``t`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if callable(self.weighting):
            return torch.as_tensor(self.weighting(t), dtype=torch.float64)
        if self.weighting == "x0":
            return torch.ones_like(t)
        snr = torch.exp(self.process.log_snr(t))
        return snr if self.weighting == "snr" else snr.clamp(min=1.0)

    def per_sample(self, student: Denoiser, x0: Tensor, *, cond: Mapping[str, Any] | None = None,
                   generator: torch.Generator | None = None, mask: Tensor | None = None,
                   index: Tensor | None = None) -> Tensor:
        """Per-sample losses ``(B,)``."""
        cond = dict(cond or {})
        b = x0.shape[0]
        if index is None:
            index = torch.randint(0, self.student_steps, (b,), generator=generator,
                                  device=x0.device)
        index = torch.as_tensor(index, device=x0.device).long().expand(b)
        t, t_mid, t_next = self.times(index)
        c = self.process.center(cond)
        x_t, _ = self.process.marginal(x0, t, y=c, generator=generator)
        target = teacher_target(self.teacher, x_t, t, t_mid, t_next, cond)
        pred = student.x0(x_t, t, **cond)
        sq = (pred - target).square()
        if mask is None:
            sq = sq.reshape(b, -1)
            err = sq.mean(1) if self.dim_reduction == "mean" else sq.sum(1)
        else:
            m = torch.broadcast_to(mask.to(sq.dtype), sq.shape).reshape(b, -1)
            err = (sq.reshape(b, -1) * m).sum(1)
            if self.dim_reduction == "mean":
                err = err / m.sum(1).clamp_min(1.0)
        return self.weight(t).to(err) * err

    def __call__(self, student: Denoiser, x0: Tensor, *, cond: Mapping[str, Any] | None = None,
                 generator: torch.Generator | None = None, mask: Tensor | None = None,
                 index: Tensor | None = None, reduction: str = "mean") -> Tensor:
        losses = self.per_sample(student, x0, cond=cond, generator=generator, mask=mask,
                                 index=index)
        if reduction == "none":
            return losses
        if reduction not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {reduction!r}")
        return losses.mean() if reduction == "mean" else losses.sum()

    def objective(self) -> Callable[[nn.Module, Any, torch.Generator], Tensor]:
        """``objective(student, batch, generator)`` for the
        :class:`~polydiff.core.training.Trainer`: a batch is ``x0`` or a mapping with
        ``"x0"``, optional ``"mask"`` and conditioning under any other key."""

        def fn(model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
            if not isinstance(model, Denoiser):
                raise TypeError("the student must be a polydiff Denoiser")
            if isinstance(batch, Tensor):
                return self(model, batch, generator=generator)
            cond = dict(batch)
            x0, mask = cond.pop("x0"), cond.pop("mask", None)
            return self(model, x0, cond=cond, mask=mask, generator=generator)

        return fn


def distill(teacher: Denoiser, data: Any, teacher_grid: Tensor, *, target_steps: int = 1,
            config: Any = None, weighting: str | Callable[[Tensor], Tensor] = "truncated_snr",
            run_dir: str | Path | None = None, resume: bool = True,
            objective: Callable[[ProgressiveDistillationLoss], Any] | None = None
            ) -> list[Denoiser]:
    """Progressive distillation rounds ``N -> N/2 -> ... -> target_steps`` (Salimans & Ho
    2022, Algorithm 2): each student starts as a copy of its teacher and is trained with the
    engine's :class:`~polydiff.core.training.Trainer` (``config``: a
    :class:`~polydiff.core.training.TrainConfig`, the same for every round; each round has
    its own run folder ``run_dir/NtoM`` and resumes from it). ``objective(loss)`` may turn
    the round's loss into a Trainer objective (default :meth:`ProgressiveDistillationLoss.
    objective`). Returns the students, fastest last; ``student.sampling_grid`` holds the
    grid each one samples on."""
    from polydiff.core.training import TrainConfig, Trainer

    grid = torch.as_tensor(teacher_grid, dtype=torch.float64).flatten()
    n = grid.numel() - 1
    if target_steps < 1 or n % target_steps or (n // target_steps) & (n // target_steps - 1):
        raise ValueError(f"cannot halve {n} steps down to {target_steps}: need N / target a "
                         "power of two")
    config = config or TrainConfig()
    students: list[Denoiser] = []
    current = teacher
    while grid.numel() - 1 > target_steps:
        loss = ProgressiveDistillationLoss(current, grid, weighting)
        student = copy.deepcopy(current).requires_grad_(True)  # a frozen teacher's copy too
        for p in current.parameters():
            p.requires_grad_(False)
        steps_now = grid.numel() - 1
        cfg = dataclasses.replace(config, desc=f"distill-{steps_now}to{steps_now // 2}")
        if run_dir is not None:
            cfg.run_dir = str(Path(run_dir) / f"{steps_now}to{steps_now // 2}")
        fn = objective(loss) if objective is not None else loss.objective()
        trainer = Trainer(student, fn, data, cfg)
        trainer.fit(resume=resume)
        if trainer.ema is not None:
            trainer.ema.copy_to(student)  # the EMA weights are the student
        student.sampling_grid = loss.student_grid
        students.append(student)
        current, grid = student, loss.student_grid
    return students
