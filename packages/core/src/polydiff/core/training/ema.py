"""Exponential moving average of a model's weights, with warm-up.

After optimizer step ``t`` (0-based) every floating-point parameter's shadow moves as

    ``ema <- decay_t * ema + (1 - decay_t) * param``

(buffers, e.g. normalisation statistics, are copied). Warm-ups of ``decay_t``:

* ``"none"``: ``decay_t = decay``;
* ``"tf"``: ``decay_t = min(decay, (1 + t) / (10 + t))``, the ``num_updates`` rule of
  TensorFlow's ``tf.train.ExponentialMovingAverage`` (also diffusers' ``EMAModel`` without
  ``use_ema_warmup``);
* ``"power"``: ``decay_t = min(decay, 1 - (1 + t / inv_gamma) ** -power)``, the warm-up of
  lucidrains' ``ema-pytorch`` and diffusers' ``EMAModel(use_ema_warmup=True)`` (``power=2/3``
  for runs of ~1M steps, ``3/4`` for shorter ones); ``decay_0 = 0`` copies the weights.

For post-hoc EMA reconstruction with power-function profiles see Karras et al. 2024,
"Analyzing and Improving the Training Dynamics of Diffusion Models" (EDM2), Sec. 3; this
module keeps one traditional EMA.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from polydiff.core.training.fsdp import to_local_layout

__all__ = ["EMA", "ema_decay"]


def ema_decay(step: int, decay: float, warmup: str = "power", *, power: float = 2.0 / 3.0,
              inv_gamma: float = 1.0) -> float:
    """``decay_t`` for the update after optimizer step ``step`` (0-based; module docstring)."""
    if step < 0:
        raise ValueError("step must be >= 0")
    if warmup == "none":
        return float(decay)
    if warmup == "tf":
        return min(float(decay), (1.0 + step) / (10.0 + step))
    if warmup == "power":
        return min(float(decay), 1.0 - (1.0 + step / inv_gamma) ** -power)
    raise ValueError(f"unknown EMA warm-up {warmup!r}; expected 'none', 'tf' or 'power'")


class EMA:
    """Shadow copy of ``model``'s state, updated by :meth:`update`.

    Args:
        model: the trained module (its unwrapped form: not DDP or compiled wrappers).
        decay: the target decay (e.g. 0.999 or 0.9999).
        warmup: ``"none"``, ``"tf"`` or ``"power"`` (module docstring).
        power, inv_gamma: parameters of the ``"power"`` warm-up.

    Shadows of half-precision parameters are kept in float32. The state dict is a flat
    ``{name: tensor}`` (the model's state-dict names), safetensors-ready. Under FSDP the
    shadows copy the parameters' layout: ``DTensor`` shards, ``1 / world_size`` of the model
    per rank; :meth:`state_dict` then returns shards (the trainer gathers them into full
    tensors for checkpoints) and :meth:`load_state_dict` takes full tensors.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: str = "power", *,
                 power: float = 2.0 / 3.0, inv_gamma: float = 1.0):
        ema_decay(0, decay, warmup, power=power, inv_gamma=inv_gamma)  # validate
        self.model, self.decay, self.warmup = model, float(decay), warmup
        self.power, self.inv_gamma = float(power), float(inv_gamma)
        self._param_names = [n for n, p in model.named_parameters() if p.is_floating_point()]
        self.shadow: dict[str, Tensor] = {}
        for name, v in model.state_dict().items():
            v = v.detach()
            keep = v.is_floating_point() and v.dtype in (torch.float16, torch.bfloat16)
            self.shadow[name] = v.float().clone() if keep else v.clone()

    def decay_at(self, step: int) -> float:
        """The decay used by :meth:`update` at ``step``."""
        return ema_decay(step, self.decay, self.warmup, power=self.power,
                         inv_gamma=self.inv_gamma)

    def _pairs(self) -> Iterator[tuple[str, Tensor]]:
        yield from self.model.state_dict(keep_vars=True).items()

    @torch.no_grad()
    def update(self, step: int) -> float:
        """Move the shadows towards the current weights; returns the decay used."""
        d = self.decay_at(step)
        state = dict(self._pairs())
        params = set(self._param_names)
        ema_t, cur_t = [], []
        for name, v in state.items():
            s = self.shadow[name]
            if name in params:
                ema_t.append(s)
                cur_t.append(v.detach().to(s.dtype))
            else:  # buffers (and integer tensors) follow the model
                s.copy_(v.detach())
        if ema_t:
            torch._foreach_lerp_(ema_t, cur_t, 1.0 - d)
        return d

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Load the EMA weights into ``model`` (default: the tracked model)."""
        model = self.model if model is None else model
        model.load_state_dict({k: v for k, v in self.shadow.items()}, strict=True)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadows, ``{name: tensor}`` (references; clone before mutating)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the shadows (same names as the model's state dict)."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state mismatch: missing {missing}, unexpected {unexpected}")
        for k, v in state.items():  # full tensors; cut to the shards under FSDP
            self.shadow[k].copy_(to_local_layout(v, self.shadow[k]))
