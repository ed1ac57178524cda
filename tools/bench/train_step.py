"""Training-step and 50-step DDIM sampling throughput: polydiff's UNet against diffusers'
UNet2DModel of the same configuration, in one process.

Two configurations:

* ``digits``: a small two-level 2-D U-Net (``UNetConfig.tiny``-like, 32 base channels,
  attention at the 4x4 level and in the middle) on 8x8 single-channel images, batch 128;
* ``cifar10``: DDPM's CIFAR-10 U-Net (``UNetConfig.ddpm_cifar10()``, 35.7M parameters) on
  3x32x32 images, batch 256 on a GPU (small batch, few repeats and, with ``--quick``, fewer
  sampling steps on CPU: the output says which).

Each configuration is timed in four variants, interleaved round by round (medians reported):

* ``diffusers_fp32`` / ``diffusers_bf16``: the plain diffusers loops, eager. Training step:
  ``DDPMScheduler.add_noise`` + ``F.mse_loss(unet(noisy, t).sample, noise)`` + AdamW, bf16
  through ``torch.autocast``; sampling: ``DDIMScheduler.set_timesteps(50)`` and
  ``x = sched.step(unet(x, t).sample, t, x)``, bf16 as a pipeline loaded with
  ``torch_dtype=torch.bfloat16`` runs it (bf16 weights and latents, no autocast).
* ``polydiff_fp32``: ``UNet`` trained with ``DiffusionLoss`` (epsilon target,
  ``VPDiscrete.linear``) through ``ModelDenoiser(time_input=process.model_timestep)`` +
  AdamW, sampled with ``sample_ddim`` over ``time_grid(process, 50, "uniform")``; eager.
* ``polydiff_opt``: the same with ``polydiff.gpu``'s helpers: ``to_channels_last``,
  ``maybe_compile`` (by default only on CUDA: ``--compile on`` forces it); training under
  ``autocast(device, "bf16")`` with fused AdamW on CUDA (as the Trainer uses); sampling on
  bf16 weights with the sampler's state in fp32 and, on CUDA only, a ``CudaGraphRunner``
  around the network call of each sampling step.

Sampling variants run on a bf16 copy of the weights made once (speed only is measured).
The inputs are synthetic (uniform noise in [-1, 1] as "data"): only speed is measured.
Correctness check: diffusers' weights are copied into polydiff's UNet with
``polydiff.core.interop.diffusers.unet_state_dict_from_diffusers`` (for CIFAR-10 on a
diffusers model with ``downsample_padding=1``, polydiff's symmetric padding; the timed
diffusers model keeps the hub's ``downsample_padding=0``), and one forward pass (fp32 and
bf16 autocast) and a short DDIM run on diffusers' own timesteps (``scheduler_time_grid``)
are compared.

    uv run python tools/bench/train_step.py            # table
    uv run python tools/bench/train_step.py --json     # one JSON object on stdout
    uv run python tools/bench/train_step.py --quick    # tiny CPU smoke run (digits only)

Targets (GPU only, bf16): ``polydiff_opt`` samples >= 2.5x and trains >= 1.5x as fast as
``diffusers_bf16``; they are only judged when the device is CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
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
from polydiff.core.processes import VPDiscrete
from polydiff.core.samplers import sample_ddim
from polydiff.gpu import (
    CudaGraphRunner,
    autocast,
    device_info,
    maybe_compile,
    select_device,
    synchronize,
    time_fn,
    to_channels_last,
)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("diffusers_fp32", "diffusers_bf16", "polydiff_fp32", "polydiff_opt")
TARGETS = {"sample": 2.5, "train": 1.5}
LR = 1e-4


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


# --------------------------------------------------------------------------- variants
class Variant:
    """One timed side: a ``train_step()`` and a ``sample()`` closure on fixed inputs."""

    def __init__(self, name: str, module: torch.nn.Module, train_step: Callable[[], Any],
                 sample: Callable[[], torch.Tensor], notes: list[str]):
        self.name, self.module, self.notes = name, module, notes
        self._train, self._sample = train_step, sample
        self.last_sample: torch.Tensor | None = None

    def train_step(self) -> None:
        self.module.train()
        self._train()

    def sample(self) -> None:
        self.module.eval()
        with torch.no_grad():
            self.last_sample = self._sample()


def diffusers_variants(diffusers: Any, spec: Spec, device: torch.device,
                       gen: torch.Generator) -> tuple[list[Variant], torch.nn.Module]:
    unet = diffusers.UNet2DModel(**diffusers_kwargs(spec.name)).to(device)
    train_sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                          beta_start=1e-4, beta_end=0.02)
    x0 = torch.rand(spec.train_batch, *spec.image, generator=gen).mul(2).sub(1).to(device)
    noise0 = torch.randn(spec.sample_batch, *spec.image, generator=gen).to(device)
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
    return out, unet


class GraphedStep:
    """The network call of one sampling step on bf16 weights (fp32 state in and out: the
    sampler's arithmetic stays fp32), captured as a CUDA graph on first use (eval mode, under
    no_grad) when ``graph`` is true; falls back to eager, with a note, if capture fails."""

    def __init__(self, model: Any, device: torch.device, batch: int, notes: list[str],
                 graph: bool = True):
        self.model, self.device, self.notes, self.graph = model, device, notes, graph
        self.t_example = torch.zeros(batch, device=device)
        self.runner: CudaGraphRunner | None = None

    def step(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16), t).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if not self.graph:
            return self.step(x, t.to(self.t_example.dtype))
        if self.runner is None:
            try:
                self.runner = CudaGraphRunner(self.step, [x, self.t_example],
                                              clone_outputs=True)
            except Exception as exc:  # report it, and time the eager path instead
                self.notes.append(f"CUDA graph capture failed ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}); eager sampling step")
                self.runner = CudaGraphRunner(self.step, [x, self.t_example], enabled=False)
        return self.runner(x, t.to(self.t_example.dtype))


def polydiff_variants(spec: Spec, device: torch.device, gen: torch.Generator,
                      compile_: bool) -> list[Variant]:
    process = VPDiscrete.linear(1000)
    loss_fn = DiffusionLoss(process, target="epsilon")
    x0 = torch.rand(spec.train_batch, *spec.image, generator=gen).mul(2).sub(1).to(device)
    noise0 = torch.randn(spec.sample_batch, *spec.image, generator=gen).to(device)
    ts = time_grid(process, spec.sample_steps, "uniform", device=device)
    out = []
    for opt_path in (False, True):
        net = UNet(poly_config(spec.name)).to(device)
        notes = ["eager"]
        x_train, x_noise = x0, noise0
        prec = "fp32"
        model: Any = net
        if opt_path:
            notes = []
            net = to_channels_last(net)
            x_train, x_noise = to_channels_last(x0), to_channels_last(noise0)
            notes.append("channels_last")
            prec = "bf16"
            notes.append("bf16")
            if compile_:
                model = maybe_compile(net, dynamic=False)
                notes.append("maybe_compile")
        fused = opt_path and device.type == "cuda"  # one fused kernel per step (as Trainer)
        opt = torch.optim.AdamW(net.parameters(), lr=LR, fused=fused or None)
        if fused:
            notes.append("fused AdamW")
        den = ModelDenoiser(model, process, "epsilon", time_input=process.model_timestep)

        def train(den: ModelDenoiser = den, opt: torch.optim.Optimizer = opt,
                  x: torch.Tensor = x_train, prec: str = prec) -> None:
            with autocast(device, prec):
                loss = loss_fn(den, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        sample_den, sample_prec = den, prec
        if opt_path:  # sampling on a bf16 copy of the weights (speed only), compiled, graphed
            net16 = to_channels_last(copy.deepcopy(net).to(torch.bfloat16).eval())
            model16 = maybe_compile(net16, dynamic=False) if compile_ else net16
            cuda = device.type == "cuda"
            graphed = GraphedStep(model16, device, spec.sample_batch, notes, graph=cuda)
            sample_den = ModelDenoiser(graphed, process, "epsilon",
                                       time_input=process.model_timestep)
            sample_prec = "fp32"
            notes.append("bf16 weights for sampling")
            if cuda:
                notes.append("CudaGraphRunner(sampling step)")

        def sample(den: ModelDenoiser = sample_den, x: torch.Tensor = x_noise,
                   prec: str = sample_prec) -> torch.Tensor:
            with autocast(device, prec):
                return sample_ddim(den, x.clone(), ts, disable=True)

        name = "polydiff_opt" if opt_path else "polydiff_fp32"
        out.append(Variant(name, net, train, sample, notes))
    return out


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


# --------------------------------------------------------------------------- timing
def run_config(diffusers: Any, spec: Spec, device: torch.device, compile_: bool,
               log: Callable[[str], None]) -> dict:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    d_vars, d_unet = diffusers_variants(diffusers, spec, device, gen)
    p_vars = polydiff_variants(spec, device, gen, compile_)
    variants = d_vars + p_vars
    res: dict[str, Any] = {"settings": asdict(spec), "params": {
        "polydiff": n_params(p_vars[0].module), "diffusers": n_params(d_unet)}}
    log(f"[{spec.name}] params polydiff {res['params']['polydiff']:,} diffusers "
        f"{res['params']['diffusers']:,}; train batch {spec.train_batch}, sample batch "
        f"{spec.sample_batch} x {spec.sample_steps} DDIM steps, {spec.rounds} rounds")
    warm: dict[str, float] = {}
    for v in variants:  # warm-up: compilation, graph capture, allocator, cuDNN autotune
        t0 = time.perf_counter()
        v.train_step()
        v.sample()
        synchronize(device)
        warm[v.name] = time.perf_counter() - t0
    train_t: dict[str, list[float]] = {v.name: [] for v in variants}
    sample_t: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(spec.rounds):
        order = variants if r % 2 == 0 else variants[::-1]  # alternate to spread drift
        for v in order:
            st = time_fn(v.train_step, warmup=0, repeats=spec.train_steps_per_round,
                         device=device)
            train_t[v.name].append(st["median"])
            ss = time_fn(v.sample, warmup=0, repeats=spec.samples_per_round, device=device)
            sample_t[v.name].append(ss["median"])
        log(f"[{spec.name}] round {r + 1}/{spec.rounds} done")
    out: dict[str, Any] = {}
    for v in variants:
        tt, sa = statistics.median(train_t[v.name]), statistics.median(sample_t[v.name])
        last = v.last_sample
        fell_back = bool(getattr(getattr(v.module, "_runner", None), "fell_back", False))
        out[v.name] = {
            "notes": v.notes,
            "train_step_s": tt, "train_steps_per_s": 1.0 / tt,
            "train_samples_per_s": spec.train_batch / tt,
            "sample_run_s": sa, "sample_samples_per_s": spec.sample_batch / sa,
            "sample_nfe_per_s": spec.sample_steps / sa,
            "train_step_s_per_round": train_t[v.name], "sample_run_s_per_round": sample_t[v.name],
            "warmup_s": warm[v.name],
            "sample_finite": bool(last is not None and torch.isfinite(last).all()),
            "compile_fell_back": fell_back,
        }
    res["variants"] = out
    t0 = time.perf_counter()
    res["check"] = correctness(diffusers, spec, device)
    log(f"[{spec.name}] correctness check {time.perf_counter() - t0:.1f}s")
    return res


def ratios(cfg: dict[str, Any], cuda: bool) -> dict[str, Any]:
    v = cfg["variants"]

    def r(a: str, b: str, key: str) -> float:
        return v[a][key] / v[b][key]

    out = {
        "train_opt_vs_diffusers_bf16": r("polydiff_opt", "diffusers_bf16", "train_steps_per_s"),
        "sample_opt_vs_diffusers_bf16": r("polydiff_opt", "diffusers_bf16",
                                          "sample_samples_per_s"),
        "train_fp32_vs_diffusers_fp32": r("polydiff_fp32", "diffusers_fp32",
                                          "train_steps_per_s"),
        "sample_fp32_vs_diffusers_fp32": r("polydiff_fp32", "diffusers_fp32",
                                           "sample_samples_per_s"),
    }
    out["targets"] = TARGETS
    out["train_target_met"] = out["train_opt_vs_diffusers_bf16"] >= TARGETS["train"] \
        if cuda else None
    out["sample_target_met"] = out["sample_opt_vs_diffusers_bf16"] >= TARGETS["sample"] \
        if cuda else None
    return out


def table(res: dict[str, Any]) -> str:
    dev = res["device"]
    lines = [f"device: {dev.get('name', dev['device'])} (torch {dev['torch']}, "
             f"{dev['num_threads']} threads); compile: {res['compile']}; quick: {res['quick']}"]
    for name, cfg in res["configs"].items():
        s = cfg["settings"]
        lines.append("")
        lines.append(f"{name}: train batch {s['train_batch']}, sample batch "
                     f"{s['sample_batch']} x {s['sample_steps']} DDIM steps, "
                     f"{s['rounds']} interleaved rounds, medians; params polydiff "
                     f"{cfg['params']['polydiff']:,} / diffusers {cfg['params']['diffusers']:,}")
        lines.append(f"  {'variant':<16}{'train steps/s':>14}{'train smp/s':>13}"
                     f"{'sample smp/s':>14}{'NFE/s':>9}  finite  notes")
        for vn, v in cfg["variants"].items():
            lines.append(f"  {vn:<16}{v['train_steps_per_s']:>14.3f}"
                         f"{v['train_samples_per_s']:>13.1f}{v['sample_samples_per_s']:>14.2f}"
                         f"{v['sample_nfe_per_s']:>9.2f}  {str(v['sample_finite']):<6}  "
                         f"{', '.join(v['notes'])}")
        rt = res["ratios"][name]
        lines.append(f"  polydiff/diffusers: train opt/bf16 {rt['train_opt_vs_diffusers_bf16']:.2f}"
                     f"x (target {TARGETS['train']}x), sample opt/bf16 "
                     f"{rt['sample_opt_vs_diffusers_bf16']:.2f}x (target {TARGETS['sample']}x); "
                     f"fp32/fp32 train {rt['train_fp32_vs_diffusers_fp32']:.2f}x, sample "
                     f"{rt['sample_fp32_vs_diffusers_fp32']:.2f}x"
                     + ("" if rt["train_target_met"] is not None
                        else "  [targets judged on CUDA only]"))
        c = cfg["check"]
        if "skipped" in c:
            lines.append(f"  check: skipped ({c['skipped']})")
        else:
            lines.append(f"  check (diffusers weights in polydiff UNet, batch {c['batch']}): "
                         f"forward max|diff| fp32 {c['forward_fp32_max_abs_diff']:.2e}, bf16 "
                         f"{c['forward_bf16_max_abs_diff']:.2e} (|out| <= "
                         f"{c['forward_fp32_output_max_abs']:.2f}); {c['ddim_steps']}-step DDIM "
                         f"fp32 {c['ddim_fp32_max_abs_diff']:.2e}")
    for n in res["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="tiny run (CPU smoke test)")
    ap.add_argument("--device", default=None, help="default: polydiff.gpu.select_device()")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="maybe_compile in polydiff_opt (auto: on CUDA only)")
    ap.add_argument("--cpu-cifar-batch", type=int, default=8)
    ap.add_argument("--configs", default=None,
                    help="comma-separated (default: digits,cifar10; with --quick: digits)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
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
    compile_ = args.compile == "on" or (args.compile == "auto" and cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    wanted = set((args.configs or ("digits" if args.quick else "digits,cifar10")).split(","))
    t0 = time.time()
    res: dict[str, Any] = {"device": device_info(device), "compile": compile_,
                           "quick": args.quick, "configs": {}, "ratios": {}, "notes": []}
    for spec in specs(device, args.quick, args.cpu_cifar_batch):
        if spec.name not in wanted:
            continue
        res["configs"][spec.name] = cfg = run_config(diffusers, spec, device, compile_,
                                                     log)
        res["ratios"][spec.name] = ratios(cfg, cuda)
        log(table({**res, "configs": {spec.name: cfg}, "notes": []}))  # partial results
        if args.out is not None:
            args.out.write_text(json.dumps(res, indent=2) + "\n")
    if not cuda:
        res["notes"].append(
            "CPU run: CUDA graphs are off, bf16 autocast on a CPU without native bf16 is an "
            "emulation, and batch sizes are reduced; these numbers say nothing about the GPU "
            "targets (run tools/gpu_check.sh on a GPU).")
        if not compile_:
            res["notes"].append("torch.compile was not used (--compile auto is CUDA-only).")
    if args.quick:
        res["notes"].append("--quick: a smoke test, not a benchmark: digits uses train batch "
                            "16 and 8 samples x 5 DDIM steps (samples/s are for 5 steps, not "
                            "50); cifar10 only with --configs (batch 1, 2 DDIM steps).")
    res["seconds"] = time.time() - t0
    text = json.dumps(res, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
