"""A tiny, deterministic training run for the training-engine tests.

A 2-D MLP denoiser (epsilon prediction, VP-cosine process) trained with ``DiffusionLoss``:

* ``--data gm``: samples of a two-component Gaussian mixture; noise and times come from the
  trainer's per-step generator, and the MLP has dropout (the global torch RNG), so an exact
  resume needs both the per-step seeding and the saved RNG states;
* ``--data fixed``: rows ``(x0, t, eps)`` with per-sample times and noise stored in the data,
  so runs with different world sizes or accumulation see identical samples and noise.

``--kill-at K`` makes the process SIGKILL itself right after step ``K`` (deterministic
"crash"). ``--restart-at K`` trains to step ``K``, drops the trainer and resumes in a new one
(same process). Runs under ``torchrun`` too, with ``--strategy ddp`` or ``fsdp`` (each
``nn.Linear`` its own FSDP unit, inside the root unit); at the end each rank prints how many
Gloo threads are still alive after ``polydiff.gpu.destroy()`` (must be 0: a group that outlives
it runs on into interpreter shutdown). Importable: :func:`build` returns the trainer.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core import ModelDenoiser, VPCosine
from polydiff.core.losses import DiffusionLoss
from polydiff.core.testbeds import GaussianMixture
from polydiff.core.training import TrainConfig, Trainer


class MLP(nn.Module):
    """``(x, t) -> eps`` for 2-D points."""

    def __init__(self, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


def make_data(kind: str, n: int = 256) -> Any:
    """The training set (float32), a fixed function of ``kind``."""
    g = torch.Generator().manual_seed(1234)
    mix = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [[0.2, 0.1], [0.1, 0.3]])
    x0 = mix.sample(n, generator=g).float()
    if kind == "gm":
        return x0
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64)
    return {"x0": x0, "t": t, "eps": torch.randn(n, 2, generator=g)}


def build(run_dir: str, *, data: str = "gm", steps: int = 40, batch_size: int = 16,
          grad_accum: int = 1, ckpt_every: int = 5, kill_at: int | None = None,
          **overrides: Any) -> Trainer:
    """The trainer of one tiny run (same model initialisation every time)."""
    torch.manual_seed(0)
    process = VPCosine()
    model = ModelDenoiser(MLP(dropout=0.1 if data == "gm" else 0.0), process)
    options: dict[str, Any] = dict(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=3e-3, weight_decay=0.01,
        grad_clip=1.0, ema_decay=0.9, ema_warmup="power", ckpt_every=ckpt_every, keep_last=2,
        log_every=1, run_dir=run_dir, device="cpu", seed=7, progress=False)
    cfg = TrainConfig(**{**options, **overrides})
    units = None
    if cfg.strategy == "fsdp":  # nested units: each Linear, innermost first
        def units(m: nn.Module) -> list[nn.Module]:
            return [x for x in m.modules() if isinstance(x, nn.Linear)][::-1]
    callbacks = []
    if kill_at is not None:
        def crash(trainer: Trainer, record: dict[str, Any]) -> None:
            if trainer.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(crash)
    return Trainer(model, DiffusionLoss(process), make_data(data), cfg, callbacks=callbacks,
                   fsdp_units=units)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", choices=("gm", "fixed"), default="gm")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--restart-at", type=int, default=None)
    p.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp")
    p.add_argument("--grad-clip", type=float, default=1.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    for steps in ([a.restart_at] if a.restart_at else []) + [a.steps]:
        trainer = build(a.run_dir, data=a.data, steps=steps, batch_size=a.batch_size,
                        grad_accum=a.grad_accum, ckpt_every=a.ckpt_every, kill_at=a.kill_at,
                        strategy=a.strategy, grad_clip=a.grad_clip)
        trainer.fit(resume=True)
        trainer.close()
    from polydiff.gpu import destroy, rank

    r = rank()
    destroy()
    # the process group's threads must be gone before the interpreter shuts down
    print(f"rank {r}: gloo threads after destroy: {len(_gloo_threads())}", flush=True)


def _gloo_threads() -> list[str]:
    """Names of this process's Gloo threads (Linux; ``[]`` elsewhere)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for t in os.listdir(tasks):
        try:
            with open(f"{tasks}/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return [n for n in names if "gloo" in n]


if __name__ == "__main__":
    main()
