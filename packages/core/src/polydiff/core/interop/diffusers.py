"""Interoperability with Hugging Face ``diffusers`` (the optional ``diffusers`` extra).

Two directions:

1. *polydiff samplers on a diffusers model.* :func:`process_from_scheduler` reads a scheduler's
   ``alphas_cumprod`` into a :class:`~polydiff.core.processes.VPDiscrete` (Lu et al. 2022,
   DPM-Solver, App. D: ``log alpha`` piecewise linear through ``t_n = (n + 1) / N``, so the
   network's integer timestep ``k`` is process time ``t = (k + 1) / N``);
   :func:`denoiser_from_diffusers` wraps a UNet as a
   :class:`~polydiff.core.denoiser.ModelDenoiser` honouring ``prediction_type``;
   :func:`diffusers_timesteps_to_times` and :func:`scheduler_time_grid` turn a configured
   scheduler's own timesteps into a polydiff time grid, so that e.g.
   ``sample_dpmpp_2m(denoiser, x, scheduler_time_grid(sched))`` retraces
   ``DPMSolverMultistepScheduler``'s loop.
2. *polydiff samplers as a diffusers scheduler.* :class:`PolydiffScheduler` (a
   ``SchedulerMixin``/``ConfigMixin``) runs DPM-Solver++ (2M, 3M, 2M-SDE), DDIM or UniPC
   step by step inside the standard loop ``for t in sched.timesteps: x = sched.step(unet(x,
   t).sample, t, x).prev_sample``, on polydiff's grids (log-SNR, EDM, uniform), advancing
   the samplers' own steppers (:mod:`polydiff.core.samplers.stepper`, built by
   :func:`make_stepper`); the loop reproduces the corresponding polydiff sampler function
   exactly (the same update code on the same coefficients).

Facts used from diffusers (0.35-0.42): schedulers store ``alphas_cumprod`` (float32) of
``N = num_train_timesteps`` steps and call the network at integer ``timesteps``;
``DPMSolverMultistepScheduler`` uses ``sigma = sqrt((1 - a) / a)`` at those timesteps and a
final ``sigma = 0`` (``final_sigmas_type="zero"``) or that of timestep 0 (``"sigma_min"``),
first order on its first step and into ``sigma = 0``, and with ``lower_order_final`` on
grids of fewer than 15 steps also on its last step; ``DDIMScheduler`` steps from timestep
``k`` to ``k - N // n`` and to ``alpha = 1`` (``set_alpha_to_one``) or ``alphas_cumprod[0]``
past the end. ``UNet1DModel``/``UNet2DModel`` embed float timesteps, so fractional
``VPDiscrete.model_timestep(t) = t N - 1`` is fine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import Denoiser, ModelDenoiser
from polydiff.core.grids import time_grid
from polydiff.core.param import to_x0_eps
from polydiff.core.processes.vp import VPDiscrete, betas_for_alpha_bar
from polydiff.core.samplers.registry import get_sampler, stepper_names
from polydiff.core.samplers.stepper import Stepper
from polydiff.core.shapes import append_dims

__all__ = [
    "SOLVERS", "DiffusersModel", "process_from_scheduler", "denoiser_from_diffusers",
    "diffusers_timesteps_to_times", "scheduler_time_grid", "make_stepper",
    "unet_state_dict_from_diffusers",
]  # and PolydiffScheduler, built lazily by the module __getattr__ (needs diffusers)

#: Solvers of :class:`PolydiffScheduler`: the samplers of the registry
#: (:mod:`polydiff.core.samplers.registry`) with a one-step stepper (one network evaluation
#: per step each); each entry gives the sampler function and its stepper constructor
#: ``(alphas, sigmas, **hyper)``, taking the same hyperparameters.
SOLVERS: tuple[str, ...] = stepper_names()
_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def _require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - the dev environment has diffusers
        raise ImportError("this needs the optional dependency diffusers: "
                          "pip install 'polydiff-core[diffusers]'") from err
    return diffusers


# --------------------------------------------------------------------------- model side
def process_from_scheduler(scheduler: Any) -> VPDiscrete:
    """The :class:`~polydiff.core.processes.VPDiscrete` of a diffusers scheduler (from its
    ``alphas_cumprod``, in float64); a :class:`PolydiffScheduler` returns its own process."""
    own = getattr(scheduler, "process", None)
    if isinstance(own, VPDiscrete):
        return own
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod: only discrete-time "
                        "VP (DDPM-family) schedulers map onto a polydiff VPDiscrete process")
    return VPDiscrete(alphas_cumprod=torch.as_tensor(ac).detach().cpu().to(torch.float64))


class DiffusersModel(nn.Module):
    """A diffusers network as a plain ``model(x, timestep, **cond) -> Tensor``: unwraps
    ``.sample`` (or the first element of a tuple output) and drops the variance channels of
    learned-variance models (output with twice the input channels)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, timestep: Tensor, **cond: Any) -> Tensor:
        out = self.unet(x, timestep, **cond)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, tuple | list):
            out = out[0]
        if out.shape != x.shape and out.ndim == x.ndim and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out


def denoiser_from_diffusers(unet: nn.Module, scheduler: Any = None, *,
                            process: VPDiscrete | None = None,
                            prediction_type: str | None = None,
                            x0_clamp: float | None = None) -> ModelDenoiser:
    """A polydiff denoiser around a diffusers network trained with ``scheduler``.

    The process comes from ``scheduler`` (:func:`process_from_scheduler`) unless given; the
    prediction type from ``scheduler.config.prediction_type`` (``"epsilon"``, ``"sample"`` or
    ``"v_prediction"``) unless given. Process time ``t`` reaches the network as
    ``process.model_timestep(t) = t N - 1`` (integer at ``t = (k + 1) / N``, fractional in
    between); per-sample conditioning in ``cond`` (e.g. ``class_labels``) is forwarded.
    """
    if process is None:
        if scheduler is None:
            raise ValueError("give a scheduler or a process")
        process = process_from_scheduler(scheduler)
    if prediction_type is None:
        cfg = getattr(scheduler, "config", None)
        prediction_type = getattr(cfg, "prediction_type", None) or "epsilon"
    if prediction_type not in _PREDICTION_TYPES:
        raise ValueError(f"unsupported diffusers prediction_type {prediction_type!r}; "
                         f"expected one of {_PREDICTION_TYPES}")
    return ModelDenoiser(DiffusersModel(unet), process, prediction_type,
                         time_input=process.model_timestep, x0_clamp=x0_clamp)


# --------------------------------------------------------------------------- time grids
def diffusers_timesteps_to_times(timesteps: Sequence[float] | Tensor, process: VPDiscrete,
                                 final: str | None = "zero") -> Tensor:
    """Process times ``t = (k + 1) / N`` (float64, descending) of diffusers timesteps ``k``,
    followed by a final point: ``"zero"`` (``process.t_zero``, ``sigma = 0``: diffusers'
    ``final_sigmas_type="zero"`` / DDIM's ``set_alpha_to_one``), ``"sigma_min"`` (``t = 1 /
    N``, timestep 0, unless already last) or ``None`` (none)."""
    k = torch.as_tensor(timesteps).detach().cpu().to(torch.float64).flatten()
    n = process.num_train_timesteps
    ts = (k + 1.0) / n
    if final == "zero":
        ts = torch.cat([ts, torch.tensor([float(process.t_zero)], dtype=torch.float64)])
    elif final == "sigma_min":
        if float(ts[-1]) > 1.0 / n:
            ts = torch.cat([ts, torch.tensor([1.0 / n], dtype=torch.float64)])
    elif final is not None:
        raise ValueError(f"final must be 'zero', 'sigma_min' or None, got {final!r}")
    if ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("timesteps must give a strictly decreasing grid of at least 2 times")
    return ts


def scheduler_time_grid(scheduler: Any, process: VPDiscrete | None = None) -> Tensor:
    """The polydiff time grid that retraces a configured (``set_timesteps`` called) diffusers
    scheduler's loop: its timesteps plus the final point its configuration implies.

    * ``DPMSolverMultistepScheduler`` (and look-alikes with ``final_sigmas_type``): the
      timesteps, then ``sigma = 0`` or timestep 0. With ``use_karras_sigmas`` & co. the
      scheduler's ``sigmas`` are converted instead (``t_from_sigma_tilde``; diffusers then
      rounds the network's timesteps but not the sigmas, so agreement is approximate).
    * ``DDIMScheduler``: checks that each step lands on the next timestep (``k - N // n``;
      diffusers' ``"linspace"``/``"trailing"`` spacings may not), then ``alpha = 1`` or
      timestep 0 past the end. A trailing no-op step (timestep 0 to ``alphas_cumprod[0]``)
      is dropped.
    * :class:`PolydiffScheduler`: its own grid. Anything else: the timesteps and ``sigma =
      0``.
    """
    if isinstance(getattr(scheduler, "times", None), Tensor) and \
            isinstance(getattr(scheduler, "process", None), VPDiscrete):
        return scheduler.times.detach().cpu().to(torch.float64)
    process = process or process_from_scheduler(scheduler)
    steps = getattr(scheduler, "timesteps", None)
    if steps is None or getattr(scheduler, "num_inference_steps", None) is None:
        raise ValueError("call scheduler.set_timesteps(...) first")
    cfg = scheduler.config
    name = type(scheduler).__name__
    if "DDIM" in name and hasattr(scheduler, "final_alpha_cumprod"):
        ratio = cfg.num_train_timesteps // scheduler.num_inference_steps
        k = torch.as_tensor(steps).cpu().long()
        if not bool((k[:-1] - k[1:] == ratio).all()):
            raise ValueError(f"{name} with timestep_spacing={cfg.timestep_spacing!r} steps "
                             f"from k to k - {ratio}, which is not its next timestep: no "
                             "polydiff grid retraces it")
        last = int(k[-1]) - ratio
        if last >= 0:
            return diffusers_timesteps_to_times(torch.cat([k, torch.tensor([last])]), process,
                                                final=None)
        return diffusers_timesteps_to_times(k, process, "zero" if cfg.set_alpha_to_one
                                            else "sigma_min")
    final = "zero" if getattr(cfg, "final_sigmas_type", "zero") == "zero" else "sigma_min"
    if any(getattr(cfg, f, False) for f in ("use_karras_sigmas", "use_exponential_sigmas",
                                             "use_beta_sigmas", "use_lu_lambdas")):
        sig = torch.as_tensor(scheduler.sigmas).cpu().to(torch.float64)
        body = process.t_from_sigma_tilde(sig[:-1]).clamp(process.t_min, process.t_max)
        tail = float(process.t_zero) if float(sig[-1]) == 0.0 else \
            float(process.t_from_sigma_tilde(sig[-1:]).clamp(min=process.t_min))
        return torch.cat([body, torch.tensor([tail], dtype=torch.float64)])
    return diffusers_timesteps_to_times(steps, process, final)


# --------------------------------------------------------------------------- scheduler
def _betas(num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str,
           trained_betas: Sequence[float] | None) -> Tensor:
    """float64 betas of diffusers' ``beta_schedule`` names."""
    n = num_train_timesteps
    if trained_betas is not None:
        return torch.as_tensor(trained_betas, dtype=torch.float64).flatten()
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17
        return betas_for_alpha_bar(n, lambda t: torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}")


def make_stepper(solver: str, process: Any, times: Tensor, **hyper: Any) -> Stepper:
    """The stepper (:mod:`polydiff.core.samplers.stepper`) of ``solver`` (one of
    :data:`SOLVERS`) on the grid ``times`` of ``process``, with the hyperparameters of the
    matching sampler function (e.g. ``eta``, ``solver_type``, ``order``).

    ``step(i, z, x0, eps, generator)`` advances ``z`` (the state at grid index ``i``, centre
    0) to index ``i + 1`` given the denoiser's ``(x0, eps)`` there; ``alpha``/``sigma`` are
    computed as :class:`~polydiff.core.samplers._common.Sampling` does, so a loop over
    ``step`` reproduces the sampler function exactly.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
    return get_sampler(solver).make_stepper(process.alpha(times), process.sigma(times), **hyper)


def _scheduler_class() -> type:
    """Build :class:`PolydiffScheduler` (needs diffusers; done once, on first access)."""
    _require_diffusers()
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

    # diffusers types config_name as str in SchedulerMixin and as None in ConfigMixin
    class PolydiffScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
        """A polydiff sampler as a diffusers scheduler (VP, discrete-time training schedule).

        Config (diffusers names where they exist): ``num_train_timesteps``, ``beta_start``,
        ``beta_end``, ``beta_schedule`` (``"linear"``, ``"scaled_linear"``,
        ``"squaredcos_cap_v2"``), ``trained_betas``, ``prediction_type`` (``"epsilon"``,
        ``"sample"``, ``"v_prediction"``); ``solver`` (one of :data:`SOLVERS`), ``grid``
        (``"logsnr"``, ``"edm"``, ``"uniform"``, ``"quadratic"``: :func:`time_grid` kinds),
        ``final_zero`` (the last step lands on ``sigma = 0``), ``rho`` (EDM grid),
        ``solver_type`` (DPM-Solver++ ``"midpoint"``/``"heun"``), ``solver_order`` (UniPC's
        order; default 3), ``unipc_variant``, ``lower_order_final``, ``eta`` (DDIM / SDE noise,
        default 0 / 1), ``round_timesteps`` (snap the grid to integer network timesteps),
        ``x0_clamp``.

        ``timesteps`` are the network's (fractional, float32) timesteps
        ``VPDiscrete.model_timestep(t)`` of the grid ``times`` (process times, float64, one
        more than ``timesteps``); ``step`` advances one grid interval with the chosen solver.
        """

        order = 1
        _compatibles: list[str] = []

        @register_to_config
        def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                     beta_end: float = 0.02, beta_schedule: str = "linear",
                     trained_betas: Sequence[float] | None = None,
                     prediction_type: str = "epsilon", solver: str = "dpmpp_2m",
                     grid: str = "logsnr", final_zero: bool = True, rho: float = 7.0,
                     solver_type: str = "midpoint", solver_order: int | None = None,
                     unipc_variant: str = "bh2", lower_order_final: bool = True,
                     eta: float | None = None, round_timesteps: bool = False,
                     x0_clamp: float | None = None):
            if solver not in SOLVERS:
                raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
            if grid not in ("logsnr", "edm", "uniform", "quadratic"):
                raise ValueError(f"unknown grid {grid!r}")
            if prediction_type not in _PREDICTION_TYPES:
                raise ValueError(f"unsupported prediction_type {prediction_type!r}")
            betas = _betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                           trained_betas)
            self.process = VPDiscrete(betas=betas)
            self.betas = betas
            self.alphas_cumprod = torch.cumprod(1.0 - betas, 0)
            self.init_noise_sigma = 1.0
            self.num_inference_steps: int | None = None
            self.times: Tensor | None = None
            self.timesteps = self.process.model_timestep(
                torch.arange(num_train_timesteps, 0, -1, dtype=torch.float64)
                / num_train_timesteps).to(torch.float32)
            self._plan: Stepper | None = None
            self._step_index: int | None = None

        # -------------------------------------------------------------- grid
        def _grid(self, n: int | None, timesteps: Sequence[float] | None) -> Tensor:
            cfg, p = self.config, self.process
            if timesteps is not None:
                return diffusers_timesteps_to_times(timesteps, p, "zero" if cfg["final_zero"]
                                                    else "sigma_min")
            if n is None:
                raise ValueError("give num_inference_steps or timesteps")
            ts = time_grid(p, n, cfg["grid"], rho=cfg["rho"], final_zero=cfg["final_zero"])
            if cfg["round_timesteps"]:
                body = ts[:-1] if cfg["final_zero"] else ts
                k = torch.unique(torch.round(p.model_timestep(body)).clamp(0, p.num_train_timesteps
                                                                            - 1))
                return diffusers_timesteps_to_times(k.flip(0), p, "zero" if cfg["final_zero"]
                                                    else "sigma_min")
            return ts

        def set_timesteps(self, num_inference_steps: int | None = None,
                          device: str | torch.device | None = None,
                          timesteps: Sequence[float] | None = None, **kwargs: Any) -> None:
            """Build the grid of ``num_inference_steps`` steps (or from explicit network
            ``timesteps``) and the solver's coefficients; resets the multistep state."""
            dev = torch.device(device) if device is not None else torch.device("cpu")
            dtype = torch.float32 if dev.type == "mps" else torch.float64
            self.times = self._grid(num_inference_steps, timesteps).to(dev, dtype)
            self.timesteps = self.process.model_timestep(self.times[:-1]).to(torch.float32)
            self.num_inference_steps = int(self.timesteps.numel())
            self._plan = make_stepper(self.config["solver"], self.process, self.times,
                                      **self._hyper())
            self._step_index = None

        def _hyper(self) -> dict[str, Any]:
            cfg = self.config
            solver = cfg["solver"]
            if solver == "ddim":
                return {"eta": 0.0 if cfg["eta"] is None else cfg["eta"]}
            if solver == "unipc":
                return {"order": cfg["solver_order"] or 3, "variant": cfg["unipc_variant"],
                        "lower_order_final": cfg["lower_order_final"]}
            out: dict[str, Any] = {"solver_type": cfg["solver_type"],
                                   "lower_order_final": cfg["lower_order_final"]}
            if solver == "dpmpp_2m_sde":
                out["eta"] = 1.0 if cfg["eta"] is None else cfg["eta"]
            return out

        # -------------------------------------------------------------- loop API
        def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
            """Identity: the network takes ``x_t`` itself (VP)."""
            return sample

        def _index_for(self, timestep: Any) -> int:
            ts = self.timesteps
            t = torch.as_tensor(timestep, dtype=torch.float64).to(ts.device).flatten()[0]
            return int(torch.argmin((ts.double() - t).abs()))

        @property
        def step_index(self) -> int | None:
            return self._step_index

        def step(self, model_output: Tensor, timestep: Any, sample: Tensor,
                 generator: torch.Generator | None = None, return_dict: bool = True,
                 **kwargs: Any) -> Any:
            """Advance ``sample`` from grid time ``i`` to ``i + 1`` given the network output
            at ``(sample, timestep)``; the step index counts calls since
            :meth:`set_timesteps` (the first call locates ``timestep``)."""
            if self._plan is None:
                raise ValueError("call set_timesteps(...) before step(...)")
            assert self.times is not None and self.num_inference_steps is not None  # with _plan
            if self._step_index is None:
                self._step_index = self._index_for(timestep)
            i = self._step_index
            if i >= self.num_inference_steps:
                raise IndexError("step() called more often than there are timesteps")
            t = self.times[i].to(sample.device).expand(sample.shape[0])
            x0, eps = to_x0_eps(model_output, self.config["prediction_type"], sample, t,
                                self.process)
            if self.config["x0_clamp"] is not None:
                c = self.config["x0_clamp"]
                x0 = x0.clamp(-c, c)
                eps = to_x0_eps(x0, "sample", sample, t, self.process)[1]
            prev = self._plan.step(i, sample, x0, eps, generator)
            self._step_index = i + 1
            return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

        def _alpha_sigma(self, timesteps: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
            t = (torch.as_tensor(timesteps, device=like.device).to(torch.float64) + 1.0) \
                / self.process.num_train_timesteps
            t = t.expand(like.shape[0]) if t.ndim == 0 else t
            return (append_dims(self.process.alpha(t), like),
                    append_dims(self.process.sigma(t), like))

        def add_noise(self, original_samples: Tensor, noise: Tensor,
                      timesteps: Tensor) -> Tensor:
            """``alpha x0 + sigma noise`` at network timesteps ``timesteps`` (``(B,)``)."""
            a, s = self._alpha_sigma(timesteps, original_samples)
            return a * original_samples + s * noise

        def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
            """The ``v_prediction`` target ``alpha noise - sigma x0`` (Salimans & Ho 2022)."""
            a, s = self._alpha_sigma(timesteps, sample)
            return a * noise - s * sample

        # -------------------------------------------------------------- polydiff side
        def denoiser(self, unet: nn.Module, x0_clamp: float | None = None) -> ModelDenoiser:
            """``unet`` as a polydiff denoiser under this scheduler's process."""
            return denoiser_from_diffusers(unet, self, x0_clamp=x0_clamp)

        def polydiff_sample(self, denoiser: Denoiser, x: Tensor, *,
                            cond: dict[str, Any] | None = None,
                            generator: torch.Generator | None = None,
                            disable: bool | None = True) -> Tensor:
            """Run the matching polydiff sampler function on this scheduler's grid (what the
            diffusers loop with :meth:`step` reproduces)."""
            if self.times is None:
                raise ValueError("call set_timesteps(...) first")
            fn = get_sampler(self.config["solver"]).fn
            kw = self._hyper()
            if self.config["solver"] in ("ddim", "dpmpp_2m_sde"):
                kw["generator"] = generator
            return fn(denoiser, x, self.times.to(x.device), cond=cond, disable=disable, **kw)

        def __len__(self) -> int:
            return self.config["num_train_timesteps"]

    PolydiffScheduler.__module__ = __name__
    PolydiffScheduler.__qualname__ = "PolydiffScheduler"
    return PolydiffScheduler


_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """Lazy :class:`PolydiffScheduler`: diffusers is imported on first access only.

    Pipelines. ``DiffusionPipeline.save_pretrained`` records a component whose library is not
    diffusers or transformers under its module path, ``["polydiff.core.interop.diffusers",
    "PolydiffScheduler"]``. On load, diffusers takes that module from ``sys.modules`` (so
    import this module first) and looks the loadable base classes up *by name in the
    component's module* (``SchedulerMixin`` -> ``from_pretrained``), also to type-check a
    scheduler passed explicitly; so this module also answers ``SchedulerMixin`` (and
    ``ConfigMixin``) with diffusers' classes. Then ``DDPMPipeline.from_pretrained(path)``
    rebuilds the scheduler from its saved config, as for diffusers' own schedulers."""
    if name == "PolydiffScheduler":
        if name not in _CLASSES:
            _CLASSES[name] = _scheduler_class()
        return _CLASSES[name]
    if name in ("SchedulerMixin", "ConfigMixin"):
        _require_diffusers()
        from diffusers.configuration_utils import ConfigMixin
        from diffusers.schedulers.scheduling_utils import SchedulerMixin

        return {"SchedulerMixin": SchedulerMixin, "ConfigMixin": ConfigMixin}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- UNet weights
#: diffusers ``UNet2DModel``/``UNet1DModel`` key -> :class:`~polydiff.core.nn.UNet` key, in order.
_UNET_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^conv_in\.", "stem.conv."), (r"^time_embedding\.", "stem.time."),
    (r"^conv_norm_out\.", "head.norm."), (r"^conv_out\.", "head.conv."),
    (r"^mid_block\.attentions\.0\.", "mid.attn."), (r"^mid_block\.resnets\.", "mid.res."),
    (r"^down_blocks\.(\d+)\.resnets\.", r"down.\1.res."),
    (r"^down_blocks\.(\d+)\.attentions\.", r"down.\1.attn."),
    (r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"down.\1.downsample.op."),
    (r"\.upsamplers\.0\.", ".upsample."), (r"\.resnets\.", ".res."),
    (r"\.attentions\.", ".attn."), (r"\.time_emb_proj\.", ".emb."),
    (r"\.conv_shortcut\.", ".shortcut."), (r"\.group_norm\.", ".norm."),
    (r"\.to_out\.0\.", ".attn.proj."),
)


def unet_state_dict_from_diffusers(state_dict: dict[str, Tensor], levels: int
                                   ) -> dict[str, Tensor]:
    """Rename a diffusers ``UNet2DModel`` state dict (DDPM-style blocks: ``DownBlock2D``,
    ``AttnDownBlock2D``, ``UpBlock2D``, ``AttnUpBlock2D``, positional time embedding) to the
    keys of a :class:`~polydiff.core.nn.UNet` with ``levels`` resolution levels of the same
    architecture (diffusers counts up blocks from the bottom, polydiff by resolution level;
    separate ``to_q/to_k/to_v`` projections are concatenated into one ``qkv``). Load the result
    with ``unet.load_state_dict(..., strict=True)``: a mismatch names the offending keys.
    Note diffusers' hub CIFAR-10 model pads its downsampling convolution asymmetrically
    (``downsample_padding=0``); polydiff's matches ``downsample_padding=1``."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, v in state_dict.items():
        m = re.match(r"^up_blocks\.(\d+)\.", key)
        if m:
            key = f"up.{levels - 1 - int(m.group(1))}." + key[m.end():]
        for pat, rep in _UNET_KEY_RULES:
            key = re.sub(pat, rep, key)
        m = re.match(r"^(.*)\.to_([qkv])\.(weight|bias)$", key)
        if m:
            qkv.setdefault(f"{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = v
        else:
            out[key] = v
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
