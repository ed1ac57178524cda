"""Training-step and 50-step DDIM sampling throughput: polydiff's UNet against diffusers'
UNet2DModel of the same configuration, in one process.

Two configurations:

* ``digits``: a small two-level 2-D U-Net (``UNetConfig.tiny``-like, 32 base channels,
  attention at the 4x4 level and in the middle) on 8x8 single-channel images, batch 128;
* ``cifar10``: DDPM's CIFAR-10 U-Net (``UNetConfig.ddpm_cifar10()``, 35.7M parameters) on
  3x32x32 images, batch 256 on a GPU (small batch, few repeats and, with ``--quick``, fewer
  sampling steps on CPU: the output says which).

Every model starts from the same weights: diffusers' ``UNet2DModel`` initialisation, copied
into polydiff's UNet with ``unet_state_dict_from_diffusers`` (polydiff's own initialisation
zeroes the last convolution of every block, and a kernel multiplying zeros can run faster
than one on real data). The variants, timed interleaved round by round (medians reported):

* ``diffusers_fp32`` / ``diffusers_bf16``: the plain diffusers loops, eager. Training step:
  ``DDPMScheduler.add_noise`` + ``F.mse_loss(unet(noisy, t).sample, noise)`` + AdamW, bf16
  through ``torch.autocast``; sampling: ``DDIMScheduler.set_timesteps(50)`` and
  ``x = sched.step(unet(x, t).sample, t, x)``, bf16 as a pipeline loaded with
  ``torch_dtype=torch.bfloat16`` runs it (bf16 weights and latents, no autocast).
* ``polydiff_fp32``: ``UNet`` trained with ``DiffusionLoss`` (epsilon target,
  ``VPDiscrete.linear``) through ``ModelDenoiser(time_input=process.model_timestep)`` +
  AdamW, sampled with ``sample_ddim`` over ``time_grid(process, 50, "uniform")``; eager.
* ``polydiff_opt``: the same objective and sampler with ``polydiff.gpu``'s helpers:
  channels-last; regional compilation (``compile_regions``: each ResNet block, attention
  block and the output GroupNorm compiled, one graph per distinct block shape; by default
  only on CUDA: ``--compile on`` forces it, ``--compile-scope whole`` compiles the whole
  network instead); training under bf16 autocast with fused AdamW, the whole step (loss,
  backward, optimizer) replayed from one CUDA graph (``GraphedTrainStep``); sampling on a
  bf16 copy of the weights with the sampler's state in fp32 and the whole 50-step loop
  (network call and the engine's DDIM update) replayed from one CUDA graph
  (``GraphedLoop``).
* ``polydiff_compiled``: the ablation: the same compiled network (no new compilation),
  without the whole-step and whole-loop graphs: the training step launched eagerly, sampling
  through ``sample_ddim`` with only the network call of each step graphed
  (``CudaGraphRunner``), which was ``polydiff_opt``'s recipe before.

Sampling variants run on a bf16 copy of the weights made once (speed only is measured); the
inputs are synthetic (uniform noise in [-1, 1] as "data"). Checks, all in the same run:

* diffusers against polydiff (``check``): diffusers' weights in polydiff's UNet (for CIFAR-10
  on a diffusers model with ``downsample_padding=1``, polydiff's symmetric padding), one
  forward pass (fp32 and bf16 autocast) and a short DDIM run on diffusers' own timesteps
  (``scheduler_time_grid``);
* the optimised paths against eager (``opt_check``): the sampled batch of ``polydiff_opt``
  and ``polydiff_compiled`` against ``sample_ddim`` on the fp32 network from the same noise,
  next to plain eager bf16 (the optimised path's relative L2 error must stay within 2x that
  of eager bf16, floor 1e-3); one graphed training step against the same
  step launched eagerly from the same state and RNG seed (same noise, times and dropout
  masks: loss and update must agree); the compiled network's gradient against the eager
  network's, measured against the spread of two eager gradients under different dropout
  masks (same batch, times and noise; the ratio must stay below 1.5).

A time limit (``--deadline``) makes the run bounded: the work is ordered by importance
(``diffusers_bf16`` and the optimised variants, their timing rounds, the checks, then a
CUDA kernel profile, ``--cache-probe``'s warm-up in a new process on the inductor cache this
run filled, and the fp32 variants), every later part is skipped when the time left is too
short, and at the limit (or on SIGTERM) the run stops and prints
what it has, marked ``"complete": false``; ``--out`` is rewritten after every part.

    uv run python tools/bench/train_step.py            # table
    uv run python tools/bench/train_step.py --json     # one JSON object on stdout
    uv run python tools/bench/train_step.py --quick    # tiny CPU smoke run (digits only)

Targets (GPU only): ``polydiff_opt`` samples >= 3x as fast as ``diffusers_bf16`` (and, for
cifar10, >= 630 samples/s) and trains >= 1.6x as fast; its warm-up (compilation, capture)
takes <= 60 s. They are only judged when the device is CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.interop.diffusers import scheduler_time_grid, unet_state_dict_from_diffusers
from polydiff.core.losses import DiffusionLoss
from polydiff.core.nn import UNet, UNetConfig
from polydiff.core.nn.unet import AttentionBlock, ResBlock
from polydiff.core.processes import VPDiscrete
from polydiff.core.samplers import sample_ddim
from polydiff.core.samplers.ode import ddim_stepper
from polydiff.gpu import (
    CudaGraphRunner,
    GraphedLoop,
    GraphedTrainStep,
    autocast,
    compile_regions,
    device_info,
    maybe_compile,
    select_device,
    synchronize,
    time_fn,
    to_channels_last,
)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("diffusers_fp32", "diffusers_bf16", "polydiff_fp32", "polydiff_opt",
            "polydiff_compiled")
TARGETS = {"sample": 3.0, "train": 1.6, "cifar10_sample_per_s": 630.0, "warmup_s": 60.0}
LR = 1e-4
# compiled regions of the U-Net: the repeated blocks, plus the output GroupNorm (a GroupNorm
# inside a block is left to its block)
REGIONS = (ResBlock, AttentionBlock, torch.nn.GroupNorm)
SAMPLE_CHECK = {"vs_eager_bf16": 2.0, "floor": 1e-3}
TRAIN_CHECK = {"loss_rel": 1e-3, "update_rel": 5e-2, "grad_vs_dropout_spread": 1.5}


# --------------------------------------------------------------------------- time limit
def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where unavailable), so that a
    time limit also covers the imports."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Deadline(BaseException):
    """The run's time limit passed (a BaseException: no ``except Exception`` swallows it)."""


class Clock:
    """Seconds left before ``--deadline`` (infinite without one); a timer signal raises
    :class:`Deadline` at the limit even inside a long part (compilation, a timing round)."""

    def __init__(self, limit: float | None, t0: float | None = None):
        self.t0, self.limit = time.monotonic() if t0 is None else t0, limit
        self._previous: dict[int, Any] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return math.inf if self.limit is None else self.limit - self.elapsed()

    def arm(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            raise Deadline(f"signal {signal.Signals(signum).name} after {self.elapsed():.0f} s")

        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)
        if self.limit is not None and hasattr(signal, "setitimer"):
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, stop)
            # re-fires every 2 s until disarmed: a Deadline turned into another error by
            # some cleanup (e.g. an interrupted graph capture) is raised again
            signal.setitimer(signal.ITIMER_REAL, max(self.left(), 1e-3), 2.0)

    def disarm(self) -> None:
        if self.limit is not None and hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# --------------------------------------------------------------------------- configurations
@dataclass
class Spec:
    """What one configuration runs: model, shapes, and how much of it is timed."""

    name: str
    image: tuple[int, int, int]
    train_batch: int
    sample_batch: int
    sample_steps: int
    train_steps_per_round: int
    samples_per_round: int
    rounds: int
    check_steps: int
    check_batch: int


def poly_config(name: str) -> UNetConfig:
    if name == "cifar10":
        return UNetConfig.ddpm_cifar10()
    # additive time embedding of the step index, as diffusers' UNet2DModel
    return UNetConfig.tiny(2, in_channels=1, out_channels=1, base_channels=32, num_heads=2,
                           norm_groups=8, time_scale=1.0, scale_shift=False, dropout=0.1)


def diffusers_kwargs(name: str, *, hub_padding: bool = True) -> dict[str, Any]:
    """UNet2DModel arguments of the same architecture. CIFAR-10: google/ddpm-cifar10-32's
    config (``downsample_padding=0``, ``attention_head_dim=None`` i.e. one head), plus
    DDPM's dropout 0.1; ``hub_padding=False`` uses polydiff's symmetric padding instead."""
    common = dict(freq_shift=1, flip_sin_to_cos=False, norm_eps=1e-6, dropout=0.1,
                  time_embedding_type="positional", act_fn="silu")
    if name == "cifar10":
        return dict(common, sample_size=32, in_channels=3, out_channels=3,
                    block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                      "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                    attention_head_dim=None, norm_num_groups=32,
                    downsample_padding=0 if hub_padding else 1)
    return dict(common, sample_size=8, in_channels=1, out_channels=1,
                block_out_channels=(32, 64), layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=32, norm_num_groups=8, downsample_padding=1)


def specs(device: torch.device, quick: bool, cpu_cifar_batch: int) -> list[Spec]:
    if device.type == "cuda":
        return [Spec("digits", (1, 8, 8), 128, 128, 50, 20, 2, 5, 50, 16),
                Spec("cifar10", (3, 32, 32), 256, 256, 50, 5, 1, 3, 50, 8)]
    if quick:
        return [Spec("digits", (1, 8, 8), 16, 8, 5, 2, 1, 2, 5, 4),
                Spec("cifar10", (3, 32, 32), 1, 1, 2, 1, 1, 1, 2, 1)]
    b = cpu_cifar_batch
    return [Spec("digits", (1, 8, 8), 128, 128, 50, 5, 1, 5, 50, 16),
            Spec("cifar10", (3, 32, 32), b, b, 50, 1, 1, 2, 10, 2)]


# --------------------------------------------------------------------------- helpers
def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` (L2 over everything, in float64)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def ddim_scheduler(diffusers: Any, steps: int) -> Any:
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    beta_start=1e-4, beta_end=0.02, clip_sample=False,
                                    set_alpha_to_one=True, steps_offset=1)
    sched.set_timesteps(steps)
    return sched


def diffusers_sample(unet: Any, sched: Any, x: torch.Tensor) -> torch.Tensor:
    for t in sched.timesteps:
        eps = unet(x, t).sample
        x = sched.step(eps, t, x).prev_sample
    return x


def ddim_loop_step(den: ModelDenoiser, ts: torch.Tensor, batch: int,
                   device: torch.device) -> tuple[Callable[[int, torch.Tensor], torch.Tensor],
                                                  int]:
    """``(step, n)``: ``sample_ddim``'s loop (eta = 0, no centre, no conditioning) as
    ``state = step(i, state)``, with everything that needs the host (the solver's float64
    coefficients, the per-step times) computed here once, so the loop can be captured whole.
    The update is the engine's ``DDIMStepper``."""
    grid = ts.detach().to("cpu", torch.float64)
    process = den.process
    stepper = ddim_stepper(process.alpha(grid), process.sigma(grid), 0.0)
    t_dev = grid.to(device, torch.float32 if device.type == "mps" else torch.float64)
    times = [t_dev[i].expand(batch) for i in range(stepper.steps)]

    def step(i: int, z: torch.Tensor) -> torch.Tensor:
        z0, eps = den.x0_eps(z, times[i])
        return stepper.step(i, z, z0, eps)

    return step, stepper.steps


class Bf16Net:
    """The network call of a sampling step on bf16 weights: fp32 state in, fp32 eps out (the
    sampler's arithmetic stays fp32), channels-last activations."""

    def __init__(self, net: Any):
        self.net = net

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16, memory_format=torch.channels_last)
        return self.net(x, t).float()


class StepGraph:
    """The network call of one sampling step captured by ``CudaGraphRunner`` on first use
    (the ablation's recipe); eager, with a note, where capture is off or fails."""

    def __init__(self, fn: Callable[..., torch.Tensor], device: torch.device, batch: int,
                 notes: list[str], graph: bool):
        self.fn, self.notes, self.graph = fn, notes, graph
        self.t_example = torch.zeros(batch, device=device)
        self.runner: CudaGraphRunner | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        t = t.to(self.t_example.dtype)
        if self.runner is None:
            try:
                self.runner = CudaGraphRunner(self.fn, [x, self.t_example],
                                              clone_outputs=True, enabled=self.graph)
            except Exception as exc:  # report it, and time the eager path instead
                self.notes.append(f"CUDA graph capture failed ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}); eager sampling step")
                self.runner = CudaGraphRunner(self.fn, [x, self.t_example], enabled=False)
        return self.runner(x, t)


# --------------------------------------------------------------------------- variants
class Variant:
    """One timed side: a ``train_step()`` and a ``sample()`` closure on fixed inputs."""

    def __init__(self, name: str, module: torch.nn.Module, train_step: Callable[[], Any],
                 sample: Callable[[], torch.Tensor], notes: list[str]):
        self.name, self.module, self.notes = name, module, notes
        self._train, self._sample = train_step, sample
        self.last_sample: torch.Tensor | None = None
        self.extra: dict[str, Any] = {}
        self.error: str | None = None

    def train_step(self) -> None:
        self.module.train()
        self._train()

    def sample(self) -> None:
        self.module.eval()
        with torch.no_grad():
            self.last_sample = self._sample()


@dataclass
class Inputs:
    """What every variant of one configuration shares."""

    spec: Spec
    device: torch.device
    x0: torch.Tensor  # training "data"
    noise: torch.Tensor  # the sampling start
    init: dict[str, torch.Tensor]  # polydiff weights (diffusers' initialisation, copied)
    backend: str = "inductor"  # torch.compile backend (aot_eager: a fast CPU test of tracing)


def diffusers_variants(diffusers: Any, unet: Any, inp: Inputs) -> list[Variant]:
    spec, device = inp.spec, inp.device
    train_sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                          beta_start=1e-4, beta_end=0.02)
    x0, noise0 = inp.x0, inp.noise
    out = []
    for bf16 in (False, True):
        opt = torch.optim.AdamW(unet.parameters(), lr=LR)

        def ctx(bf16: bool = bf16) -> Any:
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

        def train(opt: torch.optim.Optimizer = opt, ctx: Callable = ctx) -> None:
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (x0.shape[0],), device=device)
            noisy = train_sched.add_noise(x0, noise, t)
            with ctx():
                loss = F.mse_loss(unet(noisy, t).sample.float(), noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        # bf16 sampling as a pipeline loaded with ``torch_dtype=torch.bfloat16`` runs it: bf16
        # weights (a copy; only speed is measured) and bf16 latents, no autocast.
        s_unet, s_noise = unet, noise0
        if bf16:
            s_unet = copy.deepcopy(unet).to(torch.bfloat16).eval()
            s_noise = noise0.to(torch.bfloat16)

        def sample(s_unet: Any = s_unet, s_noise: torch.Tensor = s_noise) -> torch.Tensor:
            sched = ddim_scheduler(diffusers, spec.sample_steps)
            return diffusers_sample(s_unet, sched, s_noise.clone())

        name = "diffusers_bf16" if bf16 else "diffusers_fp32"
        out.append(Variant(name, unet, train, sample, ["eager"] + (["bf16"] if bf16 else [])))
    return out


class PolydiffBuilder:
    """Builds polydiff's variants from the shared weights; the optimised ones share one
    compiled network (regions compile once per block shape, for every instance)."""

    def __init__(self, inp: Inputs, compile_: bool, scope: str):
        self.inp, self.compile_, self.scope = inp, compile_, scope
        self.process = VPDiscrete.linear(1000)
        self.loss_fn = DiffusionLoss(self.process, target="epsilon")
        self.ts = time_grid(self.process, inp.spec.sample_steps, "uniform", device=inp.device)
        self.cuda = inp.device.type == "cuda"
        self._net16: Any = None
        self.compiled_regions: list[str] = []

    def fresh(self, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> UNet:
        net = UNet(poly_config(self.inp.spec.name))
        net.load_state_dict(self.inp.init, strict=True)
        net = net.to(self.inp.device, dtype)
        return to_channels_last(net) if channels_last else net

    def compiled(self, net: UNet) -> Any:
        """``net`` compiled per ``--compile-scope`` (in place for regions); notes."""
        if not self.compile_:
            return net, []
        backend = self.inp.backend
        if self.scope == "whole":
            return (maybe_compile(net, dynamic=False, backend=backend),
                    ["maybe_compile(whole network)"])
        self.compiled_regions = compile_regions(net, REGIONS, dynamic=False, backend=backend)
        return net, [f"compile_regions({len(self.compiled_regions)} blocks)"]

    def denoiser(self, model: Any) -> ModelDenoiser:
        return ModelDenoiser(model, self.process, "epsilon",
                             time_input=self.process.model_timestep)

    def net16(self) -> tuple[Any, list[str]]:
        """The bf16 sampling network (compiled once, shared)."""
        if self._net16 is None:
            net, notes = self.compiled(self.fresh(torch.bfloat16, channels_last=True).eval())
            self._net16 = (net, notes)
        return self._net16

    def fp32(self) -> Variant:
        inp = self.inp
        net = self.fresh()
        opt = torch.optim.AdamW(net.parameters(), lr=LR)
        den = self.denoiser(net)

        def train() -> None:
            loss = self.loss_fn(den, inp.x0)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def sample() -> torch.Tensor:
            return sample_ddim(den, inp.noise.clone(), self.ts, disable=True)

        return Variant("polydiff_fp32", net, train, sample, ["eager"])

    def _train_parts(self) -> tuple[UNet, Callable[[torch.Tensor], torch.Tensor], list[str]]:
        net = self.fresh(channels_last=True)
        model, notes = self.compiled(net)
        den = self.denoiser(model)

        def loss(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.inp.device, "bf16"):
                return self.loss_fn(den, x)

        return net, loss, ["channels_last", "bf16 autocast", *notes]

    def opt(self) -> Variant:
        inp, cuda = self.inp, self.cuda
        net, loss, notes = self._train_parts()
        opt = torch.optim.AdamW(net.parameters(), lr=LR, fused=cuda or None,
                                capturable=cuda)
        notes.append("fused capturable AdamW" if cuda else "AdamW")
        x_train = to_channels_last(inp.x0)
        v = Variant("polydiff_opt", net, lambda: None, lambda: inp.noise, notes)
        state: dict[str, Any] = {}

        def train() -> None:
            step = state.get("step")
            if step is None:
                step = state["step"] = GraphedTrainStep(loss, opt, [x_train])
                v.extra["train_step"] = step
                if step.captured:
                    notes.append("GraphedTrainStep (forward+backward+AdamW in one graph)")
                elif step.capture_error is not None:
                    err = step.capture_error
                    notes.append(f"training-step capture failed ({type(err).__name__}: "
                                 f"{str(err)[:200]}); eager step")
            step(x_train)

        model16, notes16 = self.net16()
        den16 = self.denoiser(Bf16Net(model16))
        x_noise = to_channels_last(inp.noise)

        def sample() -> torch.Tensor:
            loop = state.get("loop")
            if loop is None:
                step_fn, n = ddim_loop_step(den16, self.ts, inp.spec.sample_batch, inp.device)
                try:
                    loop = GraphedLoop(step_fn, n, x_noise)
                except Exception as exc:  # report it, and time the eager loop instead
                    notes.append(f"sampling-loop capture failed ({type(exc).__name__}: "
                                 f"{str(exc)[:200]}); eager loop")
                    loop = GraphedLoop(step_fn, n, x_noise, enabled=False)
                state["loop"] = loop
                if loop.captured:
                    notes.append(f"GraphedLoop ({n} DDIM steps in one graph, fp32 state)")
            return loop(x_noise)

        notes += ["bf16 weights for sampling", *[n for n in notes16 if n not in notes]]
        v._train, v._sample = train, sample
        return v

    def compiled_ablation(self) -> Variant:
        inp, cuda = self.inp, self.cuda
        net, loss, notes = self._train_parts()
        opt = torch.optim.AdamW(net.parameters(), lr=LR, fused=cuda or None)
        notes.append("fused AdamW" if cuda else "AdamW")
        x_train = to_channels_last(inp.x0)

        def train() -> None:
            loss(x_train).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        model16, _ = self.net16()
        step = StepGraph(Bf16Net(model16), inp.device, inp.spec.sample_batch, notes, cuda)
        den = self.denoiser(step)
        x_noise = to_channels_last(inp.noise)

        def sample() -> torch.Tensor:
            return sample_ddim(den, x_noise.clone(), self.ts, disable=True)

        notes += ["bf16 weights for sampling", "eager step launches"]
        if cuda:
            notes.append("CudaGraphRunner(network call of each sampling step)")
        return Variant("polydiff_compiled", net, train, sample, notes)


# --------------------------------------------------------------------------- checks
def correctness(diffusers: Any, spec: Spec, device: torch.device) -> dict[str, Any]:
    """Copy diffusers' weights into polydiff's UNet and compare a forward pass and a short
    DDIM run on diffusers' own timesteps."""
    torch.manual_seed(1)
    ref = diffusers.UNet2DModel(**diffusers_kwargs(spec.name, hub_padding=False))
    ref = ref.to(device).eval()
    cfg = poly_config(spec.name)
    net = UNet(cfg).to(device).eval()
    net.load_state_dict(unet_state_dict_from_diffusers(ref.state_dict(), len(cfg.channel_mults)),
                        strict=True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(spec.check_batch, *spec.image, generator=g).to(device)
    t = torch.randint(0, 1000, (spec.check_batch,), generator=g).to(device)
    res: dict[str, Any] = {"batch": spec.check_batch}
    with torch.no_grad():
        want, got = ref(x, t).sample, net(x, t.float())
        res["forward_fp32_max_abs_diff"] = max_abs(got, want)
        res["forward_fp32_output_max_abs"] = float(want.abs().max())
        with torch.autocast(device.type, dtype=torch.bfloat16):
            want16, got16 = ref(x, t).sample, net(x, t.float())
        res["forward_bf16_max_abs_diff"] = max_abs(got16, want16)
        res["forward_bf16_vs_fp32_max_abs_diff"] = {"diffusers": max_abs(want16, want),
                                                    "polydiff": max_abs(got16, got)}
        sched = ddim_scheduler(diffusers, spec.check_steps)
        process = VPDiscrete.linear(1000)
        den = ModelDenoiser(net, process, "epsilon", time_input=process.model_timestep)
        d_out = diffusers_sample(ref, sched, x.clone())
        p_out = sample_ddim(den, x.clone(), scheduler_time_grid(sched, process), disable=True)
    res["ddim_steps"] = spec.check_steps
    res["ddim_fp32_max_abs_diff"] = max_abs(p_out, d_out)
    res["ddim_output_max_abs"] = float(d_out.abs().max())
    return res


def check_sampling(b: PolydiffBuilder, variants: dict[str, Variant]) -> dict[str, Any]:
    """The optimised sampling outputs against eager ``sample_ddim`` from the same noise."""
    inp = b.inp
    res: dict[str, Any] = {"criterion": SAMPLE_CHECK}
    with torch.no_grad():
        ref = sample_ddim(b.denoiser(b.fresh().eval()), inp.noise.clone(), b.ts, disable=True)
        eager16 = sample_ddim(b.denoiser(Bf16Net(b.fresh(torch.bfloat16, True).eval())),
                              inp.noise.clone(), b.ts, disable=True)
    base = rel_l2(eager16, ref)
    res["eager_bf16_vs_fp32_rel_l2"] = base
    res["output_max_abs"] = float(ref.abs().max())
    limit = max(SAMPLE_CHECK["vs_eager_bf16"] * base, SAMPLE_CHECK["floor"])
    res["limit_rel_l2"] = limit
    for name in ("polydiff_opt", "polydiff_compiled"):
        v = variants.get(name)
        if v is None or v.last_sample is None:
            continue
        err = rel_l2(v.last_sample, ref)
        res[name] = {"vs_fp32_rel_l2": err, "vs_eager_bf16_rel_l2": rel_l2(v.last_sample,
                                                                            eager16),
                     "ok": bool(err <= limit and torch.isfinite(v.last_sample).all())}
    return res


def _snapshot(net: torch.nn.Module, opt: torch.optim.Optimizer) -> Any:
    return ([p.detach().clone() for p in net.parameters()],
            {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
             for p, s in opt.state.items()})


def _restore(net: torch.nn.Module, opt: torch.optim.Optimizer, snap: Any) -> None:
    with torch.no_grad():
        for p, saved in zip(net.parameters(), snap[0]):
            p.copy_(saved)
        for p, s in snap[1].items():
            for k, v in s.items():
                opt.state[p][k].copy_(v)


def _seed(device: torch.device, seed: int) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def check_training(b: PolydiffBuilder, variants: dict[str, Variant]) -> dict[str, Any]:
    """The graphed step against the same step launched eagerly; the compiled network's
    gradient against eager gradients under dropout."""
    inp, device = b.inp, b.inp.device
    res: dict[str, Any] = {"criterion": TRAIN_CHECK}
    v = variants.get("polydiff_opt")
    step = None if v is None else v.extra.get("train_step")
    x = to_channels_last(inp.x0)
    if step is not None:
        net, opt = v.module, step.optimizer  # type: ignore[union-attr]
        snap = _snapshot(net, opt)
        _seed(device, 123)
        loss_e = step.eager_step(x)
        after_e = [p.detach().clone() for p in net.parameters()]
        _restore(net, opt, snap)
        _seed(device, 123)
        loss_g = step(x)
        after_g = [p.detach().clone() for p in net.parameters()]
        _restore(net, opt, snap)
        upd_e = torch.cat([(a - p0).flatten() for a, p0 in zip(after_e, snap[0])])
        upd_g = torch.cat([(a - p0).flatten() for a, p0 in zip(after_g, snap[0])])
        lr_, ur = rel_l2(loss_g, loss_e), rel_l2(upd_g, upd_e)
        res["graph_vs_eager_step"] = {
            "captured": step.captured, "loss_graph": float(loss_g), "loss_eager": float(loss_e),
            "loss_rel": lr_, "update_rel_l2": ur,
            "ok": bool(lr_ <= TRAIN_CHECK["loss_rel"] and ur <= TRAIN_CHECK["update_rel"])}
    # gradient of the compiled network vs eager ones (same batch, times, noise)
    g = torch.Generator().manual_seed(7)
    t = (torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 0.999 + 0.001).to(device)
    eps = torch.randn(x.shape, generator=g).to(device)

    def grad_of(net: UNet, model: Any, seed: int) -> torch.Tensor:
        net.train()
        net.zero_grad(set_to_none=True)
        _seed(device, seed)
        with autocast(device, "bf16"):
            loss = b.loss_fn(b.denoiser(model), x, t=t, eps=eps)
        loss.backward()
        out = torch.cat([p.grad.flatten().float() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
        return out

    eager = b.fresh(channels_last=True)
    comp_net = b.fresh(channels_last=True)
    comp_model, _ = b.compiled(comp_net)
    g_e1, g_e2 = grad_of(eager, eager, 1), grad_of(eager, eager, 2)
    g_c = grad_of(comp_net, comp_model, 3)
    spread = float((g_e2 - g_e1).norm())
    ratio = float((g_c - g_e1).norm()) / max(spread, 1e-30)
    cos = float(F.cosine_similarity(g_c.double(), g_e1.double(), dim=0))
    res["compiled_vs_eager_grad"] = {
        "compiled": b.compile_, "grad_norm": float(g_e1.norm()), "dropout_spread": spread,
        "ratio_to_dropout_spread": ratio, "cosine": cos,
        "ok": bool(ratio <= TRAIN_CHECK["grad_vs_dropout_spread"] and math.isfinite(ratio))}
    return res


# --------------------------------------------------------------------------- profile
def profile_kernels(b: PolydiffBuilder, variants: dict[str, Variant], top: int = 15
                    ) -> dict[str, Any]:
    """CUDA kernel time of one training step and one sampling network call of the compiled
    network, launched eagerly (``polydiff_compiled``), by kernel name and by kind."""
    from torch.profiler import ProfilerActivity, profile

    v = variants.get("polydiff_compiled")
    if v is None:
        return {"skipped": "polydiff_compiled is missing"}
    model16, _ = b.net16()
    x = to_channels_last(b.inp.noise).to(torch.bfloat16)
    t = torch.full((x.shape[0],), 500.0, device=b.inp.device)
    out: dict[str, Any] = {}
    for what, fn in (("train_step", v.train_step),
                     ("sample_nfe", lambda: model16(x, t))):
        fn()
        synchronize(b.inp.device)
        with torch.no_grad() if what == "sample_nfe" else torch.enable_grad():
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                synchronize(b.inp.device)
        rows = []
        for e in prof.key_averages():
            dt = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
            if dt > 0:
                rows.append((e.key, dt / 1e3, e.count))
        rows.sort(key=lambda r: -r[1])
        total = sum(r[1] for r in rows)
        kinds: dict[str, float] = {}
        for name, ms, _ in rows:
            low = name.lower()
            kind = ("convolution" if any(k in low for k in ("conv", "cudnn", "xmma", "implicit"))
                    else "gemm" if any(k in low for k in ("gemm", "sm90", "cutlass", "cublas"))
                    else "attention" if any(k in low for k in ("flash", "attention", "fmha"))
                    else "triton" if "triton" in low else "other")
            kinds[kind] = kinds.get(kind, 0.0) + ms
        out[what] = {"cuda_ms": total, "by_kind_ms": kinds,
                     "top": [{"kernel": n[:120], "cuda_ms": ms, "count": c}
                             for n, ms, c in rows[:top]]}
    return out


# --------------------------------------------------------------------------- timing
def warm(v: Variant, device: torch.device, log: Callable[[str], None]) -> None:
    """First train step and first sampling run (compilation, capture, autotuning), timed;
    a failure is recorded on the variant, which is then left out."""
    try:
        t0 = time.perf_counter()
        v.train_step()
        synchronize(device)
        t1 = time.perf_counter()
        v.sample()
        synchronize(device)
        t2 = time.perf_counter()
        v.extra.update(warmup_s=t2 - t0, warmup_train_s=t1 - t0, warmup_sample_s=t2 - t1)
        log(f"  warm-up {v.name}: {t2 - t0:.1f} s (train {t1 - t0:.1f} s, sample "
            f"{t2 - t1:.1f} s)")
    except Exception as exc:  # one variant's failure must not cost the others
        v.error = f"{type(exc).__name__}: {str(exc)[:400]}"
        log(f"  warm-up {v.name} FAILED: {v.error}")


def time_rounds(variants: list[Variant], spec: Spec, device: torch.device, clock: Clock,
                reserve: float, times: dict[str, dict[str, list[float]]],
                log: Callable[[str], None], tag: str) -> int:
    """Interleaved timing rounds (alternating order); stops early when a round would eat into
    ``reserve`` seconds of the time left (at least one round runs). Returns the rounds run."""
    done, last = 0, 0.0
    for r in range(spec.rounds):
        if r and clock.left() < last + reserve:
            log(f"[{spec.name}] {tag}: {clock.left():.0f} s left: stopping after {r} rounds")
            break
        t0 = time.perf_counter()
        order = variants if r % 2 == 0 else variants[::-1]  # alternate to spread drift
        for v in order:
            st = time_fn(v.train_step, warmup=0, repeats=spec.train_steps_per_round,
                         device=device)
            times[v.name]["train"].append(st["median"])
            ss = time_fn(v.sample, warmup=0, repeats=spec.samples_per_round, device=device)
            times[v.name]["sample"].append(ss["median"])
        last = time.perf_counter() - t0
        done += 1
        log(f"[{spec.name}] {tag} round {r + 1}/{spec.rounds} done ({last:.1f} s)")
    return done


def variant_result(v: Variant, spec: Spec, times: dict[str, list[float]]) -> dict[str, Any]:
    if v.error is not None or not times["train"]:
        return {"notes": v.notes, "error": v.error or "not timed (time limit)",
                **{k: v.extra[k] for k in ("warmup_s",) if k in v.extra}}
    tt, sa = statistics.median(times["train"]), statistics.median(times["sample"])
    last = v.last_sample
    fell_back = bool(getattr(getattr(v.module, "_runner", None), "fell_back", False)) or any(
        getattr(getattr(m.__dict__.get("forward"), "__func__", None), "fell_back", False)
        for m in v.module.modules())  # compile_regions: one fallback flag per block class
    return {
        "notes": v.notes,
        "train_step_s": tt, "train_steps_per_s": 1.0 / tt,
        "train_samples_per_s": spec.train_batch / tt,
        "sample_run_s": sa, "sample_samples_per_s": spec.sample_batch / sa,
        "sample_nfe_per_s": spec.sample_steps / sa,
        "train_step_s_per_round": times["train"], "sample_run_s_per_round": times["sample"],
        **{k: v.extra[k] for k in ("warmup_s", "warmup_train_s", "warmup_sample_s")
           if k in v.extra},
        "sample_finite": bool(last is not None and torch.isfinite(last).all()),
        "compile_fell_back": fell_back,
    }


def run_config(diffusers: Any, spec: Spec, device: torch.device, args: argparse.Namespace,
               clock: Clock, res: dict[str, Any], save: Callable[[], None],
               log: Callable[[str], None]) -> None:
    """Run one configuration into ``res["configs"][spec.name]`` part by part (each part
    saved as soon as it is done, so a stop at the time limit keeps what was measured)."""
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**diffusers_kwargs(spec.name)).to(device)
    levels = len(poly_config(spec.name).channel_mults)
    init = {k: v.detach().cpu().clone() for k, v in
            unet_state_dict_from_diffusers(unet.state_dict(), levels).items()}
    x0 = torch.rand(spec.train_batch, *spec.image, generator=gen).mul(2).sub(1).to(device)
    noise = torch.randn(spec.sample_batch, *spec.image, generator=gen).to(device)
    inp = Inputs(spec, device, x0, noise, init, args.compile_backend)
    builder = PolydiffBuilder(inp, args.compile_, args.compile_scope)
    d_fp32, d_bf16 = diffusers_variants(diffusers, unet, inp)
    cfg: dict[str, Any] = res["configs"].setdefault(spec.name, {})
    cfg.update(settings=asdict(spec), params={"polydiff": n_params(builder.fresh()),
                                              "diffusers": n_params(unet)},
               variants={}, phases={})
    log(f"[{spec.name}] params polydiff {cfg['params']['polydiff']:,} diffusers "
        f"{cfg['params']['diffusers']:,}; train batch {spec.train_batch}, sample batch "
        f"{spec.sample_batch} x {spec.sample_steps} DDIM steps, {spec.rounds} rounds")
    variants: dict[str, Variant] = {}
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "sample": []} for n in VARIANTS}

    def record(part: str, t0: float) -> None:
        cfg["phases"][part] = time.perf_counter() - t0
        for name, v in variants.items():
            cfg["variants"][name] = variant_result(v, spec, times[name])
        res["ratios"][spec.name] = ratios(cfg, cuda, spec.name)
        save()

    # 1. the variants the targets are about, then their timing rounds
    t0 = time.perf_counter()
    for make in (lambda: d_bf16, builder.opt, builder.compiled_ablation):
        v = make()
        variants[v.name] = v
        warm(v, device, log)
        record("warmup", t0)
    core = [v for v in variants.values() if v.error is None]
    t0 = time.perf_counter()
    time_rounds(core, spec, device, clock, args.reserve_s, times, log, "core")
    record("timing", t0)

    # 2. checks of the optimised paths and of diffusers against polydiff
    t0 = time.perf_counter()
    checks: dict[str, Any] = {}
    for name, fn in (("sampling", check_sampling), ("training", check_training)):
        try:
            checks[name] = fn(builder, variants)
        except Exception as exc:
            checks[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}", "ok": False}
    cfg["opt_check"] = checks
    record("opt_check", t0)
    t0 = time.perf_counter()
    cfg["check"] = correctness(diffusers, spec, device)
    record("check", t0)
    log(f"[{spec.name}] checks done")

    # 3. where the time goes (CUDA kernels), and the warm-up a second run pays (warm cache)
    if cuda and args.profile and clock.left() > args.reserve_s + 10:
        t0 = time.perf_counter()
        try:
            cfg["profile"] = profile_kernels(builder, variants)
        except Exception as exc:
            cfg["profile"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        record("profile", t0)
    if cuda and args.cache_probe:
        t0 = time.perf_counter()
        if clock.left() > args.probe_s + 5:
            cfg["cache_probe"] = cache_probe(spec.name, args, clock)
        else:
            cfg["cache_probe"] = {"skipped": f"{clock.left():.0f} s left (needs about "
                                             f"{args.probe_s:.0f} s)"}
        log(f"[{spec.name}] warm-cache warm-up in a new process: {cfg['cache_probe']}")
        record("cache_probe", t0)

    # 4. fp32 parity (needs the time the GPU run may not have)
    need = args.fp32_reserve_s if cuda else 0.0
    if args.fp32 == "off" or (args.fp32 == "auto" and clock.left() < need):
        cfg["fp32_skipped"] = (f"--fp32 {args.fp32}, {clock.left():.0f} s left (needs about "
                               f"{need:.0f} s)")
        log(f"[{spec.name}] fp32 variants skipped: {cfg['fp32_skipped']}")
    else:
        t0 = time.perf_counter()
        fp32 = []
        for make in (lambda: d_fp32, builder.fp32):
            v = make()
            variants[v.name] = v
            warm(v, device, log)
            if v.error is None:
                fp32.append(v)
        record("fp32_warmup", t0)
        t0 = time.perf_counter()
        time_rounds(fp32, spec, device, clock, 5.0, times, log, "fp32")
        record("fp32_timing", t0)


def ratios(cfg: dict[str, Any], cuda: bool, name: str) -> dict[str, Any]:
    v = cfg["variants"]

    def r(a: str, b: str, key: str) -> float | None:
        if key not in v.get(a, {}) or key not in v.get(b, {}):
            return None
        return v[a][key] / v[b][key]

    out: dict[str, Any] = {
        "train_opt_vs_diffusers_bf16": r("polydiff_opt", "diffusers_bf16", "train_steps_per_s"),
        "sample_opt_vs_diffusers_bf16": r("polydiff_opt", "diffusers_bf16",
                                          "sample_samples_per_s"),
        "train_compiled_vs_diffusers_bf16": r("polydiff_compiled", "diffusers_bf16",
                                              "train_steps_per_s"),
        "sample_compiled_vs_diffusers_bf16": r("polydiff_compiled", "diffusers_bf16",
                                               "sample_samples_per_s"),
        "train_fp32_vs_diffusers_fp32": r("polydiff_fp32", "diffusers_fp32",
                                          "train_steps_per_s"),
        "sample_fp32_vs_diffusers_fp32": r("polydiff_fp32", "diffusers_fp32",
                                           "sample_samples_per_s"),
        "targets": TARGETS,
    }
    opt = v.get("polydiff_opt", {})
    judged = cuda and out["train_opt_vs_diffusers_bf16"] is not None
    out["train_target_met"] = (out["train_opt_vs_diffusers_bf16"] >= TARGETS["train"]
                               if judged else None)
    sample_ok = None
    if judged:
        sample_ok = out["sample_opt_vs_diffusers_bf16"] >= TARGETS["sample"]
        if name == "cifar10":
            sample_ok = sample_ok and opt["sample_samples_per_s"] >= TARGETS[
                "cifar10_sample_per_s"]
    out["sample_target_met"] = sample_ok
    out["warmup_target_met"] = (opt["warmup_s"] <= TARGETS["warmup_s"]
                                if cuda and "warmup_s" in opt else None)
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _opt_check_text(oc: dict[str, Any]) -> str:
    """One line summing up the numerical checks of the optimised variants."""
    parts = []
    sc = oc.get("sampling", {})
    for vn in ("polydiff_opt", "polydiff_compiled"):
        if vn in sc:
            parts.append(f"{vn} sample rel L2 vs fp32 {sc[vn]['vs_fp32_rel_l2']:.2e} "
                         f"({'ok' if sc[vn]['ok'] else 'FAILED'})")
    if "eager_bf16_vs_fp32_rel_l2" in sc:
        parts.append(f"eager bf16 {sc['eager_bf16_vs_fp32_rel_l2']:.2e}")
    tc = oc.get("training", {})
    ge = tc.get("graph_vs_eager_step")
    if ge:
        parts.append(f"graphed step vs eager: loss rel {ge['loss_rel']:.1e}, update "
                     f"rel {ge['update_rel_l2']:.1e} ({'ok' if ge['ok'] else 'FAILED'})")
    cg = tc.get("compiled_vs_eager_grad")
    if cg:
        parts.append(f"compiled grad / dropout spread {cg['ratio_to_dropout_spread']:.2f}"
                     f" ({'ok' if cg['ok'] else 'FAILED'})")
    for k in ("sampling", "training"):
        if "error" in oc.get(k, {}):
            parts.append(f"{k} check ERROR {oc[k]['error']}")
    return "; ".join(parts)


def table(res: dict[str, Any]) -> str:
    dev = res["device"]
    lines = [f"device: {dev.get('name', dev['device'])} (torch {dev['torch']}, "
             f"{dev['num_threads']} threads); compile: {res['compile']} "
             f"({res.get('compile_scope', 'regions')}); quick: {res['quick']}"
             + ("" if res.get("complete") is None else f"; complete: {res['complete']}")]
    for name, cfg in res["configs"].items():
        s = cfg.get("settings")
        if s is None:
            continue
        lines.append("")
        lines.append(f"{name}: train batch {s['train_batch']}, sample batch "
                     f"{s['sample_batch']} x {s['sample_steps']} DDIM steps, up to "
                     f"{s['rounds']} interleaved rounds, medians; params polydiff "
                     f"{cfg['params']['polydiff']:,} / diffusers {cfg['params']['diffusers']:,}")
        lines.append(f"  {'variant':<18}{'train steps/s':>14}{'train smp/s':>13}"
                     f"{'sample smp/s':>14}{'NFE/s':>9}{'warm-up s':>11}  notes")
        for vn, v in cfg["variants"].items():
            if "error" in v:
                lines.append(f"  {vn:<18}{'-':>14}{'-':>13}{'-':>14}{'-':>9}"
                             f"{_fmt(v.get('warmup_s'), '.1f'):>11}  {v['error']}")
                continue
            lines.append(f"  {vn:<18}{v['train_steps_per_s']:>14.3f}"
                         f"{v['train_samples_per_s']:>13.1f}{v['sample_samples_per_s']:>14.2f}"
                         f"{v['sample_nfe_per_s']:>9.2f}{_fmt(v.get('warmup_s'), '.1f'):>11}  "
                         f"{', '.join(v['notes'])}"
                         + ("" if v["sample_finite"] else "  [NON-FINITE SAMPLES]"))
        rt = res["ratios"].get(name, {})
        lines.append(
            f"  polydiff/diffusers: train opt/bf16 "
            f"{_fmt(rt.get('train_opt_vs_diffusers_bf16'), '.2f')}x (target "
            f"{TARGETS['train']}x), sample opt/bf16 "
            f"{_fmt(rt.get('sample_opt_vs_diffusers_bf16'), '.2f')}x (target "
            f"{TARGETS['sample']}x); compiled (no whole graphs) train "
            f"{_fmt(rt.get('train_compiled_vs_diffusers_bf16'), '.2f')}x, sample "
            f"{_fmt(rt.get('sample_compiled_vs_diffusers_bf16'), '.2f')}x; fp32/fp32 train "
            f"{_fmt(rt.get('train_fp32_vs_diffusers_fp32'), '.2f')}x, sample "
            f"{_fmt(rt.get('sample_fp32_vs_diffusers_fp32'), '.2f')}x"
            + ("" if rt.get("train_target_met") is not None
               else "  [targets judged on CUDA only]"))
        if rt.get("train_target_met") is not None:
            lines.append(f"  targets met: train {rt['train_target_met']}, sample "
                         f"{rt['sample_target_met']}, warm-up {rt['warmup_target_met']}")
        oc = cfg.get("opt_check")
        if oc:
            lines.append("  opt check: " + _opt_check_text(oc))
        c = cfg.get("check")
        if c:
            lines.append(f"  check (diffusers weights in polydiff UNet, batch {c['batch']}): "
                         f"forward max|diff| fp32 {c['forward_fp32_max_abs_diff']:.2e}, bf16 "
                         f"{c['forward_bf16_max_abs_diff']:.2e} (|out| <= "
                         f"{c['forward_fp32_output_max_abs']:.2f}); {c['ddim_steps']}-step DDIM "
                         f"fp32 {c['ddim_fp32_max_abs_diff']:.2e}")
        cp = cfg.get("cache_probe")
        if cp:
            lines.append("  polydiff_opt warm-up in a new process (warm inductor cache): "
                         + (f"{cp['warmup_s']:.1f} s (train {cp['warmup_train_s']:.1f} s, "
                            f"sample {cp['warmup_sample_s']:.1f} s)" if cp.get("warmup_s")
                            else json.dumps(cp)))
        if "fp32_skipped" in cfg:
            lines.append(f"  fp32 variants skipped: {cfg['fp32_skipped']}")
        prof = cfg.get("profile", {})
        for what in ("train_step", "sample_nfe"):
            if what in prof:
                kinds = ", ".join(f"{k} {ms:.1f}" for k, ms in
                                  sorted(prof[what]["by_kind_ms"].items(), key=lambda kv: -kv[1]))
                lines.append(f"  profile {what}: {prof[what]['cuda_ms']:.1f} ms of kernels "
                             f"({kinds})")
    for n in res["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def warmup_only(spec: Spec, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Build ``polydiff_opt`` alone and warm it up (compilation, capture): the warm-up a new
    process pays, e.g. with the inductor cache of an earlier run."""
    gen = torch.Generator().manual_seed(0)
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**diffusers_kwargs(spec.name))
    levels = len(poly_config(spec.name).channel_mults)
    init = unet_state_dict_from_diffusers(unet.state_dict(), levels)
    x0 = torch.rand(spec.train_batch, *spec.image, generator=gen).mul(2).sub(1).to(device)
    noise = torch.randn(spec.sample_batch, *spec.image, generator=gen).to(device)
    builder = PolydiffBuilder(Inputs(spec, device, x0, noise, init, args.compile_backend),
                              args.compile_, args.compile_scope)
    v = builder.opt()
    warm(v, device, lambda m: print(m, file=sys.stderr, flush=True))
    return {"config": spec.name, "error": v.error,
            **{k: v.extra.get(k) for k in ("warmup_s", "warmup_train_s", "warmup_sample_s")}}


def cache_probe(name: str, args: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """The warm-up of ``polydiff_opt`` in a new process, after this run filled the inductor
    cache (what a second run on the same machine pays)."""
    budget = min(clock.left() - 5, 2 * args.probe_s)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--warmup-only", "--configs", name,
           "--compile", args.compile, "--compile-scope", args.compile_scope,
           "--compile-backend", args.compile_backend]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                              env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {budget:.0f} s"}
    wall = time.perf_counter() - t0
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return {**out, "process_wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="tiny run (CPU smoke test)")
    ap.add_argument("--device", default=None, help="default: polydiff.gpu.select_device()")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="compile polydiff_opt's network (auto: on CUDA only)")
    ap.add_argument("--compile-scope", choices=("regions", "whole"), default="regions",
                    help="regional compilation of the blocks (default) or the whole network")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (aot_eager checks tracing and recompiles "
                         "quickly on a CPU)")
    ap.add_argument("--cpu-cifar-batch", type=int, default=8)
    ap.add_argument("--configs", default=None,
                    help="comma-separated (default: digits,cifar10; with --quick: digits)")
    ap.add_argument("--out", type=Path, default=None,
                    help="also write the JSON here (rewritten after every part)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="stop this many seconds after the process started and print what "
                         "was measured")
    ap.add_argument("--reserve-s", type=float, default=20.0,
                    help="seconds kept for the checks when rounds are cut by --deadline")
    ap.add_argument("--fp32", choices=("auto", "on", "off"), default="auto",
                    help="the fp32 parity variants (auto: when the time limit leaves room)")
    ap.add_argument("--fp32-reserve-s", type=float, default=45.0,
                    help="seconds the fp32 variants need on a GPU (warm-up and rounds)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the CUDA kernel profile")
    ap.add_argument("--cache-probe", action="store_true",
                    help="on CUDA, time polydiff_opt's warm-up again in a new process, with "
                         "the inductor cache this run filled")
    ap.add_argument("--probe-s", type=float, default=50.0,
                    help="seconds the cache probe needs (skipped when fewer are left)")
    ap.add_argument("--warmup-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        import diffusers
    except ImportError:
        log("diffusers is not installed (it is in the dev environment): nothing to compare")
        return 2
    device = select_device(args.device)
    cuda = device.type == "cuda"
    args.compile_ = args.compile == "on" or (args.compile == "auto" and cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    wanted = set((args.configs or ("digits" if args.quick else "digits,cifar10")).split(","))
    chosen = [s for s in specs(device, args.quick, args.cpu_cifar_batch) if s.name in wanted]
    if args.warmup_only:
        print(json.dumps(warmup_only(chosen[0], device, args)))
        return 0
    t0 = time.time()
    clock = Clock(args.deadline, time.monotonic() - process_age())
    res: dict[str, Any] = {"device": device_info(device), "compile": args.compile_,
                           "compile_scope": args.compile_scope, "quick": args.quick,
                           "deadline_s": args.deadline, "complete": False, "configs": {},
                           "ratios": {}, "notes": []}

    def save() -> None:
        res["seconds"] = time.time() - t0
        if args.out is not None:
            tmp = args.out.with_name(args.out.name + ".part")
            tmp.write_text(json.dumps(res, indent=2) + "\n")
            tmp.replace(args.out)

    clock.arm()
    try:
        for spec in chosen:
            run_config(diffusers, spec, device, args, clock, res, save, log)
            log(table({**res, "configs": {spec.name: res["configs"][spec.name]}, "notes": [],
                       "complete": None}))
        res["complete"] = True
    except Deadline as stop:
        clock.disarm()
        res["notes"].append(f"stopped at the time limit ({stop}); the parts measured before "
                            "it are reported")
        log(f"train_step: stopped at the time limit ({stop})")
    finally:
        clock.disarm()
    if not cuda:
        res["notes"].append(
            "CPU run: CUDA graphs are off, bf16 autocast on a CPU without native bf16 is an "
            "emulation, and batch sizes are reduced; these numbers say nothing about the GPU "
            "targets (run tools/gpu_check.sh on a GPU).")
        if not args.compile_:
            res["notes"].append("torch.compile was not used (--compile auto is CUDA-only).")
    if args.quick:
        res["notes"].append("--quick: a smoke test, not a benchmark: digits uses train batch "
                            "16 and 8 samples x 5 DDIM steps (samples/s are for 5 steps, not "
                            "50); cifar10 only with --configs (batch 1, 2 DDIM steps).")
    save()
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
