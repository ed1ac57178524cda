"""The training engine: one loop for every objective.

* :class:`TrainConfig` (``config.py``): typed, validated, JSON/TOML round trip;
* :class:`Trainer` (``loop.py``): AdamW, EMA, bf16/fp16 autocast (+ grad scaler), clipping,
  gradient accumulation, a non-finite guard, torchrun data parallelism (DDP or FSDP2 via
  ``TrainConfig.strategy``; Gloo on CPU), deterministic data order and noise, exact resume;
* ``fsdp.py``: FSDP2 sharding units and sharded <-> full state conversions;
* ``data.py``: data read at global sample positions (:class:`IndexedData`, ...);
* :class:`EMA` (``ema.py``): weight EMA with TF-style or power warm-up;
* ``checkpoint.py``: atomic safetensors + ``weights_only`` checkpoints with a ``latest``
  pointer and a size/SHA-256 manifest; :func:`find_checkpoint` skips damaged ones;
* :class:`RunDir` (``rundir.py``): ``runs/NNNNN-desc/`` with ``config.json``,
  ``stats.jsonl`` and ``log.txt``;
* :class:`RunLock` (``lock.py``): one writer per run folder (pid and host in ``.lock``);
* :func:`start_run` (``runs.py``): how every app's ``train`` verb starts, resumes
  (``--resume``) or restarts (``--overwrite``) a run folder;
* :func:`seeded` / :func:`build_seeded` (``seeding.py``): initial weights from the seed;
* :func:`export_network` / :func:`network_state_dict` (``export.py``): the bare network of a
  run (EMA weights, without the ``ModelDenoiser``'s ``model.`` prefix).

Example::

    loss = DiffusionLoss(VPCosine(), target="epsilon")
    trainer = Trainer(lambda: ModelDenoiser(UNet(unet_cfg), VPCosine()), loss, x_train,
                      TrainConfig(steps=10_000))   # the factory is built under the seed
    trainer.fit()          # resumes from the run directory's newest intact checkpoint if any
    export_network(trainer.run_dir, "unet")        # then UNet.from_pretrained("unet")
"""

from polydiff.core.training.checkpoint import (
    CheckpointError,
    checkpoint_metadata,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    verify_checkpoint,
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
from polydiff.core.training.export import export_network, network_state_dict
from polydiff.core.training.lock import RunLock, RunLockedError
from polydiff.core.training.loop import Trainer, as_objective
from polydiff.core.training.rundir import RunDir, next_run_dir, read_stats
from polydiff.core.training.runs import RunStart, start_run
from polydiff.core.training.seeding import build_seeded, seeded

__all__ = [
    "TrainConfig", "Trainer", "EMA", "ema_decay", "RunDir", "next_run_dir", "read_stats",
    "IndexedData",
    "StreamData", "SampledData", "as_data_source", "as_objective", "mix_seed",
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "load_weights",
    "checkpoint_metadata", "verify_checkpoint", "find_checkpoint", "CheckpointError",
    "RunLock", "RunLockedError", "RunStart", "start_run", "seeded", "build_seeded",
    "export_network", "network_state_dict",
]
