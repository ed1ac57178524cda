"""Training TSDiff on a list of 1-D series with polydiff-core's training loop.

Kollovieh et al. (2023), "Predict, Refine, Synthesize", Sec. 3 and App. B: the model is
trained on random windows of ``context_length + prediction_length`` points of the training
series (the reference implementation draws them with gluonts' ``ExpectedNumInstanceSampler``,
uniformly over the possible windows), mean-scaled by their context, with the lag features
taken from the points before each window; Adam, learning rate 1e-3, gradient clipping 0.5,
batch 64.

:class:`WindowSampler` is a core data source (``get(positions, generator)``): sample position
``p`` is a window chosen uniformly among all valid windows by a generator seeded with
``(seed, p)``, so the data order is a pure function of the seed and the step and a resumed run
sees exactly the windows it would have seen. :func:`train_tsdiff` runs
:class:`~polydiff.core.training.Trainer` on it and exports the (EMA) model with
``save_pretrained``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.core.nn.hub import config_to_dict
from polydiff.core.training import TrainConfig, Trainer, mix_seed
from polydiff.timeseries.tsdiff.model import TSDiffConfig, TSDiffModel, make_window

__all__ = ["WindowSampler", "train_tsdiff", "tsdiff_objective", "MODEL_DIR"]

MODEL_DIR = "model"


class WindowSampler:
    """Random training windows (with lag history) from ragged 1-D series.

    Args:
        series: 1-D arrays of any lengths; NaN marks a missing value.
        config: the model's :class:`~polydiff.timeseries.tsdiff.model.TSDiffConfig`.
        seed: seeds the window choice of every sample position.
        min_observed: smallest fraction of observed points in a window (windows below it are
            never drawn; at least one context point must be observed). Missing target points
            of a drawn window are filled by linear interpolation for the network's input and
            masked out of the loss;
            missing lag values are zeros with a zero indicator.
        history: points before each window given to :func:`make_window` for the lags
            (default ``config.max_lag``: every lag that exists in the series is used).

    A window may start anywhere its ``L`` points fit in the series, also less than
    ``max(lags)`` points after the start: its earliest lag values are then marked missing.
    """

    def __init__(self, series: Sequence[np.ndarray], config: TSDiffConfig, *, seed: int = 0,
                 min_observed: float = 0.8, history: int | None = None):
        if not 0.0 <= min_observed <= 1.0:
            raise ValueError(f"min_observed must be in [0, 1], got {min_observed}")
        self.config, self.seed, self.min_observed = config, int(seed), float(min_observed)
        self.history = config.max_lag if history is None else int(history)
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self.series: list[np.ndarray] = []
        for i, s in enumerate(series):
            a = np.asarray(s, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"series {i} is not 1-D (shape {a.shape})")
            self.series.append(a)
        length, ctx = config.window_length, config.context_length
        need = int(np.ceil(self.min_observed * length))
        ends, owners = [], []
        for i, a in enumerate(self.series):
            if len(a) < length:
                continue
            c = np.concatenate([[0], np.cumsum(np.isfinite(a))])
            e = np.arange(length, len(a) + 1)  # window = a[e - L : e]
            ok = (c[e] - c[e - length] >= need) & (c[e - length + ctx] - c[e - length] >= 1)
            ends.append(e[ok])
            owners.append(np.full(int(ok.sum()), i, dtype=np.int64))
        self.ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        self.owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        if len(self.ends) == 0:
            raise ValueError(f"no training window: every series is shorter than context_length"
                             f" + prediction_length = {length} or has fewer than "
                             f"{self.min_observed:.0%} observed points in every window")

    def __len__(self) -> int:
        """Number of distinct windows."""
        return len(self.ends)

    def choose(self, positions: Tensor | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(series index, window end)`` of each sample position (deterministic)."""
        pos = [int(p) for p in torch.as_tensor(positions).reshape(-1).tolist()]
        k = np.array([np.random.default_rng(mix_seed(self.seed, p, 0x75D1)).integers(len(self))
                      for p in pos], dtype=np.int64)
        return self.owners[k], self.ends[k]

    def raw(self, positions: Tensor | Sequence[int]) -> np.ndarray:
        """The raw segments ``(B, history + L)`` (NaN before a series' start)."""
        owners, ends = self.choose(positions)
        width = self.history + self.config.window_length
        out = np.full((len(ends), width), np.nan)
        for row, (i, e) in enumerate(zip(owners, ends, strict=True)):
            seg = self.series[i][max(0, e - width): e]
            out[row, width - len(seg):] = seg
        return out

    def get(self, positions: Tensor, generator: torch.Generator | None = None
            ) -> dict[str, Tensor]:
        """A batch ``{"x0": (B, 1, L), "lags": (B, 2 n_lags, L)}`` (float32, CPU)."""
        return make_window(self.raw(positions), self.config, fill="interpolate").batch()

    def state_dict(self) -> dict[str, Any]:
        return {"num_windows": len(self), "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("num_windows", len(self))) != len(self):
            raise ValueError(f"the checkpoint was trained on {state['num_windows']} windows, "
                             f"these series give {len(self)}: the data order would differ")


def tsdiff_objective(model: TSDiffModel, batch: dict[str, Tensor],
                     generator: torch.Generator) -> Tensor:
    """The Trainer's ``loss_fn``: :meth:`TSDiffModel.loss`."""
    return model.loss(batch, generator)


def train_tsdiff(model: TSDiffModel, series: Sequence[np.ndarray], out_dir: str | Path, *,
                 steps: int, batch_size: int = 64, lr: float = 1e-3,
                 ema: float | None = 0.999, device: str = "auto", resume: bool = True,
                 seed: int = 0, grad_clip: float | None = 0.5, min_observed: float = 0.8,
                 log_every: int = 50, ckpt_every: int = 0, progress: bool = True,
                 **train_overrides: Any) -> Path:
    """Train ``model`` on random windows of ``series`` (paper defaults: Adam, lr 1e-3,
    gradient clipping 0.5, batch 64) with the core :class:`~polydiff.core.training.Trainer`
    in ``out_dir`` (``config.json``, ``stats.jsonl``, ``log.txt``, ``checkpoints/``;
    ``resume`` continues from its latest checkpoint). Extra ``TrainConfig`` fields may be
    passed as keywords.

    The model is put in training mode for the run and left in eval mode. At the end the
    EMA weights (when ``ema``) are loaded into ``model`` and the model is saved with
    ``save_pretrained`` to ``out_dir / "model"`` (load it with
    ``TSDiffModel.from_pretrained``). Returns ``out_dir``."""
    out_dir = Path(out_dir)
    sampler = WindowSampler(series, model.config, seed=seed, min_observed=min_observed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip,
                      ema_decay=ema, device=device, seed=seed, run_dir=str(out_dir),
                      desc="tsdiff", log_every=log_every, ckpt_every=ckpt_every,
                      progress=progress, **{"extra": {"tsdiff": config_to_dict(model.config)},
                                            **train_overrides})
    model.train()  # dropout and lag dropout on (a from_pretrained model comes in eval mode)
    trainer = Trainer(model, tsdiff_objective, sampler, cfg)
    trainer.fit(resume=resume)
    model.eval()
    if trainer.rank == 0:
        if trainer.ema is not None:
            trainer.ema.copy_to(model)
        model.save_pretrained(out_dir / MODEL_DIR)
    return out_dir
