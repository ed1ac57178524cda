"""Corpora for ProDiff: (text, speech) utterances, their features, durations and batches.

Sources (each gives :class:`Utterance` records: name, text, tokens, wave at the mel rate):

* :func:`realspeech_utterances`: the transcribed real prompts of one professional speaker
  (:mod:`polydiff.speech.realspeech`, 8 kHz; default ``es_MX_f_Allison`` read with the
  ``es-419`` espeak-ng voice): the default training corpus;
* :func:`ljspeech_utterances`: a folder in the LJSpeech layout (``metadata.csv`` with
  ``id|text|normalized text`` lines, ``wavs/<id>.wav``), read at the model's rate;
* :func:`formant_utterances`: espeak-ng reading generated English sentences, with the
  synthesiser's own phoneme timings (:func:`polydiff.speech.espeak.synthesize_with_events`),
  which :func:`alignment_check` uses to judge the aligner.

:func:`build_corpus` featurizes utterances (normalised log-mel, YIN F0, energy), aligns them
with :class:`~polydiff.speech.prodiff.align.GaussianAligner` (monotonic alignment search;
or takes given durations) and averages F0 and energy per token (FastPitch-style targets).
:class:`PaddedBatches` serves padded batches to the engine's Trainer at global sample
positions (so training resumes exactly). :func:`split_names` holds out prompts by a hash of
their names (stable, independent of the order and number of prompts).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.speech.prodiff.features import DEFAULT_MEL, MelConfig, energy, log_mel, yin_f0
from polydiff.speech.prodiff.text import SPECIALS, TextFrontEnd, Token

__all__ = ["DEFAULT_SPEAKER", "Corpus", "PaddedBatches", "PhonemeVocab", "Utterance",
           "alignment_check", "build_corpus", "formant_utterances", "ljspeech_utterances",
           "realspeech_utterances", "split_names"]

#: The default real voice and its espeak-ng voice.
DEFAULT_SPEAKER = ("es_MX_f_Allison", "es-419")


@dataclass
class Utterance:
    """One (text, speech) pair; ``durations`` (frames per token) when known in advance."""

    name: str
    text: str
    tokens: list[Token]
    wave: np.ndarray
    sample_rate: int
    durations: list[int] | None = None


class PhonemeVocab:
    """Token symbols -> ids; :data:`~polydiff.speech.prodiff.text.SPECIALS` come first.
    Unseen phonemes map to the nearest known one (length marks and diacritics dropped,
    then the first letter), else ``<unk>``."""

    def __init__(self, symbols: Sequence[str]):
        symbols = tuple(symbols)
        if symbols[:len(SPECIALS)] != SPECIALS:
            raise ValueError("a vocabulary starts with the special symbols")
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def from_tokens(cls, sentences: Iterable[Sequence[Token]]) -> PhonemeVocab:
        seen = sorted({t.symbol for toks in sentences for t in toks} - set(SPECIALS))
        return cls(SPECIALS + tuple(seen))

    def __len__(self) -> int:
        return len(self.symbols)

    def lookup(self, symbol: str) -> int:
        if symbol in self.index:
            return self.index[symbol]
        import unicodedata

        base = "".join(c for c in unicodedata.normalize("NFD", symbol)
                       if unicodedata.category(c) != "Mn" and c not in "ːˑ")
        for cand in (base, base[:1], symbol[:1]):
            if cand in self.index:
                return self.index[cand]
        return self.index["<unk>"]

    def encode(self, tokens: Sequence[Token]) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids, stress, word_start)`` int64 tensors of one sentence."""
        return (torch.tensor([self.lookup(t.symbol) for t in tokens], dtype=torch.long),
                torch.tensor([t.stress for t in tokens], dtype=torch.long),
                torch.tensor([int(t.word_start) for t in tokens], dtype=torch.long))

    def unknown(self, tokens: Sequence[Token]) -> list[str]:
        """Symbols of ``tokens`` not in the vocabulary (they are mapped, not dropped)."""
        return sorted({t.symbol for t in tokens if t.symbol not in self.index})


def split_names(names: Sequence[str], n_valid: int, n_test: int, seed: int = 0
                ) -> dict[str, list[str]]:
    """``{"train", "valid", "test"}`` name lists: names ordered by a hash of ``(seed, name)``;
    the first ``n_test`` are test, the next ``n_valid`` validation."""
    order = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    return {"test": sorted(order[:n_test]), "valid": sorted(order[n_test:n_test + n_valid]),
            "train": sorted(order[n_test + n_valid:])}


# ----------------------------------------------------------------------------- sources
def _join(sentences: list[tuple[str, list[Token]]]) -> list[Token]:
    out: list[Token] = []
    for _, toks in sentences:
        out.extend(toks if not out else toks[1:])
    return out


def realspeech_utterances(speaker: str = DEFAULT_SPEAKER[0], language: str | None = None, *,
                          max_seconds: float = 8.0, min_seconds: float = 0.3,
                          root: str | os.PathLike[str] | None = None) -> list[Utterance]:
    """The transcribed prompts of ``speaker`` (``language``: the espeak-ng voice, default
    from the speaker's language; ``es`` speakers read ``es-419``) shorter than
    ``max_seconds``; fetched once into the cache."""
    from polydiff.speech.realspeech import SPEAKERS, load_prompt, prompts

    if speaker not in SPEAKERS:
        raise ValueError(f"unknown speaker {speaker!r} (choose from {', '.join(SPEAKERS)})")
    lang = language or {"es": "es-419"}.get(SPEAKERS[speaker][2], SPEAKERS[speaker][2])
    fe = TextFrontEnd(lang)
    out = []
    for p in prompts([speaker], with_text=True, root=root):
        if "[" in (p.text or ""):  # "[ascending tones]": a non-speech prompt
            continue
        wave, sr = load_prompt(p)
        if not min_seconds <= len(wave) / sr <= max_seconds:
            continue
        try:
            toks = _join(fe.sentences(p.text or ""))
        except ValueError:
            continue
        out.append(Utterance(p.name, p.text or "", toks, wave, sr))
    return out


def ljspeech_utterances(root: str | os.PathLike[str], language: str = "en-us", *,
                        sample_rate: int | None = None, limit: int | None = None,
                        max_seconds: float = 12.0) -> list[Utterance]:
    """Utterances of a folder in the LJSpeech layout (module docstring); the normalised
    text column is used when present. ``sample_rate``: resample to it (default: keep)."""
    from polydiff.speech.audio import read_audio

    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: no metadata.csv (expected the LJSpeech layout: "
                                "metadata.csv and wavs/)")
    fe = TextFrontEnd(language)
    out = []
    with meta.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row or not row[0].strip():
                continue
            name = row[0].strip()
            text = (row[2] if len(row) > 2 and row[2].strip() else row[1]).strip() \
                if len(row) > 1 else ""
            wav = root / "wavs" / f"{name}.wav"
            if not wav.is_file():
                raise FileNotFoundError(f"{wav}: listed in metadata.csv but missing")
            wave, sr = read_audio(wav, sample_rate=sample_rate)
            if len(wave) / sr > max_seconds:
                continue
            out.append(Utterance(name, text, _join(fe.sentences(text)), wave, sr))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ValueError(f"{meta}: no usable utterances")
    return out


def formant_utterances(n: int = 64, voice: str = "en-us", *, seed: int = 0,
                       cfg: MelConfig = DEFAULT_MEL) -> list[Utterance]:
    """espeak-ng reading ``n`` generated sentences, resampled to ``cfg.sample_rate``, with
    tokens and durations from the synthesiser's phoneme events (pauses become ``,``; the
    leading and trailing silences ``^`` and ``.``). Formant speech, not natural speech."""
    from polydiff.speech.audio import resample
    from polydiff.speech.corpus import make_sentences
    from polydiff.speech.espeak import synthesize_with_events

    out = []
    fps = cfg.frames_per_second
    for k, text in enumerate(make_sentences(n, seed)):
        wave, sr, events = synthesize_with_events(text, voice)
        wave = resample(wave, sr, cfg.sample_rate)
        total_ms = 1000.0 * len(wave) / cfg.sample_rate
        toks: list[Token] = [Token("^")]
        starts: list[float] = [0.0]
        for name, ms in events:
            sym = name.lstrip("ˈˌ").replace("ˈ", "").replace("ˌ", "")
            stress = 2 if name.startswith("ˈ") else 1 if name.startswith("ˌ") else 0
            if not sym:
                sym = ","
            if sym == "," and toks[-1].symbol in (",", "^"):
                continue
            if ms <= starts[-1] and toks[-1].symbol == "^":
                toks[-1], starts[-1] = Token(sym, stress), float(ms)
                continue
            toks.append(Token(sym, stress))
            starts.append(float(ms))
        if toks[-1].symbol == ",":
            toks[-1] = Token(".")
        else:
            toks.append(Token("."))
            starts.append(min(starts[-1] + 10.0, total_ms))
        n_frames = cfg.num_frames(len(wave))
        edges = [int(round(s / 1000.0 * fps)) for s in starts] + [n_frames]
        for i in range(1, len(edges)):  # at least one frame per token, monotonic
            edges[i] = max(edges[i], edges[i - 1] + 1)
        over = edges[-1] - n_frames
        if over > 0:  # squeeze the excess out of the last tokens
            for i in range(len(edges) - 1, 0, -1):
                edges[i] = min(edges[i], n_frames - (len(edges) - 1 - i))
        durs = [edges[i + 1] - edges[i] for i in range(len(toks))]
        if min(durs) < 1:
            continue
        out.append(Utterance(f"formant-{k:04d}", text, toks, wave.astype(np.float32),
                             cfg.sample_rate, durs))
    return out


# ----------------------------------------------------------------------------- features
@dataclass
class Corpus:
    """Featurized, aligned utterances: per item ``ids``, ``stress``, ``word_start``
    ``(N,)``, ``mel`` ``(T, n_mels)`` (natural-log mel, *not* normalised), ``durations``
    ``(N,)``, ``pitch`` and ``energy`` ``(N,)`` (normalised per token), ``f0`` ``(T,)``,
    ``wave`` (at the mel's sample rate);
    ``names``, the vocabulary and the statistics."""

    items: list[dict[str, Tensor]]
    names: list[str]
    symbols: tuple[str, ...]
    mel_mean: list[float]
    mel_std: list[float]
    pitch_stats: tuple[float, float]
    energy_stats: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict)

    def subset(self, names: Iterable[str]) -> Corpus:
        keep = set(names)
        idx = [i for i, n in enumerate(self.names) if n in keep]
        return Corpus([self.items[i] for i in idx], [self.names[i] for i in idx], self.symbols,
                      self.mel_mean, self.mel_std, self.pitch_stats, self.energy_stats,
                      dict(self.info))

    def save(self, path: str | os.PathLike[str], *, compact: bool = False) -> None:
        """Write the corpus (``torch.save``, read back with ``weights_only``). ``compact``
        stores each wave as 16-bit FLAC bytes and drops the mel (recomputed by :meth:`load`
        from ``info["mel"]``): about a third of the size, for carrying a corpus elsewhere."""
        from polydiff.core.utils import atomic_path

        items = self.items
        if compact:
            items = [_compact(it) for it in self.items]
        blob = {"items": items, "names": self.names, "symbols": list(self.symbols),
                "mel_mean": self.mel_mean, "mel_std": self.mel_std,
                "pitch_stats": list(self.pitch_stats),
                "energy_stats": list(self.energy_stats), "info": self.info}
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Corpus:
        b = torch.load(path, weights_only=True)
        cfg = MelConfig(**b["info"].get("mel", {}))
        items = [_expand(it, cfg) if "wave_flac" in it else it for it in b["items"]]
        return cls(items, b["names"], tuple(b["symbols"]), b["mel_mean"], b["mel_std"],
                   tuple(b["pitch_stats"]), tuple(b["energy_stats"]), b["info"])


def _compact(item: dict[str, Tensor]) -> dict[str, Tensor]:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, item["wave"].numpy(), 8000, format="FLAC", subtype="PCM_16")
    out = {k: v for k, v in item.items() if k not in ("wave", "mel")}
    out["wave_flac"] = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    out["frames"] = torch.tensor(item["mel"].shape[0])
    return out


def _expand(item: dict[str, Tensor], cfg: MelConfig) -> dict[str, Tensor]:
    import io

    import soundfile as sf

    wave, _ = sf.read(io.BytesIO(item["wave_flac"].numpy().tobytes()), dtype="float32")
    out = {k: v for k, v in item.items() if k not in ("wave_flac", "frames")}
    out["wave"] = torch.from_numpy(wave)
    out["mel"] = log_mel(wave, cfg)[: int(item["frames"])]
    return out


def _token_means(values: Tensor, durations: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over each token's frames where ``valid`` (0 where none)."""
    tok = torch.repeat_interleave(torch.arange(len(durations)), durations)
    s = torch.zeros(len(durations)).index_add_(0, tok, (values * valid).float())
    c = torch.zeros(len(durations)).index_add_(0, tok, valid.float())
    return torch.where(c > 0, s / c.clamp_min(1.0), torch.zeros_like(s))


def build_corpus(utterances: Sequence[Utterance], cfg: MelConfig = DEFAULT_MEL, *,
                 vocab: PhonemeVocab | None = None, align_rounds: int = 8,
                 stats_from: Sequence[str] | None = None) -> Corpus:
    """Featurize and align (module docstring). Durations come from the utterances when all
    have them, else from :class:`~polydiff.speech.prodiff.align.GaussianAligner` (fitted on
    every utterance given: alignment uses no held-out labels). ``stats_from``: names whose
    frames define the normalisation statistics (default: all)."""

    if not utterances:
        raise ValueError("no utterances to build a corpus from")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend
    try:
        return _build(utterances, cfg, vocab, align_rounds, stats_from)
    finally:
        torch.set_num_threads(threads)


def _build(utterances: Sequence[Utterance], cfg: MelConfig, vocab: PhonemeVocab | None,
           align_rounds: int, stats_from: Sequence[str] | None) -> Corpus:
    from polydiff.speech.audio import resample
    from polydiff.speech.prodiff.align import GaussianAligner

    vocab = vocab or PhonemeVocab.from_tokens(u.tokens for u in utterances)
    raw = []
    for u in utterances:
        samples = u.wave if u.sample_rate == cfg.sample_rate else \
            resample(u.wave, u.sample_rate, cfg.sample_rate)
        ids, stress, word = vocab.encode(u.tokens)
        lm = log_mel(samples, cfg)
        if lm.shape[0] < len(ids):
            continue
        raw.append((u, ids, stress, word, lm, yin_f0(samples, cfg), energy(samples, cfg),
                    torch.as_tensor(np.asarray(samples, dtype=np.float32))))
    if not raw:
        raise ValueError("every utterance is shorter than its token count in frames")
    names = [r[0].name for r in raw]
    keep = set(stats_from) if stats_from is not None else set(names)
    frames = torch.cat([r[4] for r in raw if r[0].name in keep])
    mel_mean, mel_std = frames.mean(0), frames.std(0).clamp_min(1e-3)
    if all(r[0].durations is not None for r in raw):
        durs = [torch.tensor(r[0].durations, dtype=torch.long) for r in raw]
        info: dict[str, Any] = {"durations": "given"}
    else:
        aligner = GaussianAligner(len(vocab))
        durs = aligner.fit([r[1] for r in raw], [(r[4] - mel_mean) / mel_std for r in raw],
                           rounds=align_rounds)
        info = {"durations": f"mas ({align_rounds} hard-EM rounds)"}
    logf0 = [torch.where(r[5] > 0, torch.log(r[5].clamp_min(1.0)), torch.zeros_like(r[5]))
             for r in raw]
    voiced = torch.cat([lf[r[5] > 0] for lf, r in zip(logf0, raw) if r[0].name in keep])
    p_stats = (float(voiced.mean()), float(voiced.std().clamp_min(1e-3))) if voiced.numel() \
        else (0.0, 1.0)
    en = torch.cat([r[6] for r in raw if r[0].name in keep])
    e_stats = (float(en.mean()), float(en.std().clamp_min(1e-3)))
    items: list[dict[str, Tensor]] = []
    for (_, ids, stress, word, lm, f0, en_f, wave), lf, d in zip(raw, logf0, durs):
        p = _token_means((lf - p_stats[0]) / p_stats[1], d, f0 > 0)
        e = _token_means((en_f - e_stats[0]) / e_stats[1], d, torch.ones_like(en_f))
        items.append({"ids": ids, "stress": stress, "word_start": word, "mel": lm,
                      "durations": d, "pitch": p, "energy": e, "f0": f0, "wave": wave})
    info["mel"] = dataclasses.asdict(cfg)
    return Corpus(items, names, vocab.symbols, mel_mean.tolist(), mel_std.tolist(), p_stats,
                  e_stats, info)


def alignment_check(corpus: Corpus, reference: Sequence[Sequence[int]],
                    cfg: MelConfig = DEFAULT_MEL) -> dict[str, float]:
    """Token boundaries of ``corpus`` (from MAS) against ``reference`` durations (espeak-ng's
    phoneme events): mean absolute boundary error in ms, and the fraction of boundaries within
    20 ms and within 50 ms."""
    errs = []
    for item, ref in zip(corpus.items, reference):
        a = np.cumsum(item["durations"].numpy())[:-1]
        b = np.cumsum(np.asarray(ref))[:-1]
        errs.append(np.abs(a - b) * 1000.0 / cfg.frames_per_second)
    e = np.concatenate(errs)
    return {"boundaries": int(e.size), "mean_abs_ms": float(e.mean()),
            "within_20ms": float((e <= 20.0).mean()), "within_50ms": float((e <= 50.0).mean())}


# ----------------------------------------------------------------------------- batches
def collate(items: Sequence[dict[str, Tensor]], max_frames: int | None = None,
            generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Pad items into a batch: token fields ``(B, N)``, ``mask``; ``mel`` ``(B, n_mels, T)``
    and ``frame_mask`` ``(B, T)``."""
    b = len(items)
    n = max(len(it["ids"]) for it in items)
    t = max(int(it["durations"].sum()) for it in items)
    out = {k: torch.zeros(b, n, dtype=items[0][k].dtype)
           for k in ("ids", "stress", "word_start", "durations", "pitch", "energy")}
    mask = torch.zeros(b, n, dtype=torch.bool)
    mel = torch.zeros(b, items[0]["mel"].shape[1], t)
    fmask = torch.zeros(b, t, dtype=torch.bool)
    for i, it in enumerate(items):
        k = len(it["ids"])
        for key in out:
            out[key][i, :k] = it[key]
        mask[i, :k] = True
        m = it["mel"][: int(it["durations"].sum())]
        mel[i, :, : m.shape[0]] = m.T
        fmask[i, : m.shape[0]] = True
    out.update(mask=mask, mel=mel, frame_mask=fmask)
    return out


class PadMel:
    """Normalise the log-mel of batches (``(B, n_mels, T)``) with corpus statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean)[None, :, None]
        self.std = torch.tensor(std)[None, :, None]

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        batch["mel"] = (batch["mel"] - self.mean) / self.std * batch["frame_mask"][:, None]
        return batch


class PaddedBatches:
    """A Trainer data source: the corpus items at global sample positions (one seeded
    permutation per epoch, :class:`~polydiff.core.training.IndexedData`), padded and
    normalised."""

    def __init__(self, corpus: Corpus, *, seed: int = 0, shuffle: bool = True):
        from polydiff.core.training import IndexedData

        self.corpus = corpus
        self._index = IndexedData(torch.arange(len(corpus.items)), seed=seed, shuffle=shuffle)
        self._norm = PadMel(corpus.mel_mean, corpus.mel_std)

    def get(self, positions: Tensor, generator: torch.Generator | None = None
            ) -> dict[str, Tensor]:
        idx = self._index.get(positions).tolist()
        return self._norm(collate([self.corpus.items[i] for i in idx]))

    def state_dict(self) -> dict[str, Any]:
        return self._index.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._index.load_state_dict(state)


def corpus_seconds(corpus: Corpus, cfg: MelConfig = DEFAULT_MEL) -> float:
    """Total speech in the corpus, in seconds."""
    return sum(int(it["durations"].sum()) for it in corpus.items) / cfg.frames_per_second


def frames_to_seconds(frames: float, cfg: MelConfig = DEFAULT_MEL) -> float:
    return frames / cfg.frames_per_second if math.isfinite(frames) else frames
