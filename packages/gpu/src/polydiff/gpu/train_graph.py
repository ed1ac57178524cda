"""A whole training step (forward, backward, optimizer update) captured as one CUDA graph.

At a fixed batch shape a training step launches the same kernels every time; once the
network is compiled, what is left between the GPU and full occupancy is the Python and the
launches of the loss, the backward and the optimizer. PyTorch's CUDA semantics notes ("CUDA
Graphs", whole-network capture) give the recipe this module writes once: warm up on a side
stream, ``zero_grad(set_to_none=True)``, capture ``loss.backward()`` and ``optimizer.step()``
into one graph (the gradients are then allocated from the graph's pool and *written*, not
accumulated, on every replay), and per call copy the new batch into static inputs and replay.

Semantics of :class:`GraphedTrainStep`, identical on both paths (graph or eager):

- a call is ``zero_grad(set_to_none=True)`` (eager path), ``loss = loss_fn(*inputs)``,
  ``loss.backward()``, optionally the global gradient norm (``grad_clip`` clips with it;
  ``skip_nonfinite`` skips the update when the loss or the norm is not finite, *on the
  device*, through the fused optimizers' ``found_inf`` input, as ``GradScaler`` does), and
  ``optimizer.step()``; it returns the loss (a fresh 0-d tensor, detached);
- random ops inside ``loss_fn`` (noise, time sampling, dropout) draw new numbers on every
  replay, from the same generator state an eager call would use, so a replay and an eager
  call from the same RNG state agree (up to non-deterministic kernels);
- the warm-up steps that capture needs do not change the run: with ``restore=True`` (the
  default) parameters, optimizer state and the RNG state of the device are put back after
  capture (state an optimizer created during warm-up is zeroed, which is a fresh start for
  Adam/AdamW, whose state starts at zero);
- the optimizer must be capturable on the graph path (``capturable=True``: e.g.
  ``AdamW(..., fused=True, capturable=True)``); a float learning rate is turned into a 0-d
  device tensor so that :meth:`GraphedTrainStep.set_lr` (or any code that writes
  ``group["lr"]`` with ``fill_``) changes it between replays;
- use autocast *inside* ``loss_fn``; bf16 needs no gradient scaler (fp16 scaling is not
  supported here);
- without CUDA (or with ``enabled=False``) the same step runs eagerly; if capture fails, a
  warning names the error, the state is restored and the step runs eagerly
  (``captured`` is False and ``capture_error`` holds the exception).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["GraphedTrainStep"]


def _grad_norm(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.nn.utils.get_total_norm(grads, foreach=True)


class GraphedTrainStep:
    """One optimizer step of ``loss_fn(*inputs)``, replayed from a CUDA graph when possible.

    Args:
        loss_fn: ``loss_fn(*inputs) -> loss`` (a 0-d tensor); model calls, autocast, random
            draws all happen inside it.
        optimizer: the optimizer of the parameters to train (capturable on the graph path).
        example_inputs: tensors with the shapes and dtypes of every future call's inputs (the
            batch); their values are used for the warm-up steps.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        skip_nonfinite: skip the update (parameters and optimizer state unchanged) when the
            loss or the gradient norm is not finite; needs a fused optimizer
            (``fused=True``), which reads the flag on the device.
        warmup: eager steps on a side stream before capture (compilation and autotuning
            happen there).
        enabled: ``None`` captures when CUDA is available and every input and parameter is
            on CUDA; ``False`` always runs eagerly; ``True`` requires capture.
        restore: undo the warm-up steps (parameters, optimizer state, device RNG state).
    """

    def __init__(self, loss_fn: Callable[..., Tensor], optimizer: torch.optim.Optimizer,
                 example_inputs: Sequence[Tensor], *, grad_clip: float | None = None,
                 skip_nonfinite: bool = False, warmup: int = 3, enabled: bool | None = None,
                 restore: bool = True) -> None:
        inputs = tuple(example_inputs)
        for i, t in enumerate(inputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"example_inputs[{i}] is {type(t).__name__}, not a tensor")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (capture needs a warmed-up step), got {warmup}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {grad_clip}")
        groups = optimizer.param_groups
        self.params = [p for g in groups for p in g["params"] if p.requires_grad]
        if not self.params:
            raise ValueError("the optimizer has no parameters that require gradients")
        if skip_nonfinite and not all(g.get("fused") for g in groups):
            raise ValueError("skip_nonfinite needs a fused optimizer (e.g. AdamW(..., "
                             "fused=True)): it skips the update on the device via found_inf")
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.grad_clip, self.skip_nonfinite = grad_clip, skip_nonfinite
        self._signature = [(tuple(t.shape), t.dtype) for t in inputs]
        cuda_ok = (torch.cuda.is_available() and all(t.is_cuda for t in inputs)
                   and all(p.is_cuda for p in self.params))
        if enabled and not cuda_ok:
            raise ValueError("CUDA graph capture needs CUDA and every input and parameter on "
                             "CUDA")
        self.captured = bool(cuda_ok if enabled is None else enabled)
        self.capture_error: BaseException | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[Tensor, ...] = ()
        self._loss: Tensor | None = None
        self._norm: Tensor | None = None
        if self.captured:
            bad = [i for i, g in enumerate(groups) if not g.get("capturable", False)]
            if bad:
                raise ValueError(f"param groups {bad} are not capturable: create the optimizer "
                                 "with capturable=True (e.g. AdamW(..., fused=True, "
                                 "capturable=True)) or pass enabled=False")
            self._capture(inputs, warmup, restore)

    # ------------------------------------------------------------------ the step itself
    def _body(self, *inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        loss = self.loss_fn(*inputs)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise ValueError("loss_fn must return a 0-d tensor")
        loss.backward()
        norm = None
        if self.grad_clip is not None or self.skip_nonfinite:
            norm = _grad_norm(self.params)
            if self.grad_clip is not None:
                torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip, norm,
                                                     foreach=True)
        if self.skip_nonfinite:
            assert norm is not None
            bad = ~(torch.isfinite(norm) & torch.isfinite(loss.detach()))
            self.optimizer.found_inf = bad.to(torch.float32)  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        else:
            self.optimizer.step()
        return loss.detach(), norm

    def eager_step(self, *inputs: Tensor) -> Tensor:
        """One step without the graph (the reference the graph is checked against)."""
        self._check(inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss, norm = self._body(*inputs)
        self._norm = norm
        return loss.float()

    # ------------------------------------------------------------------ capture
    def _snapshot(self) -> dict[str, Any]:
        state = self.optimizer.state
        return {
            "params": [p.detach().clone() for p in self.params],
            "had_state": [p in state and len(state[p]) > 0 for p in self.params],
            "state": [{k: v.clone() if isinstance(v, Tensor) else v
                       for k, v in state[p].items()} if p in state else {}
                      for p in self.params],
            "rng": torch.cuda.get_rng_state(self.params[0].device),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        state = self.optimizer.state
        with torch.no_grad():
            for p, saved in zip(self.params, snap["params"]):
                p.copy_(saved)
            for p, had, saved in zip(self.params, snap["had_state"], snap["state"]):
                for k, v in state.get(p, {}).items():
                    if not isinstance(v, Tensor):
                        if had and k in saved:
                            state[p][k] = saved[k]
                    elif had and k in saved:
                        v.copy_(saved[k])
                    else:  # created by the warm-up: a fresh Adam state is all zeros
                        v.zero_()
        torch.cuda.set_rng_state(snap["rng"], self.params[0].device)

    def _tensor_lr(self, device: torch.device) -> None:
        for g in self.optimizer.param_groups:
            if not isinstance(g["lr"], Tensor):
                g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)

    def _capture(self, inputs: tuple[Tensor, ...], warmup: int, restore: bool) -> None:
        device = self.params[0].device
        snap = self._snapshot() if restore else None
        try:
            with torch.cuda.device(device):
                self._tensor_lr(device)
                self.static_inputs = tuple(t.detach().clone() for t in inputs)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(warmup):
                        self.optimizer.zero_grad(set_to_none=True)
                        self._body(*self.static_inputs)
                torch.cuda.current_stream().wait_stream(side)
                self.optimizer.zero_grad(set_to_none=True)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._loss, self._norm = self._body(*self.static_inputs)
                self.graph = graph
        except Exception as exc:  # report it, and run eagerly from now on
            try:
                torch.cuda.synchronize(device)
            except Exception:  # a sticky error: the warning and the next CUDA call say it
                pass
            self.graph, self._loss, self._norm = None, None, None
            self.captured, self.capture_error = False, exc
            self.optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"CUDA graph capture of the training step failed "
                          f"({type(exc).__name__}: {str(exc)[:300]}); running it eagerly",
                          RuntimeWarning, stacklevel=3)
        if snap is not None:
            self._restore(snap)
        torch.cuda.synchronize(device)

    # ------------------------------------------------------------------ calls
    def _check(self, inputs: tuple[Any, ...]) -> None:
        if len(inputs) != len(self._signature):
            raise ValueError(f"expected {len(self._signature)} inputs, got {len(inputs)}")
        for i, (t, (shape, dtype)) in enumerate(zip(inputs, self._signature)):
            if not isinstance(t, Tensor):
                raise TypeError(f"input {i} is {type(t).__name__}, not a tensor")
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(f"input {i} has shape {tuple(t.shape)} and dtype {t.dtype}; "
                                 f"the step was built for shape {shape} and dtype {dtype}")

    def set_lr(self, lr: float) -> None:
        """Set every param group's learning rate (in place when it is a tensor, so a captured
        graph sees it)."""
        for g in self.optimizer.param_groups:
            if isinstance(g["lr"], Tensor):
                g["lr"].fill_(float(lr))
            else:
                g["lr"] = float(lr)

    @property
    def grad_norm(self) -> Tensor | None:
        """The global gradient norm of the last step (before clipping; ``None`` unless
        ``grad_clip`` or ``skip_nonfinite``); on the graph path a buffer the next call
        overwrites."""
        return self._norm

    def __call__(self, *inputs: Tensor) -> Tensor:
        """One training step on ``inputs``; returns the loss (fp32, 0-d, a new tensor)."""
        if not self.captured:
            return self.eager_step(*inputs)
        self._check(inputs)
        for static, new in zip(self.static_inputs, inputs):
            if new.data_ptr() != static.data_ptr():
                static.copy_(new)
        assert self.graph is not None and self._loss is not None
        self.graph.replay()
        return self._loss.float().clone()
