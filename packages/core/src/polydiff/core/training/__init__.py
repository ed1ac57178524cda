"""The training engine: one loop for every objective.

* :class:`TrainConfig` (``config.py``): typed, validated, JSON/TOML round trip;
* :class:`Trainer` (``loop.py``): AdamW, EMA, bf16/fp16 autocast (+ grad scaler), clipping,
  gradient accumulation, a non-finite guard, torchrun data parallelism (DDP or FSDP2 via
  ``TrainConfig.strategy``; Gloo on CPU), deterministic data order and noise, exact resume;
* ``fsdp.py``: FSDP2 sharding units and sharded <-> full state conversions;
* ``data.py``: data read at global sample positions (:class:`IndexedData`, ...);
* :class:`EMA` (``ema.py``): weight EMA with TF-style or power warm-up;
* ``checkpoint.py``: atomic safetensors + ``weights_only`` checkpoints with a ``latest``
  pointer;
* :class:`RunDir` (``rundir.py``): ``runs/NNNNN-desc/`` with ``config.json``,
  ``stats.jsonl`` and ``log.txt``.

Example::

    loss = DiffusionLoss(VPCosine(), target="epsilon")
    trainer = Trainer(ModelDenoiser(net, process), loss, x_train, TrainConfig(steps=10_000))
    trainer.fit()          # resumes from the run directory's latest checkpoint if any
"""

from polydiff.core.training.checkpoint import (
    checkpoint_metadata,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from polydiff.core.training.config import TrainConfig
from polydiff.core.training.data import (
    IndexedData,
    SampledData,
    StreamData,
    as_data_source,
    mix_seed,
)
from polydiff.core.training.ema import EMA, ema_decay
from polydiff.core.training.loop import Trainer, as_objective
from polydiff.core.training.rundir import RunDir, next_run_dir, read_stats

__all__ = [
    "TrainConfig", "Trainer", "EMA", "ema_decay", "RunDir", "next_run_dir", "read_stats",
    "IndexedData",
    "StreamData", "SampledData", "as_data_source", "as_objective", "mix_seed",
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "load_weights",
    "checkpoint_metadata",
]
