"""Durations without an external aligner: monotonic alignment search and the length regulator.

* :func:`monotonic_alignment_search`: Algorithm 1 of Kim et al. (2020), "Glow-TTS: A
  Generative Flow for Text-to-Speech via Monotonic Alignment Search": the monotonic,
  surjective alignment of ``T_mel`` frames to ``T_text`` tokens (every token gets at least
  one frame, in order) that maximises the summed log-likelihood, by dynamic programming
  ``Q[j, i] = max(Q[j, i-1], Q[j-1, i-1]) + L[j, i]`` and backtracking; batched with masks.
* :class:`GaussianAligner`: the log-likelihoods of that search for real corpora without a
  trained TTS model: one diagonal Gaussian per token symbol over the normalised log-mel,
  fitted by Viterbi (hard-EM) training from a flat start (uniform segmentation; each round:
  MAS under the current Gaussians, then the Gaussians re-estimated from the aligned frames).
  The durations it gives are checked against espeak-ng's own phoneme events on the formant
  corpus (:func:`polydiff.speech.prodiff.data.formant_corpus`).
* :func:`length_regulate`: FastSpeech's length regulator (Ren et al. 2019, Sec. 3.2): token
  states repeated by their durations into frame states, padded over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["GaussianAligner", "durations_from_path", "length_regulate",
           "monotonic_alignment_search"]


@torch.no_grad()
def monotonic_alignment_search(log_lik: Tensor, text_lengths: Tensor | None = None,
                               mel_lengths: Tensor | None = None) -> Tensor:
    """The most likely monotonic alignment (module docstring).

    Args:
        log_lik: ``(B, T_text, T_mel)`` log-likelihood of frame ``i`` under token ``j``.
        text_lengths, mel_lengths: ``(B,)`` valid lengths (default: full); every sample
            needs ``mel_length >= text_length``.

    Returns:
        ``(B, T_text)`` integer durations (frames per token; 0 on padding), summing to the
        mel lengths.
    """
    if log_lik.ndim == 2:
        log_lik = log_lik[None]
    b, n, m = log_lik.shape
    dev = log_lik.device
    tl = torch.full((b,), n, device=dev) if text_lengths is None else text_lengths.to(dev)
    ml = torch.full((b,), m, device=dev) if mel_lengths is None else mel_lengths.to(dev)
    if bool((ml < tl).any()):
        raise ValueError("monotonic alignment needs at least one frame per token")
    neg = torch.tensor(-1e30, dtype=torch.float64, device=dev)
    ll = log_lik.double()
    q = torch.full((b, n), float(neg), dtype=torch.float64, device=dev)
    q[:, 0] = ll[:, 0, 0]
    came_diag = torch.zeros(b, n, m, dtype=torch.bool, device=dev)
    j = torch.arange(n, device=dev)
    for i in range(1, m):
        stay = q
        move = torch.cat([torch.full((b, 1), float(neg), dtype=q.dtype, device=dev),
                          q[:, :-1]], 1)
        diag = move > stay
        best = torch.where(diag, move, stay)
        # token j can only be reached by frame i if j <= i; and must leave room for the rest
        valid = j[None] <= i
        q_new = torch.where(valid, best + ll[:, :, i], neg)
        came_diag[:, :, i] = diag
        active = (i < ml)[:, None]
        q = torch.where(active, q_new, q)
    # backtrack from (T_text - 1, T_mel - 1) of each sample
    dur = torch.zeros(b, n, dtype=torch.long, device=dev)
    cd = came_diag.cpu()
    for k in range(b):
        jj, mm = int(tl[k]) - 1, int(ml[k])
        d = dur[k]
        for i in range(mm - 1, -1, -1):
            d[jj] += 1
            if i > 0 and jj > 0 and (bool(cd[k, jj, i]) or jj > i - 1):
                jj -= 1
    return dur


def durations_from_path(path: Tensor) -> Tensor:
    """Durations ``(T_text,)`` of a hard alignment matrix ``(T_text, T_mel)`` of 0/1."""
    return path.long().sum(-1)


def length_regulate(h: Tensor, durations: Tensor, max_len: int | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Repeat token states ``h`` ``(B, T_text, C)`` by integer ``durations`` ``(B, T_text)``;
    returns ``(frames (B, T_frames, C), frame_mask (B, T_frames))`` with ``T_frames`` the
    longest total (or ``max_len``), zero-padded."""
    durations = durations.long().clamp_min(0)
    total = durations.sum(1)
    t_out = int(total.max()) if max_len is None else int(max_len)
    t_out = max(t_out, 1)
    b, n, _ = h.shape
    # frame f of sample k belongs to the token j with cum[j-1] <= f < cum[j]
    cum = torch.cumsum(durations, 1)
    frames = torch.arange(t_out, device=h.device)
    idx = torch.searchsorted(cum, frames[None].expand(b, -1).contiguous(), right=True)
    mask = frames[None] < total[:, None]
    idx = idx.clamp(max=n - 1)
    out = torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))
    return out * mask[..., None].to(out.dtype), mask


class GaussianAligner:
    """Per-symbol diagonal Gaussians over normalised log-mel frames, trained by Viterbi
    (hard-EM) rounds of :func:`monotonic_alignment_search` (module docstring).

    ``fit(token_ids, mels)`` with lists of ``(T_text,)`` int tensors and ``(T_mel, D)``
    frames; ``durations(token_ids, mels)`` aligns new utterances.
    """

    def __init__(self, vocab_size: int, min_var: float = 1e-2):
        self.vocab_size, self.min_var = int(vocab_size), float(min_var)
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def log_lik(self, ids: Tensor, mel: Tensor) -> Tensor:
        """``(T_text, T_mel)`` Gaussian log-likelihoods of the frames under each token."""
        if self.mean is None or self.var is None:
            raise RuntimeError("the aligner is not fitted yet")
        mu, var = self.mean[ids], self.var[ids]  # (N, D)
        prec = 1.0 / var
        x = mel.double()
        quad = (x * x) @ prec.T - 2.0 * x @ (mu * prec).T + (mu * mu * prec).sum(1)[None]
        return (-0.5 * (quad + torch.log(var).sum(1)[None])).T

    def _m_step(self, ids: Sequence[Tensor], mels: Sequence[Tensor],
                durs: Sequence[Tensor]) -> None:
        frame_tok = torch.cat([torch.repeat_interleave(t, d) for t, d in zip(ids, durs)])
        x = torch.cat(list(mels)).double()
        s1 = torch.zeros(self.vocab_size, x.shape[1], dtype=torch.float64)
        s1.index_add_(0, frame_tok, x)
        s2 = torch.zeros_like(s1).index_add_(0, frame_tok, x * x)
        cnt = torch.bincount(frame_tok, minlength=self.vocab_size).double()
        glob_mean = s1.sum(0) / cnt.sum()
        glob_var = (s2.sum(0) / cnt.sum() - glob_mean ** 2).clamp_min(self.min_var)
        c = cnt[:, None]
        # symbols with few frames are shrunk towards the global Gaussian
        w = c / (c + 5.0)
        mean = torch.where(c > 0, s1 / c.clamp_min(1.0), glob_mean)
        var = torch.where(c > 1, s2 / c.clamp_min(1.0) - mean ** 2, glob_var)
        self.mean = w * mean + (1 - w) * glob_mean
        self.var = (w * var + (1 - w) * glob_var).clamp_min(self.min_var)

    def durations(self, ids: Sequence[Tensor], mels: Sequence[Tensor]) -> list[Tensor]:
        """MAS durations of each utterance under the current Gaussians."""
        if self.mean is None:
            raise RuntimeError("fit the aligner first")
        return [monotonic_alignment_search(self.log_lik(tok, mel))[0]
                for tok, mel in zip(ids, mels)]

    def fit(self, ids: Sequence[Tensor], mels: Sequence[Tensor], rounds: int = 8
            ) -> list[Tensor]:
        """Flat start, then ``rounds`` of MAS + re-estimation; returns the final durations."""
        durs = []
        for tok, mel in zip(ids, mels):
            n, m = len(tok), mel.shape[0]
            if m < n:
                raise ValueError(f"an utterance has {m} frames for {n} tokens")
            edges = torch.linspace(0, m, n + 1).round().long()
            durs.append(edges[1:] - edges[:-1])
        for _ in range(rounds):
            self._m_step(ids, mels, durs)
            durs = self.durations(ids, mels)
        self._m_step(ids, mels, durs)
        return durs
