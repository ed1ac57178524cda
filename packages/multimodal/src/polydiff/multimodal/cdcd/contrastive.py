"""Contrastive terms of Conditional Discrete Contrastive Diffusion (CDCD).

Zhu et al. (2022), "Discrete Contrastive Diffusion for Cross-Modal Music and Image
Generation", maximise the mutual information ``I(x_0; c)`` between the condition ``c`` and
the generated tokens ``x_0`` with an InfoNCE bound (Oord et al. 2018) whose critic is the
diffusion model's own conditional likelihood: for one positive ``x_0`` (drawn with ``c``) and
``N`` negatives ``x_0^j`` (not drawn with ``c``),

    I(x_0; c) >= log(N + 1) - E[ L_NCE ],
    L_NCE = -log( exp(s(x_0, c) / tau) / sum_{y in {x_0, x_0^1..x_0^N}} exp(s(y, c) / tau) ),

where ``s(y, c)`` estimates ``log p_theta(y | c)`` from one diffusion step. The paper expands
the critic with the variational bound and arrives at a loss of the form ``L_vb(x_0, c) -
(terms that raise L_vb(x_0^j, c) of the negatives)``: the positive's bound is pulled down, the
negatives' pushed up. Written as that plain difference the objective is unbounded below
(raising a negative's loss never stops paying). Here the same critic goes through the
normalised softmax cross-entropy above instead: ``L_NCE >= 0``, it is 0 only when the
positive's score dominates every negative's, ``log(N + 1) - L_NCE <= log(N + 1)`` is the
bounded InfoNCE estimate of ``I``, and the gradient on every score is a softmax weight in
``[-1/tau, 1/tau]``, so negatives that are already far below the positive stop being pushed.

Two ways to compute the scores (the paper's two mechanisms), both on the same step ``t``:

* ``"step"`` (step-wise parallel diffusion): every negative is diffused in parallel with the
  positive, ``x_t^j ~ q(x_t | x_0^j)``, and scored by the step's variational term,
  ``s = -L_{t-1} = -KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t, c))`` summed over
  positions;
* ``"sample"`` (sample-wise auxiliary diffusion): the same parallel ``x_t^j``, scored by the
  auxiliary clean-sample term, ``s = log p_theta(x_0 | x_t, c)`` summed over positions.

Negatives (:func:`negatives`): ``"inter"``: other samples of the batch (for class
conditions, only samples of another class); ``"intra"``: the sample itself with its chunks
shuffled (for digits, rows; for melodies, beats), which keeps the token statistics and breaks
the structure; ``"both"``: half of each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from polydiff.core.processes.discrete import MaskAndReplaceProcess

__all__ = ["ContrastiveSettings", "VARIANTS", "NEGATIVES", "info_nce", "inter_negatives",
           "intra_negatives", "negatives", "contrastive_term"]

VARIANTS = ("vanilla", "step", "sample")
NEGATIVES = ("inter", "intra", "both")


@dataclass
class ContrastiveSettings:
    """The contrastive term: ``variant`` (``"vanilla"`` = none, ``"step"``, ``"sample"``),
    ``negatives`` (``"inter"``, ``"intra"``, ``"both"``), ``num_negatives`` per sample,
    ``weight`` (lambda of ``L = L_vb + aux L_x0 + lambda L_NCE``), ``temperature`` ``tau``
    and ``chunks`` (pieces a sample is cut into for intra-sample shuffles)."""

    variant: str = "vanilla"
    negatives: str = "inter"
    num_negatives: int = 2
    weight: float = 0.1
    temperature: float = 1.0
    chunks: int = 8

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.num_negatives < 1 or self.chunks < 2:
            raise ValueError("num_negatives must be >= 1 and chunks >= 2")
        if not self.temperature > 0 or not self.weight >= 0:
            raise ValueError("temperature must be > 0 and weight >= 0")


def info_nce(pos: Tensor, neg: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample InfoNCE loss ``(B,)`` from positive scores ``(B,)`` and negative scores
    ``(B, N)``: the cross-entropy of picking the positive among the ``N + 1`` candidates with
    softmax weights ``exp(s / tau)``. Always ``>= 0``; ``log(N + 1) - loss`` is the InfoNCE
    bound on the mutual information (at most ``log(N + 1)``)."""
    if neg.ndim != 2 or pos.shape != neg.shape[:1]:
        raise ValueError(f"expected pos (B,) and neg (B, N), got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def inter_negatives(x0: Tensor, num: int, *, labels: Tensor | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    """``num`` other samples of the batch per sample, ``(B, num, ...)``. With ``labels``,
    samples of the same class are avoided (they are not negatives) unless a batch has too few
    others; a sample is never its own negative while the batch has another one."""
    b = x0.shape[0]
    scores = torch.rand(b, b, generator=generator, device=x0.device)
    eye = torch.eye(b, dtype=torch.bool, device=x0.device)
    scores = scores.masked_fill(eye, -2.0)
    if labels is not None:
        same = labels.reshape(-1, 1) == labels.reshape(1, -1)
        scores = scores.masked_fill(same & ~eye, -1.0)
    if b < 2:
        idx = torch.zeros(b, num, dtype=torch.long, device=x0.device)
    else:
        k = min(num, b - 1)
        idx = scores.topk(k, dim=1).indices
        if k < num:  # a tiny batch: repeat the picks
            idx = idx.repeat(1, -(-num // k))[:, :num]
    return x0[idx]


def intra_negatives(x0: Tensor, num: int, chunks: int, *,
                    generator: torch.Generator | None = None) -> Tensor:
    """``num`` shuffles of each sample's own chunks, ``(B, num, L)`` from ``(B, L)``: the
    sequence is cut into ``chunks`` equal pieces (``L`` must divide) and the pieces are put in
    a random order that is never the identity."""
    b, length = x0.shape
    if length % chunks:
        raise ValueError(f"sequence length {length} is not divisible by chunks={chunks}")
    pieces = x0.reshape(b, chunks, length // chunks)
    keys = torch.rand(b, num, chunks, generator=generator, device=x0.device)
    perm = keys.argsort(dim=-1)
    ident = torch.arange(chunks, device=x0.device)
    is_ident = (perm == ident).all(-1, keepdim=True)
    perm = torch.where(is_ident, perm.roll(1, dims=-1), perm)
    gathered = torch.gather(pieces.unsqueeze(1).expand(b, num, chunks, length // chunks), 2,
                            perm.unsqueeze(-1).expand(b, num, chunks, length // chunks))
    return gathered.reshape(b, num, length)


def negatives(x0: Tensor, s: ContrastiveSettings, *, labels: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """The negatives of ``s.negatives`` for a batch ``(B, L)``: ``(B, N, L)``."""
    n = s.num_negatives
    if s.negatives == "inter":
        return inter_negatives(x0, n, labels=labels, generator=generator)
    if s.negatives == "intra":
        return intra_negatives(x0, n, s.chunks, generator=generator)
    n_inter = max(1, n // 2)
    parts = [inter_negatives(x0, n_inter, labels=labels, generator=generator)]
    if n - n_inter:
        parts.append(intra_negatives(x0, n - n_inter, s.chunks, generator=generator))
    return torch.cat(parts, dim=1)


def _scores(process: MaskAndReplaceProcess, variant: str, logits: Tensor, x0: Tensor,
            xt: Tensor, t: Tensor) -> Tensor:
    """``s(x_0, c)`` per sample, summed over positions (see the module docstring)."""
    length = x0[0].numel()
    if variant == "step":
        return -process.vb_loss(logits, x0, xt, t) * length
    return -process.x0_cross_entropy(logits, x0) * length


def contrastive_term(model: Callable[..., Tensor], process: MaskAndReplaceProcess,
                     x0: Tensor, xt: Tensor, t: Tensor, logits: Tensor,
                     cond: Mapping[str, Any], s: ContrastiveSettings, *,
                     labels: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """Per-sample ``L_NCE`` ``(B,)`` of variant ``s.variant`` for a batch whose positive pass
    (``x_t``, its ``x_0``-logits) is already done: the negatives are diffused to the same
    ``t`` and scored by one more network call on ``B * N`` sequences under the positives'
    condition ``cond`` (tensors with a leading batch dimension)."""
    if s.variant == "vanilla":
        return torch.zeros(x0.shape[0], device=x0.device)
    b, n = x0.shape[0], s.num_negatives
    neg = negatives(x0, s, labels=labels, generator=generator).reshape(b * n, *x0.shape[1:])
    t_neg = t.repeat_interleave(n)
    xt_neg = process.q_sample(neg, t_neg, generator=generator)
    cond_neg = {k: v.repeat_interleave(n, dim=0) for k, v in cond.items()}
    logits_neg = model(xt_neg, t_neg, **cond_neg)
    pos = _scores(process, s.variant, logits, x0, xt, t)
    neg_s = _scores(process, s.variant, logits_neg, neg, xt_neg, t_neg).reshape(b, n)
    return info_nce(pos, neg_s, s.temperature)
