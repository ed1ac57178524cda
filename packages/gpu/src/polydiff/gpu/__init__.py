"""polydiff-gpu: device, precision, compile, CUDA graphs, timing, memory, seeding, distributed.

Depends on torch and the standard library only (NumPy is seeded when installed). Every
helper runs on CPU too, with the CPU behaviour documented in its module, so the same code
path works on a laptop, one GPU and a ``torchrun`` job.
"""

from polydiff.gpu.compile import (
    CompiledFunction,
    CompileFallback,
    compile_enabled,
    compile_regions,
    maybe_compile,
    uncompile_regions,
)
from polydiff.gpu.device import as_device, device_info, mps_available, select_device
from polydiff.gpu.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    destroy,
    init_distributed,
    is_distributed,
    is_main,
    local_rank,
    rank,
    rank_zero_only,
    rank_zero_print,
    world_size,
)
from polydiff.gpu.graphs import CudaGraphRunner, GraphedLoop
from polydiff.gpu.layout import ATTENTION_BACKENDS, attention_backend, to_channels_last
from polydiff.gpu.memory import (
    current_memory_bytes,
    format_bytes,
    peak_memory_bytes,
    reset_peak_memory,
)
from polydiff.gpu.precision import (
    Precision,
    PrecisionLike,
    autocast,
    autocast_dtype,
    make_grad_scaler,
    resolve_precision,
    set_tf32,
)
from polydiff.gpu.seed import (
    deterministic,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
)
from polydiff.gpu.timing import Timer, synchronize, time_fn
from polydiff.gpu.train_graph import GraphedTrainStep

__all__ = [
    "ATTENTION_BACKENDS",
    "CompileFallback",
    "CompiledFunction",
    "CudaGraphRunner",
    "DistInfo",
    "GraphedLoop",
    "GraphedTrainStep",
    "Precision",
    "PrecisionLike",
    "Timer",
    "all_reduce_mean",
    "as_device",
    "attention_backend",
    "autocast",
    "autocast_dtype",
    "barrier",
    "compile_enabled",
    "compile_regions",
    "current_memory_bytes",
    "destroy",
    "deterministic",
    "device_info",
    "format_bytes",
    "init_distributed",
    "is_distributed",
    "is_main",
    "local_rank",
    "make_grad_scaler",
    "maybe_compile",
    "mps_available",
    "peak_memory_bytes",
    "rank",
    "rank_zero_only",
    "rank_zero_print",
    "reset_peak_memory",
    "resolve_precision",
    "rng_state",
    "seed_everything",
    "select_device",
    "set_deterministic",
    "set_rng_state",
    "set_tf32",
    "synchronize",
    "time_fn",
    "to_channels_last",
    "uncompile_regions",
    "world_size",
]
