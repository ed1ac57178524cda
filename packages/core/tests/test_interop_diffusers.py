"""Tests of polydiff.core.interop.diffusers against diffusers' own schedulers and loops, with a
tiny randomly initialised UNet2DModel (diffusers is in the dev environment: these run here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

from polydiff.core.interop.diffusers import (  # noqa: E402
    SOLVERS,
    PolydiffScheduler,
    denoiser_from_diffusers,
    diffusers_timesteps_to_times,
    process_from_scheduler,
    scheduler_time_grid,
)
from polydiff.core.processes import VPDiscrete  # noqa: E402
from polydiff.core.samplers import (  # noqa: E402
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_unipc,
)

F64 = torch.float64
PRED = ("epsilon", "sample", "v_prediction")
pytestmark = pytest.mark.filterwarnings("ignore:torch.searchsorted")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest (and immune to a loaded machine) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _unet(num_class_embeds: int | None = None) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_class_embeds).eval()


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    return _unet()


def _noise(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _diffusers_loop(unet, sched, x, **unet_kwargs):
    for t in sched.timesteps:
        out = unet(sched.scale_model_input(x, t), t, **unet_kwargs).sample
        x = sched.step(out, t, x).prev_sample
    return x


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --------------------------------------------------------------------------- optional extra
def test_no_module_level_diffusers_import():
    """diffusers is an optional extra: no polydiff.core module imports it at module level."""
    import ast
    from pathlib import Path

    import polydiff.core

    root = Path(polydiff.core.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "diffusers" for n in names), path


@pytest.mark.slow
def test_core_imports_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import polydiff.core, polydiff.core.losses, polydiff.core.interop\n"
        "import polydiff.core.interop.diffusers as m\n"
        "try:\n    m.PolydiffScheduler\nexcept ImportError as e:\n    print('lazy', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lazy" in out.stdout and "diffusers" in out.stdout


# --------------------------------------------------------------------------- process / model
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_process_from_scheduler(schedule):
    sched = DDPMScheduler(beta_schedule=schedule)
    p = process_from_scheduler(sched)
    assert isinstance(p, VPDiscrete) and p.num_train_timesteps == 1000
    k = torch.tensor([999, 998, 500, 17, 1, 0])
    t = diffusers_timesteps_to_times(k, p, final=None)
    torch.testing.assert_close(t, (k.double() + 1) / 1000)
    ac = sched.alphas_cumprod.double()[k]
    torch.testing.assert_close(p.alpha(t) ** 2, ac, rtol=1e-12, atol=0)
    torch.testing.assert_close(p.sigma(t) ** 2, 1 - ac, rtol=1e-12, atol=0)
    torch.testing.assert_close(p.model_timestep(t), k.double(), rtol=0, atol=1e-9)
    # the polydiff scheduler's own process is the same schedule (computed in float64)
    own = process_from_scheduler(PolydiffScheduler(beta_schedule=schedule))
    torch.testing.assert_close(own.alpha(t) ** 2, ac, rtol=2e-6, atol=1e-10)
    with pytest.raises(TypeError):
        process_from_scheduler(object())


@pytest.mark.parametrize("prediction_type", PRED)
def test_denoiser_matches_diffusers_formulas(prediction_type):
    """x0 at an integer timestep is DDIM's pred_original_sample; the network sees timestep k
    and the class labels."""
    unet = _unet(num_class_embeds=3)
    seen = []
    hook = unet.register_forward_pre_hook(lambda m, a, kw: seen.append(a[1]), with_kwargs=True)
    sched = DDIMScheduler(prediction_type=prediction_type, clip_sample=False)
    den = denoiser_from_diffusers(unet, sched)
    assert den.prediction_type == prediction_type
    x, k = _noise(), 600
    labels = torch.tensor([0, 2])
    t = torch.full((2,), (k + 1) / 1000, dtype=F64)
    with torch.no_grad():
        x0 = den.x0(x, t, class_labels=labels)
        sched.set_timesteps(2)  # step() needs it; pred_original_sample uses alphas_cumprod[k]
        out = unet(x, k, class_labels=labels).sample
        ref = sched.step(out, k, x).pred_original_sample
    hook.remove()
    torch.testing.assert_close(seen[0].float(), torch.full((2,), float(k)))
    torch.testing.assert_close(x0, ref, rtol=1e-5, atol=1e-5)
    # a learned-variance output (twice the channels) is cut to its mean part
    wide = UNet2DModel(sample_size=8, in_channels=2, out_channels=4, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    with torch.no_grad():
        assert denoiser_from_diffusers(wide, sched).eps(x, t).shape == x.shape


def test_timestep_conversion():
    p = VPDiscrete.linear(1000)
    ts = diffusers_timesteps_to_times([999, 666, 333], p)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.667, 0.334, 0.0], dtype=F64))
    ts = diffusers_timesteps_to_times([999, 666, 333], p, final="sigma_min")
    assert float(ts[-1]) == pytest.approx(1e-3)
    assert diffusers_timesteps_to_times([999, 0], p, final="sigma_min").numel() == 2
    with pytest.raises(ValueError):
        diffusers_timesteps_to_times([5, 9], p)
    with pytest.raises(ValueError):
        diffusers_timesteps_to_times([9, 5], p, final="end")


# ------------------------------------------------------------------ polydiff on diffusers' grid
_DPM_CASES = [(pt, final, 8) for pt in PRED for final in ("zero", "sigma_min")]
_DPM_CASES += [("epsilon", "zero", 16), ("v_prediction", "sigma_min", 16)]


@pytest.mark.parametrize(("prediction_type", "final", "steps"), _DPM_CASES)
def test_dpmpp_2m_reproduces_dpmsolver_multistep(unet, prediction_type, final, steps):
    """sample_dpmpp_2m on the scheduler's own grid retraces DPMSolverMultistepScheduler(
    "dpmsolver++", order 2, lower_order_final) to float32 precision: 8 steps exercise
    lower_order_final (< 15 steps), 16 steps the full-order last step into sigma_min."""
    sched = DPMSolverMultistepScheduler(prediction_type=prediction_type, solver_order=2,
                                        algorithm_type="dpmsolver++", final_sigmas_type=final,
                                        lower_order_final=True)
    sched.set_timesteps(steps)
    ts = scheduler_time_grid(sched)
    assert ts.numel() == steps + 1
    torch.testing.assert_close(ts[:-1], (sched.timesteps.double() + 1) / 1000)
    x = _noise()
    ref = _diffusers_loop(unet, sched, x.clone())
    got = sample_dpmpp_2m(denoiser_from_diffusers(unet, sched), x, ts, disable=True)
    assert _rel(got, ref) < 2e-5


@pytest.mark.parametrize("prediction_type", PRED)
@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_ddim_reproduces_ddim_scheduler(unet, prediction_type, alpha_to_one):
    sched = DDIMScheduler(prediction_type=prediction_type, clip_sample=False,
                          set_alpha_to_one=alpha_to_one, steps_offset=1)
    sched.set_timesteps(10)
    ts = scheduler_time_grid(sched)
    assert float(ts[-1]) == (0.0 if alpha_to_one else 1e-3)
    x = _noise(2)
    ref = _diffusers_loop(unet, sched, x.clone())
    got = sample_ddim(denoiser_from_diffusers(unet, sched), x, ts, disable=True)
    assert _rel(got, ref) < 2e-5


def test_ddim_trailing_spacing_is_refused():
    sched = DDIMScheduler(timestep_spacing="trailing")
    sched.set_timesteps(7)
    with pytest.raises(ValueError, match="not its next timestep"):
        scheduler_time_grid(sched)


def test_class_conditional_sampling_matches_diffusers():
    unet = _unet(num_class_embeds=3)
    labels = torch.tensor([2, 0])
    sched = DPMSolverMultistepScheduler(prediction_type="epsilon")
    sched.set_timesteps(6)
    x = _noise(3)
    ref = _diffusers_loop(unet, sched, x.clone(), class_labels=labels)
    got = sample_dpmpp_2m(denoiser_from_diffusers(unet, sched), x, scheduler_time_grid(sched),
                          cond={"class_labels": labels}, disable=True)
    assert _rel(got, ref) < 2e-5
    other = sample_dpmpp_2m(denoiser_from_diffusers(unet, sched), x, scheduler_time_grid(sched),
                            cond={"class_labels": labels.flip(0)}, disable=True)
    assert _rel(other, ref) > 1e-3


def test_karras_sigmas_grid():
    sched = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    sched.set_timesteps(10)
    ts = scheduler_time_grid(sched)
    p = process_from_scheduler(sched)
    assert float(ts[-1]) == 0.0 and bool((ts[1:] < ts[:-1]).all())
    torch.testing.assert_close(p.sigma_tilde(ts[:-1]), sched.sigmas[:-1].double(), rtol=1e-5,
                               atol=0)


# --------------------------------------------------------------------------- PolydiffScheduler
_FUNCS = {"dpmpp_2m": sample_dpmpp_2m, "dpmpp_3m": sample_dpmpp_3m,
          "dpmpp_2m_sde": sample_dpmpp_2m_sde, "ddim": sample_ddim, "unipc": sample_unipc}


_SCHED_CASES = [(solver, "logsnr") for solver in SOLVERS]
_SCHED_CASES += [("dpmpp_2m", "edm"), ("dpmpp_2m", "uniform"), ("unipc", "edm")]


@pytest.mark.parametrize(("solver", "grid"), _SCHED_CASES)
def test_polydiff_scheduler_loop_equals_sampler(unet, solver, grid):
    """The standard diffusers loop over PolydiffScheduler gives exactly polydiff's sampler."""
    sched = PolydiffScheduler(solver=solver, grid=grid, prediction_type="v_prediction")
    sched.set_timesteps(7)
    assert sched.timesteps.numel() == 7 and sched.times.numel() == 8
    assert float(sched.times[-1]) == 0.0 and sched.order == 1
    x = _noise(4)
    g = torch.Generator().manual_seed(5)
    y = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(y, t), t).sample
            y = sched.step(out, t, y, generator=g).prev_sample
    assert bool(torch.isfinite(y).all())
    den = sched.denoiser(unet)
    kw = {"generator": torch.Generator().manual_seed(5)} if solver in ("ddim",
                                                                       "dpmpp_2m_sde") else {}
    ref = _FUNCS[solver](den, x, sched.times, disable=True, **kw)
    assert torch.equal(y, ref)
    assert torch.equal(sched.polydiff_sample(den, x, generator=torch.Generator().manual_seed(5)),
                       ref)


def test_polydiff_scheduler_in_a_diffusers_pipeline(unet):
    """Swap PolydiffScheduler into a stock pipeline via from_config; the images are polydiff's
    samples from the pipeline's own initial noise."""
    base = DDPMScheduler(prediction_type="epsilon")
    sched = PolydiffScheduler.from_config(base.config, solver="unipc", grid="edm")
    assert sched.config.prediction_type == "epsilon" and sched.config.solver == "unipc"
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=6, output_type="np").images
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = sched.polydiff_sample(sched.denoiser(unet), x)
    ref = (ref / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert images.shape == (2, 8, 8, 2)
    torch.testing.assert_close(torch.from_numpy(images), torch.from_numpy(ref), rtol=0, atol=0)


def test_polydiff_scheduler_reproduces_dpmsolver_on_its_grid(unet):
    """Custom diffusers timesteps through set_timesteps(timesteps=...) give DPMSolver's grid;
    the PolydiffScheduler loop then matches DPMSolverMultistepScheduler itself."""
    ref_sched = DPMSolverMultistepScheduler(prediction_type="sample")
    ref_sched.set_timesteps(9)
    sched = PolydiffScheduler(prediction_type="sample")
    sched.set_timesteps(timesteps=ref_sched.timesteps.tolist())
    torch.testing.assert_close(sched.timesteps, ref_sched.timesteps.float())
    x = _noise(6)
    assert _rel(_diffusers_loop(unet, sched, x.clone()),
                _diffusers_loop(unet, ref_sched, x.clone())) < 2e-5


def test_polydiff_scheduler_helpers():
    sched = PolydiffScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, n = _noise(7), _noise(8)
    k = torch.tensor([10, 900])
    torch.testing.assert_close(sched.add_noise(x0, n, k), ref.add_noise(x0, n, k), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(sched.get_velocity(x0, n, k), ref.get_velocity(x0, n, k),
                               rtol=1e-5, atol=1e-5)
    assert len(sched) == 1000 and sched.init_noise_sigma == 1.0
    sched = PolydiffScheduler(round_timesteps=True, grid="logsnr")
    sched.set_timesteps(12)
    assert torch.equal(sched.timesteps, sched.timesteps.round())
    with pytest.raises(ValueError):
        PolydiffScheduler(solver="lms")
    with pytest.raises(ValueError):
        PolydiffScheduler().step(torch.zeros(1, 2), 999, torch.zeros(1, 2))
