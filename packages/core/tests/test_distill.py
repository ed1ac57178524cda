"""Progressive distillation (Salimans & Ho 2022): grids, the DDIM target, the loss, rounds."""

import pytest
import torch
from torch import nn

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.distill import ProgressiveDistillationLoss, distill, student_grid, teacher_target
from polydiff.core.grids import time_grid
from polydiff.core.processes import OUVE, VPCosine, VPLinear
from polydiff.core.samplers import sample_ddim
from polydiff.core.testbeds import GaussianMixture
from polydiff.core.training import TrainConfig

PRODIFF_VP = VPLinear(beta_min=0.1, beta_max=40.0)  # ProDiff's schedule, t_i = i / N


class OracleDenoiser(Denoiser):
    """Knows the clean sample behind every noisy input (an exact teacher for a point mass)."""

    def __init__(self, process, x0):
        super().__init__(process)
        self.x0_true = x0

    def x0_eps(self, x, t, **cond):
        c = self.process.center(cond)
        a = self.process.alpha(t).reshape(-1, 1)
        s = self.process.sigma(t).reshape(-1, 1)
        z, z0 = (x, self.x0_true) if c is None else (x - c, self.x0_true - c)
        return self.x0_true, (z - a * z0) / s


class TargetDenoiser(Denoiser):
    """The perfect student: its x0 estimate at a student grid time is the teacher's target."""

    def __init__(self, teacher, teacher_grid):
        super().__init__(teacher.process)
        self.teacher, self.tg = teacher, teacher_grid

    def x0_eps(self, x, t, **cond):
        i = int(torch.nonzero(torch.isclose(self.tg, t[0].cpu().double()))[0, 0])
        x0 = teacher_target(self.teacher, x, t, self.tg[i + 1].expand_as(t),
                            self.tg[i + 2].expand_as(t), cond)
        c = self.process.center(cond)
        a = self.process.alpha(t).reshape(-1, 1)
        s = self.process.sigma(t).reshape(-1, 1)
        z, z0 = (x, x0) if c is None else (x - c, x0 - c)
        return x0, (z - a * z0) / s


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_student_grid_halves_the_steps(n):
    tg = time_grid(PRODIFF_VP, n, "uniform", t_end=0.0)
    sg = student_grid(tg)
    assert sg.numel() - 1 == n // 2
    torch.testing.assert_close(sg, time_grid(PRODIFF_VP, n // 2, "uniform", t_end=0.0))
    # each student step spans exactly two teacher steps, and the ends are kept
    for i in range(n // 2):
        assert sg[i] == tg[2 * i] and sg[i + 1] == tg[2 * i + 2]
    loss = ProgressiveDistillationLoss(OracleDenoiser(PRODIFF_VP, torch.zeros(1, 1)), tg)
    t, t_mid, t_next = loss.times(torch.arange(n // 2))
    torch.testing.assert_close(t, tg[0:-1:2])
    torch.testing.assert_close(t_mid, tg[1::2])
    torch.testing.assert_close(t_next, tg[2::2])


def test_student_grid_rejects_odd_or_unsorted_grids():
    with pytest.raises(ValueError, match="even"):
        student_grid(torch.tensor([1.0, 0.5, 0.2, 0.0]))
    with pytest.raises(ValueError, match="decrease"):
        student_grid(torch.tensor([1.0, 0.2, 0.5]))


@pytest.mark.parametrize("process", [PRODIFF_VP, VPCosine(), VPLinear()])
def test_target_is_x0_for_an_exact_teacher(process):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 5, generator=g, dtype=torch.float64)
    teacher = OracleDenoiser(process, x0)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.05
    t_mid, t_next = t * 0.6, t * 0.3
    t_next[:8] = 0.0  # the last step of a grid that denoises to sigma = 0
    x_t, _ = process.marginal(x0, t, generator=g)
    torch.testing.assert_close(teacher_target(teacher, x_t, t, t_mid, t_next), x0)


def test_target_is_x0_on_a_point_mass_test_bed():
    """Core's exact Gaussian-mixture denoiser of a single point (zero covariance)."""
    mu = torch.tensor([[0.7, -1.2, 2.0]], dtype=torch.float64)
    gm = GaussianMixture(mu, torch.zeros(1, 3))
    teacher = gm.denoiser(PRODIFF_VP)
    g = torch.Generator().manual_seed(1)
    x0 = mu.expand(32, 3)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x_t, _ = PRODIFF_VP.marginal(x0, t, generator=g)
    target = teacher_target(teacher, x_t, t, 0.5 * t, 0.25 * t)
    torch.testing.assert_close(target, x0)


def test_target_matches_two_core_ddim_steps():
    """One DDIM step from the target lands where core's sample_ddim lands after two steps."""
    gm = GaussianMixture.random(3, n_components=3, seed=2)
    teacher = gm.denoiser(PRODIFF_VP)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ts = torch.tensor([0.75, 0.5, 0.25], dtype=torch.float64)
    two = sample_ddim(teacher, x, ts, disable=True)
    x0 = teacher_target(teacher, x, ts[0], ts[1], ts[2])
    a, s = PRODIFF_VP.alpha(ts), PRODIFF_VP.sigma(ts)
    one = a[2] * x0 + s[2] * (x - a[0] * x0) / s[0]
    torch.testing.assert_close(one, two)


@pytest.mark.parametrize("process,final_zero", [(PRODIFF_VP, True), (OUVE(), False)])
def test_perfect_student_reproduces_the_teacher_on_an_exact_test_bed(process, final_zero):
    """Half the DDIM steps with the target as x0 estimate = the teacher's full grid (also
    for the mean-reverting OUVE process, whose centre y is a condition)."""
    gm = GaussianMixture.random(4, n_components=3, seed=4)
    teacher = gm.denoiser(process)
    n = 8
    if final_zero:
        tg = time_grid(process, n, "uniform", t_end=process.t_zero)
    else:
        tg = time_grid(process, n, "uniform")
    g = torch.Generator().manual_seed(5)
    cond = {"y": torch.randn(32, 4, generator=g, dtype=torch.float64)} if process.center_key \
        else {}
    x = process.prior_sample((32, 4), y=cond.get("y"), generator=g, dtype=torch.float64)
    full = sample_ddim(teacher, x, tg, cond=cond, disable=True)
    student = TargetDenoiser(teacher, tg)
    half = sample_ddim(student, x, student_grid(tg), cond=cond, disable=True)
    torch.testing.assert_close(half, full)
    # and the student's grid is genuinely coarser: the teacher on it lands elsewhere
    coarse = sample_ddim(teacher, x, student_grid(tg), cond=cond, disable=True)
    assert (coarse - full).abs().max() > 1e-3


def test_loss_is_zero_for_the_perfect_student_and_positive_otherwise():
    gm = GaussianMixture.random(3, n_components=2, seed=6)
    teacher = gm.denoiser(PRODIFF_VP)
    tg = time_grid(PRODIFF_VP, 4, "uniform", t_end=0.0)
    loss = ProgressiveDistillationLoss(teacher, tg, weighting="x0")
    x0 = gm.sample(16, generator=torch.Generator().manual_seed(7))
    for i in range(2):
        idx = torch.full((16,), i)
        g = torch.Generator().manual_seed(8)
        assert float(loss(TargetDenoiser(teacher, tg), x0, index=idx, generator=g)) < 1e-18
        assert float(loss(teacher, x0, index=idx, generator=g)) > 1e-6
    with pytest.raises(ValueError, match="weighting"):
        ProgressiveDistillationLoss(teacher, tg, weighting="nope")


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x)], 1))


def test_distill_rounds_bring_the_student_closer_to_its_teacher(tmp_path):
    """4 -> 2 -> 1 with the engine's Trainer: each student, sampled on its halved grid, is
    closer to the 4-step teacher than the teacher itself on that grid."""
    torch.manual_seed(0)
    teacher = ModelDenoiser(_MLP(), PRODIFF_VP, prediction_type="sample")
    data = torch.randn(512, 2) * torch.tensor([1.0, 0.3]) + torch.tensor([0.5, -0.5])
    tg = time_grid(PRODIFF_VP, 4, "uniform", t_end=0.0)
    cfg = TrainConfig(steps=300, batch_size=64, lr=3e-3, ema_decay=None, log_every=100,
                      ckpt_every=0, progress=False, device="cpu")
    students = distill(teacher, data, tg, target_steps=1, config=cfg, weighting="x0",
                       run_dir=tmp_path)
    assert [s.sampling_grid.numel() - 1 for s in students] == [2, 1]
    assert (tmp_path / "4to2" / "checkpoints").is_dir() and (tmp_path / "2to1").is_dir()
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(9))
    ref = sample_ddim(teacher, x, tg, disable=True)
    for s in students:
        err_student = (sample_ddim(s, x, s.sampling_grid, disable=True) - ref).pow(2).mean()
        err_teacher = (sample_ddim(teacher, x, s.sampling_grid, disable=True) - ref).pow(2).mean()
        assert err_student < 0.5 * err_teacher
