"""One training loop for every objective: AdamW, EMA, mixed precision, clipping, gradient
accumulation, a non-finite guard, exact resume and torchrun data parallelism.

Determinism. Everything random in a step is a function of ``(seed, step)``: the samples of
step ``s`` are the global sample positions ``[s B, (s + 1) B)`` of an endless stream made of
per-epoch permutations seeded by ``(seed, epoch)``; the ``torch.Generator`` handed to the loss
(noise and time sampling) is re-seeded from ``(seed, step, micro-batch, rank)``; the global
RNGs (python/numpy/torch/cuda, for dropout and the like) are saved in every checkpoint. A run
resumed from a checkpoint therefore continues bit-for-bit where it stopped (on the same
hardware and world size).

Distributed. Under ``torchrun`` (``python -m torch.distributed.run``) the process group is
joined through :func:`polydiff.gpu.init_distributed` (NCCL on GPUs, Gloo on CPU), the loss
module is wrapped in ``DistributedDataParallel`` and the global batch is split across ranks:
micro-batch ``m`` of rank ``r`` takes positions ``s B + m B / A + r B / (A W) + [0, B / (A W))``
(``A`` accumulation steps, ``W`` ranks), so any ``(A, W)`` sees the same samples per step.
Rank 0 writes the run directory and checkpoints (every rank reads them on resume: use a
shared filesystem across machines); logged losses are averaged over ranks.

FSDP. With ``TrainConfig(strategy="fsdp")`` the objective is sharded with FSDP2
(``torch.distributed.fsdp.fully_shard``, Zhao et al. 2023) over a 1-D device mesh of all ranks
(CUDA/NCCL or CPU/Gloo) instead of being wrapped in DDP: every unit of
:func:`~polydiff.core.training.fsdp.default_fsdp_units` (children of ``nn.ModuleList``s that
run a ``forward`` of their own, containers replaced by their children; or
``fsdp_units(model)``) and then the whole objective. Parameters, gradients, AdamW state and the
EMA shadows are ``DTensor`` shards (``1 / W`` of the model per rank); the loop is the same:
accumulation skips the reduce-scatter on all but the last micro-batch
(``set_requires_gradient_sync``, FSDP's ``no_sync``), the gradient norm and clipping act on the
sharded gradients but use the global norm, and the non-finite guard agrees across ranks (so
does fp16 loss scaling: PyTorch reduces the grad scaler's inf check over DTensor shards).
Checkpoints gather full state dicts (``torch.distributed.checkpoint.state_dict``, full tensors
offloaded to rank 0's CPU): the files are the same as a single process writes and load under
any strategy and world size. After training, ``trainer.model`` holds shards; take full weights
(e.g. for ``save_pretrained``) with :meth:`Trainer.full_state_dict` (a collective).

Run folder. Rank 0 holds the run folder's lock
(:class:`~polydiff.core.training.lock.RunLock`) from construction until :meth:`Trainer.fit`
returns (or :meth:`Trainer.close`): a second training into the same folder fails with one line.
Resuming reads the newest *intact* checkpoint (:func:`~polydiff.core.training.checkpoint.
find_checkpoint`): a damaged latest one is skipped with one warning line, and when none is
intact the run stops with one error line (:class:`~polydiff.core.training.checkpoint.
CheckpointError`). Every checkpoint also records the hub network inside the model
(:mod:`~polydiff.core.training.export`), so :func:`~polydiff.core.training.export.
export_network` can write the bare network from the run folder.

Seeding. Pass a *factory* (``lambda: ModelDenoiser(UNet(cfg), process)``) instead of a model
and the trainer builds it under :func:`~polydiff.core.training.seeding.seeded` ``(seed)``:
the initial weights are then a function of ``TrainConfig.seed`` too.

Teardown. Under torchrun call :meth:`Trainer.close` (drops the DDP/FSDP wrappers that hold the
process group) before :func:`polydiff.gpu.destroy`, so the group's threads end before the
interpreter does.

Non-finite guard. After the backward passes the loss and the global gradient norm are
checked (all ranks agree: the check is all-reduced); if either is NaN/inf the optimizer step
and the EMA update are skipped, the step counts as ``skipped`` in ``stats.jsonl`` and
``log.txt``, and training goes on (with fp16 the grad scaler also lowers its scale).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from tqdm.auto import tqdm

from polydiff import gpu
from polydiff.core.losses import DiffusionLoss
from polydiff.core.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from polydiff.core.training.config import TrainConfig
from polydiff.core.training.data import as_data_source, mix_seed
from polydiff.core.training.ema import EMA
from polydiff.core.training.export import NETWORK_KEY, network_record
from polydiff.core.training.fsdp import (
    UnitsFn,
    full_tensors,
    gather_model_state,
    gather_optimizer_state,
    load_full_state,
    shard_module,
)
from polydiff.core.training.lock import RunLock, RunLockedError
from polydiff.core.training.rundir import RunDir, next_run_dir
from polydiff.core.training.seeding import build_seeded
from polydiff.core.utils import quiet

__all__ = ["Trainer", "as_objective"]

LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]
Callback = Callable[["Trainer", dict[str, Any]], None]


def _log_to_stderr(msg: str) -> None:
    """Training log lines go to stderr (above any progress bar), keeping stdout for results
    such as an app's ``--json`` output."""
    tqdm.write(msg, file=sys.stderr)


def as_objective(loss_fn: Any) -> LossFn:
    """``loss_fn(model, batch, generator) -> loss`` from a callable of that form or from a
    :class:`~polydiff.core.losses.DiffusionLoss`. For the latter, a batch is ``x0`` (a tensor)
    or a mapping with ``"x0"``, optional per-sample ``"t"`` and ``"eps"`` (fixed noise), and
    conditioning under any other keys."""
    if not isinstance(loss_fn, DiffusionLoss):
        return loss_fn

    def objective(model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
        if isinstance(batch, Tensor):
            return loss_fn(model, batch, generator=generator)
        if not isinstance(batch, Mapping) or "x0" not in batch:
            raise TypeError("a DiffusionLoss batch must be a tensor or a mapping with 'x0'")
        cond = dict(batch)
        x0, t, eps = cond.pop("x0"), cond.pop("t", None), cond.pop("eps", None)
        return loss_fn(model, x0, cond=cond or None, t=t, eps=eps, generator=generator)

    return objective


class _Objective(nn.Module):
    """The model plus its loss as one module, so DDP or FSDP (and ``torch.compile``) wrap the
    whole forward while the loss still receives the unwrapped model (isinstance checks work)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self._loss = [loss_fn]  # a list: never registered as a submodule

    def forward(self, batch: Any, generator: torch.Generator) -> Tensor:
        loss = self._loss[0](self.model, batch, generator)
        return loss.mean() if loss.ndim else loss


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=device.type == "cuda")
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


class Trainer:
    """Train ``model`` on ``loss_fn`` over ``data`` (module docstring).

    Args:
        model: the network (or a :class:`~polydiff.core.denoiser.Denoiser` around it); moved
            to the device. Its state (and its EMA) is what checkpoints hold. Or a
            zero-argument factory returning it, called under
            :func:`~polydiff.core.training.seeding.seeded` ``(config.seed)``.
        loss_fn: ``loss_fn(model, batch, generator) -> loss`` (a scalar, or per-sample losses
            that are averaged), or a :class:`~polydiff.core.losses.DiffusionLoss`
            (:func:`as_objective`). Use ``generator`` for all noise so runs are reproducible.
        data: an in-memory dataset (tensor, tuple/dict of tensors, map-style ``Dataset``), an
            object with ``get(positions, generator)``, or a stream (see
            :func:`~polydiff.core.training.data.as_data_source`).
        config: a :class:`~polydiff.core.training.config.TrainConfig`.
        callbacks: called as ``cb(trainer, record)`` after every step (all ranks).
        ddp_kwargs: extra ``DistributedDataParallel`` arguments (strategy ``"ddp"``).
        fsdp_units: ``fsdp_units(model) -> submodules`` to shard as separate FSDP units,
            innermost first (strategy ``"fsdp"``; default
            :func:`~polydiff.core.training.fsdp.default_fsdp_units`). A unit's parameters are
            gathered only inside its own ``forward``: choose modules whose parameters are not
            read from outside it.
        fsdp_kwargs: extra ``fully_shard`` arguments (``mp_policy``,
            ``reshard_after_forward``, ...), passed to every call.
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], loss_fn: Any, data: Any,
                 config: TrainConfig, *,
                 callbacks: Sequence[Callback] = (), ddp_kwargs: dict[str, Any] | None = None,
                 fsdp_units: UnitsFn | None = None, fsdp_kwargs: dict[str, Any] | None = None):
        self.config = cfg = config
        asked = None if cfg.device == "auto" else gpu.select_device(cfg.device)
        info = gpu.init_distributed(None if asked is None or asked.type == "cuda" else "gloo")
        self.rank, self.world_size = info.rank, info.world_size
        self.device = info.device if asked is None else asked
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", info.local_rank)
        if cfg.micro_batch % self.world_size:
            raise ValueError(f"batch_size / grad_accum = {cfg.micro_batch} is not divisible "
                             f"by the world size {self.world_size}")
        self.local_batch = cfg.micro_batch // self.world_size
        if not isinstance(model, nn.Module):
            if not callable(model):
                raise TypeError(f"model must be an nn.Module or a factory returning one, got "
                                f"{type(model).__name__}")
            model = build_seeded(model, cfg.seed)
            if not isinstance(model, nn.Module):
                raise TypeError(f"the model factory returned a {type(model).__name__}, not "
                                "an nn.Module")
        self._network = network_record(model)  # before FSDP renames the module classes
        self.model = model.to(self.device)
        self._module: nn.Module = _Objective(self.model, as_objective(loss_fn))
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self.strategy = cfg.strategy if self.world_size > 1 else "single"
        if self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            shard_module(self._module, self.model, mesh, fsdp_units, **(fsdp_kwargs or {}))
        elif self.strategy == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(self._module, device_ids=ids,
                                                            **(ddp_kwargs or {}))
        self._forward: nn.Module = gpu.maybe_compile(self._ddp or self._module,
                                                     enabled=cfg.compile)
        # after sharding: under FSDP these are the DTensor shards the optimizer updates
        self._param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # CUDA: the fused AdamW kernel (one launch per step; same update as foreach)
        fused = self.device.type == "cuda" and all(p.is_floating_point() for p in self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas,
                                           eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                                           fused=fused or None)
        self.scaler = gpu.make_grad_scaler(self.device, cfg.precision)
        self.ema = None if not cfg.ema_decay else EMA(
            self.model, cfg.ema_decay, cfg.ema_warmup, power=cfg.ema_power,
            inv_gamma=cfg.ema_inv_gamma)
        self.data = as_data_source(data, seed=cfg.seed, shuffle=cfg.shuffle)
        self.callbacks = list(callbacks)
        self.step = 0
        self.skipped = 0
        self._gen = torch.Generator(device=self.device)
        self.run_dir = self._resolve_run_dir()
        self.run: RunDir | None = None
        self._lock: RunLock | None = None
        failure: list[str | None] = [None]
        if self.rank == 0:
            try:
                self._lock = RunLock(self.run_dir, warn=_log_to_stderr).acquire()
            except RunLockedError as err:
                failure[0] = str(err)
        if self.world_size > 1:  # every rank stops, not only rank 0
            dist.broadcast_object_list(failure, src=0)
        if failure[0] is not None:
            raise RunLockedError(failure[0])
        if self.rank == 0:
            self.run = RunDir(self.run_dir, print_fn=_log_to_stderr)

    # ------------------------------------------------------------------ setup
    def _resolve_run_dir(self) -> Path:
        cfg = self.config
        path = [cfg.run_dir]
        if path[0] is None:
            if self.rank == 0:
                path[0] = str(next_run_dir(cfg.run_root, cfg.desc))
            if self.world_size > 1:
                dist.broadcast_object_list(path, src=0)
        assert path[0] is not None  # set by rank 0, broadcast to the others
        return Path(path[0])

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _log(self, message: str) -> None:
        if self.run is not None:
            self.run.log(message)

    def resolved_config(self) -> dict[str, Any]:
        """The config plus the facts of this run (device, world size, versions)."""
        out = self.config.to_dict()
        out["run_dir"] = str(self.run_dir)
        out["resolved"] = {
            "device": str(self.device), "world_size": self.world_size,
            "strategy": self.strategy,
            "local_batch": self.local_batch, "torch": torch.__version__,
            "parameters": sum(p.numel() for p in self.params),
        }
        return out

    # ------------------------------------------------------------------ one step
    def positions(self, step: int, micro: int) -> Tensor:
        """Global sample positions of micro-batch ``micro`` of ``step`` on this rank."""
        cfg = self.config
        start = step * cfg.batch_size + micro * cfg.micro_batch + self.rank * self.local_batch
        return torch.arange(start, start + self.local_batch, dtype=torch.int64)

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step`` (linear warm-up over ``lr_warmup`` steps)."""
        cfg = self.config
        return cfg.lr * min(1.0, (step + 1) / cfg.lr_warmup) if cfg.lr_warmup else cfg.lr

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (``grad_accum`` micro-batches); returns its record."""
        cfg, step = self.config, self.step
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for m in range(cfg.grad_accum):
            self._gen.manual_seed(mix_seed(cfg.seed, step, m, self.rank))
            batch = _to_device(self.data.get(self.positions(step, m), self._gen), self.device)
            with self._grad_sync(m == cfg.grad_accum - 1):
                with gpu.autocast(self.device, cfg.precision):
                    loss = self._forward(batch, self._gen)
                loss = loss.float() / cfg.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        # FSDP: a DTensor already reduced over the shards (the global norm on every rank)
        full_norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        check = gpu.all_reduce_mean(torch.stack([total, full_norm.float().to(self.device)]))
        loss_v, norm_v = check.tolist()
        finite = math.isfinite(loss_v) and math.isfinite(norm_v)
        if finite:
            if cfg.grad_clip is not None:
                clip_grads_with_norm_(self.params, cfg.grad_clip, norm)
            self.scaler.step(self.optimizer)
            if self.ema is not None:
                self.ema.update(step)
        else:
            self.skipped += 1
            self._log(f"step {step + 1}: non-finite loss {loss_v} or gradient norm {norm_v}; "
                      "optimizer and EMA step skipped")
        if self.scaler.is_enabled():
            self.scaler.update()
        self.step += 1
        return {"step": self.step, "loss": loss_v, "grad_norm": norm_v, "lr": lr,
                "skipped": int(not finite)}

    def _grad_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """The context of one micro-batch: gradients are reduced across ranks only when
        ``sync`` (the last micro-batch of a step)."""
        if self._ddp is not None and not sync:
            return self._ddp.no_sync()
        if self.strategy == "fsdp":
            self._module.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ full state
    def full_state_dict(self, which: str = "model", *, rank0_only: bool = False
                        ) -> dict[str, Tensor]:
        """Full CPU copies of the model's weights (``which="model"``) or of their EMA
        (``"ema"``), keyed like ``model.state_dict()``: under FSDP the shards are gathered
        (a collective: every rank must call it), e.g. for ``save_pretrained``::

            state = trainer.full_state_dict("ema")
            if trainer.rank == 0:
                fresh = build_model(); fresh.load_state_dict(state); fresh.save_pretrained(...)

        With ``rank0_only`` the other ranks get ``{}`` (and keep no full copy)."""
        if which not in ("model", "ema"):
            raise ValueError("which must be 'model' or 'ema'")
        keep = self.rank == 0 or not rank0_only
        if which == "ema":
            if self.ema is None:
                raise ValueError("this run keeps no EMA (config.ema_decay is off)")
            return full_tensors(self.ema.state_dict(), keep=keep)
        if self.strategy == "fsdp":
            return gather_model_state(self.model, rank0_only)
        return full_tensors(self.model.state_dict(), keep=keep)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the current step (rank 0; all ranks must call it)."""
        rngs = [gpu.rng_state()]
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.strategy == "fsdp":  # full states gathered by every rank, kept by rank 0
            model_state = self.full_state_dict(rank0_only=True)
            ema_state = None if self.ema is None else self.full_state_dict("ema", rank0_only=True)
            optim_state = gather_optimizer_state(self.model, self.optimizer, self._param_names)
        else:  # references: save_checkpoint copies to CPU
            model_state, optim_state = self.model.state_dict(), self.optimizer.state_dict()
            ema_state = None if self.ema is None else self.ema.state_dict()
        path = None
        if self.rank == 0:
            seen = self.step * self.config.batch_size
            state = {
                "optimizer": optim_state, "scaler": self.scaler.state_dict(),
                "rng": rngs, "skipped": self.skipped, "world_size": self.world_size,
                "strategy": self.strategy,
                "data": {"samples_seen": seen, **self.data.state_dict()},
                "config_json": json.dumps(self.config.to_dict(), default=str),
            }
            meta: dict[str, str] = {"config": str(state["config_json"])}
            if self._network is not None:
                meta[NETWORK_KEY] = json.dumps(self._network, sort_keys=True)
            path = save_checkpoint(
                self.checkpoint_dir, self.step, model_state, state, ema_state=ema_state,
                metadata=meta, keep_last=self.config.keep_last)
            self._log(f"step {self.step}: checkpoint {path.name}")
        gpu.barrier()
        return path

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore everything from ``path`` (default: the run's newest intact checkpoint, a
        damaged newer one skipped with one warning line); ``False`` if there is none. Raises
        :class:`~polydiff.core.training.checkpoint.CheckpointError` for a damaged ``path`` or
        when no checkpoint of the run is intact."""
        if path is None:
            path, problems = find_checkpoint(self.checkpoint_dir)
            if path is None:
                return False
            if problems:
                self._log(f"warning: skipped damaged checkpoint(s): {'; '.join(problems)}; "
                          f"resuming from {path.stem}")
        path = Path(path)
        fsdp = self.strategy == "fsdp"  # full tensors on CPU, then cut into this rank's shards
        model_state, ema_state, state = load_checkpoint(path, "cpu" if fsdp else self.device)
        if self.ema is not None and ema_state is None:
            raise KeyError(f"{path} holds no EMA weights but this run uses EMA")
        if fsdp:
            load_full_state(self.model, self.optimizer, model_state, state["optimizer"],
                            self._param_names)
        else:
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            assert ema_state is not None  # checked above
            self.ema.load_state_dict(ema_state)
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.data.load_state_dict(state["data"])
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            gpu.set_rng_state(rngs[self.rank])
        else:  # a different world size: fresh, still deterministic, global RNG streams
            gpu.seed_everything(mix_seed(self.config.seed, self.step, self.rank))
        self._log(f"resumed from {path.name} at step {self.step}")
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train until ``config.steps``; with ``resume`` continue from the latest checkpoint
        of the run directory when there is one. Returns a summary."""
        if self.rank == 0 and self._lock is None:  # released by an earlier fit() or close()
            self._lock = RunLock(self.run_dir, warn=_log_to_stderr).acquire()
            if self.run is None:
                self.run = RunDir(self.run_dir, print_fn=_log_to_stderr)
        try:
            return self._fit(resume)
        finally:
            if self.run is not None:
                self.run.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def close(self) -> None:
        """Release the run folder (its lock and log files) and drop the DDP/FSDP wrappers,
        which hold the process group: call it before :func:`polydiff.gpu.destroy`.
        ``trainer.model`` stays usable (under FSDP it holds shards)."""
        if self.run is not None:
            self.run.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._ddp = None
        self._forward = self._module

    def _fit(self, resume: bool) -> dict[str, Any]:
        cfg = self.config
        if not (resume and self.load_checkpoint()):
            gpu.seed_everything(cfg.seed + self.rank)
        if self.run is not None:
            self.run.write_config(self.resolved_config())
            self.run.truncate_stats(self.step)
            self._log(f"training {cfg.steps} steps from step {self.step} on {self.device} "
                      f"(world size {self.world_size}) in {self.run_dir}")
        disable = not (cfg.progress and self.rank == 0) or quiet()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.desc, dynamic_ncols=True,
                   disable=True if disable else None)
        t0, window = time.perf_counter(), _Window()
        last: dict[str, Any] = {}
        while self.step < cfg.steps:
            last = self.train_step()
            window.add(last)
            done = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or done:
                rec = window.flush(last, time.perf_counter() - t0, self.skipped)
                if self.run is not None:
                    self.run.append_stats(rec)
                bar.set_postfix(loss=rec["loss"], refresh=False)
            if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or done:
                self.save_checkpoint()
            for cb in self.callbacks:
                cb(self, last)
            bar.update(1)
        bar.close()
        if self.run is not None:
            self._log(f"done: step {self.step}, {self.skipped} skipped step(s)")
        return {"step": self.step, "skipped": self.skipped, "loss": last.get("loss"),
                "run_dir": str(self.run_dir)}


class _Window:
    """Running means of the records between two ``stats.jsonl`` lines."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.loss = self.norm = 0.0
        self.n = self.skipped = self.steps = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.steps += 1
        if rec["skipped"]:
            self.skipped += 1
        else:
            self.loss += rec["loss"]
            self.norm += rec["grad_norm"]
            self.n += 1

    def flush(self, last: dict[str, Any], elapsed: float, skipped_total: int) -> dict[str, Any]:
        rec = {"step": last["step"], "lr": last["lr"], "skipped": self.skipped,
               "skipped_total": skipped_total, "time": round(elapsed, 4),
               "loss": self.loss / self.n if self.n else None,
               "grad_norm": self.norm / self.n if self.n else None}
        self._reset()
        return rec
