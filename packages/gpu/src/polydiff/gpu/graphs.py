"""CUDA-graph capture of a fixed-shape callable, with an eager path for every other device.

A diffusion sampler calls the same network on the same shapes tens of times; at small batch
sizes the time goes into kernel launches, not kernels. A CUDA graph records the launches of
one call (one sampling step, or a whole fixed-length sampling loop) once and replays them
with a single launch. The recipe follows PyTorch's CUDA semantics notes ("CUDA Graphs",
whole-network capture): warm up on a side stream, capture into ``torch.cuda.CUDAGraph``
with static input and output buffers, then per call copy new data into the static inputs
and ``replay()``.

Semantics of :class:`CudaGraphRunner`:

- Inputs are tensors (positional); the shapes and dtypes of ``example_inputs`` are fixed
  for the runner's life and every call is checked against them.
- Outputs may be a tensor or a (nested) tuple/list/dict of tensors. On the graph path they
  are the *static* output buffers, overwritten by the next call; pass
  ``clone_outputs=True`` to get fresh tensors instead.
- Random ops inside ``fn`` (``torch.randn``) draw new numbers on every replay, as in eager.
- Capture and calls run under ``torch.no_grad()`` by default (inference); graphs of the
  backward pass need ``torch.cuda.make_graphed_callables``, not this helper.
- Without CUDA (CPU, MPS) or with ``enabled=False`` the runner calls ``fn`` eagerly with
  the same checks, so one code path works everywhere; ``captured`` says which happened.

:class:`GraphedLoop` is the whole-loop case written once: ``steps`` iterations of
``state = step(i, state)`` (a sampler's network call *and* its solver update) captured as one
graph, so a fixed-length sampling run is a single replay. ``i`` is a Python int, so per-step
constants (a solver's float64 coefficients, the time grid) are indexed on the host and baked
into the captured kernels; the state keeps its shape and dtype (e.g. an fp32 sampler state
around a bf16 network). The training-step counterpart is
:class:`polydiff.gpu.train_graph.GraphedTrainStep`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["CudaGraphRunner", "GraphedLoop"]


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list/dict structure."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [_map_tensors(o, fn) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class CudaGraphRunner:
    """Capture ``fn(*example_inputs)`` as a CUDA graph and replay it on new inputs.

    Args:
        fn: the callable to capture; it must be capturable (no host synchronisation, no
            data-dependent control flow or shapes, no CPU tensors created per call).
        example_inputs: tensors with the shapes and dtypes of every future call, on the
            CUDA device to capture on; their values are used for warm-up.
        warmup: eager calls on a side stream before capture (lets cuBLAS/cuDNN and lazy
            initialisation happen outside the graph).
        clone_outputs: return clones of the static outputs instead of the buffers.
        pool: a graph memory pool (``other_runner.pool``) to share between runners.
        no_grad: capture and run under ``torch.no_grad()``.
        enabled: ``None`` captures when CUDA is available and every input is on CUDA;
            ``False`` always runs eagerly; ``True`` requires capture (``ValueError`` if
            impossible).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        example_inputs: Sequence[torch.Tensor],
        *,
        warmup: int = 3,
        clone_outputs: bool = False,
        pool: Any = None,
        no_grad: bool = True,
        enabled: bool | None = None,
    ) -> None:
        inputs = tuple(example_inputs)
        for i, t in enumerate(inputs):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"example_inputs[{i}] is {type(t).__name__}, not a tensor")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.fn = fn
        self.clone_outputs = clone_outputs
        self.no_grad = no_grad
        self._signature = [(tuple(t.shape), t.dtype) for t in inputs]
        cuda_ok = torch.cuda.is_available() and all(t.is_cuda for t in inputs)
        if enabled and not cuda_ok:
            raise ValueError("CUDA graph capture needs CUDA and every example input on CUDA")
        self.captured = bool(cuda_ok if enabled is None else enabled)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.static_outputs: Any = None
        if self.captured:
            self._capture(inputs, warmup, pool)

    def _grad_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.no_grad() if self.no_grad else contextlib.nullcontext()

    def _capture(self, inputs: tuple[torch.Tensor, ...], warmup: int, pool: Any) -> None:
        device = inputs[0].device if inputs else torch.device("cuda", torch.cuda.current_device())
        with torch.cuda.device(device), self._grad_context():
            self.static_inputs = tuple(t.detach().clone() for t in inputs)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.fn(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.static_outputs = self.fn(*self.static_inputs)

    @property
    def pool(self) -> Any:
        """The captured graph's memory pool handle (``None`` on the eager path)."""
        return self.graph.pool() if self.graph is not None else None

    def _check(self, inputs: tuple[Any, ...]) -> None:
        if len(inputs) != len(self._signature):
            raise ValueError(f"expected {len(self._signature)} inputs, got {len(inputs)}")
        for i, (t, (shape, dtype)) in enumerate(zip(inputs, self._signature)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"input {i} is {type(t).__name__}, not a tensor")
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(
                    f"input {i} has shape {tuple(t.shape)} and dtype {t.dtype}; the runner "
                    f"was built for shape {shape} and dtype {dtype}"
                )

    def __call__(self, *inputs: torch.Tensor) -> Any:
        """Run ``fn`` on ``inputs``: copy into the static buffers and replay, or run eagerly."""
        self._check(inputs)
        if not self.captured:
            with self._grad_context():
                return self.fn(*inputs)
        for static, new in zip(self.static_inputs, inputs):
            if new.data_ptr() != static.data_ptr():
                static.copy_(new)
        assert self.graph is not None
        self.graph.replay()
        if self.clone_outputs:
            return _map_tensors(self.static_outputs, torch.Tensor.clone)
        return self.static_outputs


class GraphedLoop:
    """``steps`` iterations of ``state = step(i, state)``, captured as one CUDA graph.

    The loop a fixed-grid sampler runs (network call, then the solver update, ``steps``
    times) replayed with a single launch: no per-step Python, no per-step copies into static
    buffers. The recipe is :class:`CudaGraphRunner`'s (warm-up on a side stream, capture, copy
    the new initial state in, replay); outputs are fresh tensors (``clone_outputs=True``).

    Args:
        step: ``step(i, state) -> state`` for ``i = 0, ..., steps - 1`` (a Python int). It
            must be capturable (no host synchronisation such as ``.item()``/``.tolist()``, no
            data-dependent shapes; compute per-step constants before, on the host) and return
            a tensor of the state's shape and dtype.
        steps: number of iterations (>= 1).
        example_state: a tensor with the shape and dtype of every initial state (its values
            are used for the warm-up runs).
        warmup: eager runs of the whole loop on a side stream before capture (one is enough
            for a loop: its first iterations already warm up every kernel; lazily compiled
            callables compile there).
        pool, no_grad, enabled: as for :class:`CudaGraphRunner` (``enabled=None`` captures
            when CUDA is available and the state is on CUDA, and runs eagerly elsewhere).
    """

    def __init__(self, step: Callable[[int, torch.Tensor], torch.Tensor], steps: int,
                 example_state: torch.Tensor, *, warmup: int = 1, pool: Any = None,
                 no_grad: bool = True, enabled: bool | None = None) -> None:
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not isinstance(example_state, torch.Tensor):
            raise TypeError(f"example_state is {type(example_state).__name__}, not a tensor")
        self.step = step
        self.steps = int(steps)
        self.runner = CudaGraphRunner(self.eager, [example_state], warmup=warmup,
                                      clone_outputs=True, pool=pool, no_grad=no_grad,
                                      enabled=enabled)

    @property
    def captured(self) -> bool:
        """True when the loop runs as a captured graph (False: eagerly)."""
        return self.runner.captured

    @property
    def pool(self) -> Any:
        """The graph's memory pool (``None`` on the eager path)."""
        return self.runner.pool

    def eager(self, state: torch.Tensor) -> torch.Tensor:
        """The loop run eagerly (what is captured; also the reference for checks)."""
        for i in range(self.steps):
            new = self.step(i, state)
            if not isinstance(new, torch.Tensor):
                raise TypeError(f"step({i}, state) returned {type(new).__name__}, not a tensor")
            if new.shape != state.shape or new.dtype != state.dtype:
                raise ValueError(
                    f"step({i}, state) changed the state from shape {tuple(state.shape)} "
                    f"{state.dtype} to {tuple(new.shape)} {new.dtype}; a graphed loop keeps "
                    "both fixed (cast inside step)"
                )
            state = new
        return state

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """The final state after ``steps`` iterations from ``state`` (a new tensor)."""
        return self.runner(state)
