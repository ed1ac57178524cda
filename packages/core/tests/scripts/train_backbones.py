"""Train every core backbone a few steps, for the DDP / FSDP equivalence test.

Backbones (tiny configs): U-Net 1-D and 2-D, the DiT (adaLN) and U-ViT (time token, long
skips) transformer, WaveNet, each inside a ``ModelDenoiser`` trained with ``DiffusionLoss`` on
rows ``(x0, t, eps)`` with the times and noise stored in the data, so any world size sees the
same samples and noise. ``--strategy ddp fsdp`` trains each backbone under each strategy
(under torchrun; in one process the strategy is ignored) into ``RUN_ROOT/<strategy>-<name>``.
Importable: :data:`BACKBONES` and :func:`build`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from polydiff.core import ModelDenoiser, VPCosine
from polydiff.core.losses import DiffusionLoss
from polydiff.core.nn import (
    DiffusionTransformer,
    DiffusionTransformerConfig,
    UNet,
    UNetConfig,
    WaveNet,
    WaveNetConfig,
)
from polydiff.core.training import TrainConfig, Trainer

#: name -> (network factory, shape of one sample)
BACKBONES: dict[str, tuple[Any, tuple[int, ...]]] = {
    "unet1d": (lambda: UNet(UNetConfig.tiny(dims=1)), (2, 16)),
    "unet2d": (lambda: UNet(UNetConfig.tiny(dims=2)), (2, 8, 8)),
    "dit": (lambda: DiffusionTransformer(DiffusionTransformerConfig.tiny("adaln")), (16, 4)),
    "uvit": (lambda: DiffusionTransformer(DiffusionTransformerConfig.tiny("token",
                                                                          long_skip=True)),
             (16, 4)),
    "wavenet": (lambda: WaveNet(WaveNetConfig.tiny()), (1, 16)),
}


def make_data(shape: tuple[int, ...], n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return {"x0": torch.randn(n, *shape, generator=g),
            "t": 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64),
            "eps": torch.randn(n, *shape, generator=g)}


def build(name: str, run_dir: str, strategy: str = "ddp", steps: int = 3) -> Trainer:
    net, shape = BACKBONES[name]
    process = VPCosine()
    # adam_eps 1e-4: attention's key bias has an analytically zero gradient (softmax is
    # shift-invariant); with a tiny eps Adam would turn its round-off noise, which differs
    # between summation orders, into full-size steps
    cfg = TrainConfig(steps=steps, batch_size=8, grad_accum=2, lr=3e-3, weight_decay=0.01,
                      adam_eps=1e-4,
                      grad_clip=0.5, ema_decay=0.9, ckpt_every=0, keep_last=1, log_every=1,
                      run_dir=run_dir, device="cpu", seed=5, progress=False, strategy=strategy)
    return Trainer(lambda: ModelDenoiser(net(), process), DiffusionLoss(process),
                   make_data(shape), cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-root", required=True)
    p.add_argument("--strategy", nargs="+", default=["ddp"], choices=("ddp", "fsdp"))
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    a = p.parse_args()
    torch.set_num_threads(1)
    for strategy in a.strategy:
        for name in a.backbones:
            trainer = build(name, f"{a.run_root}/{strategy}-{name}", strategy)
            trainer.fit()
            trainer.close()
    from polydiff.gpu import destroy

    destroy()


if __name__ == "__main__":
    main()
