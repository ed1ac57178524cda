"""polydiff.speech.realcorpus on fake Debian packages (synthetic 'prompts'; no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydiff.speech import realcorpus as rc
from polydiff.speech.corpus import active_power
from polydiff.speech.realspeech import SPEAKERS, load_prompt

SR = 8000


def _prompt(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A voiced 'utterance' (harmonics of a gliding f0 under syllable envelopes) with 0.2 s
    of silence before and after."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    pad = np.zeros(int(0.2 * SR))
    return np.concatenate([pad, 0.3 * x / np.abs(x).max(), pad])


def _fake_packages(root: Path, speakers: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for speaker, count in speakers.items():
        audio_pkg, text_pkg, _ = SPEAKERS[speaker]
        folder = root / audio_pkg / "usr/share/asterisk/sounds" / speaker
        folder.mkdir(parents=True)
        for i in range(count):
            x = _prompt(rng, rng.uniform(0.6, 1.4))
            if speaker in ("fr_FR_f_Armelle", "es_CO_f_July"):
                sf.write(folder / f"p{i:02d}.gsm", x, SR, format="RAW", subtype="GSM610")
            else:
                sf.write(folder / f"p{i:02d}.wav", x, SR, subtype="PCM_16")
        (folder / "silence").mkdir()
        sf.write(folder / "silence" / "1.wav", np.zeros(800), SR, subtype="PCM_16")
        (root / audio_pkg / ".complete").write_text("x\n")
        if text_pkg:
            (root / text_pkg).mkdir(exist_ok=True)
            (root / text_pkg / ".complete").write_text("x\n")


SOURCES = rc.SourcesSpec(train_speakers=("es_MX_f_Allison", "it_IT_m_Carlo"),
                         valid_speakers=("fr_CA_f_June",), test_speakers=("ru_RU_f_IvrvoiceRU",),
                         babble_speakers=("fr_FR_f_Armelle",), train_seconds=None,
                         heldout_seconds=None, babble_seconds=3.0, n_rirs=2,
                         rt60=(0.2, 0.3))
SPEC = rc.RealCorpusSpec(sources=SOURCES, n_valid=2, n_test=3, seconds=(1.0, 1.5))


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("debian")
    _fake_packages(root, {"es_MX_f_Allison": 8, "it_IT_m_Carlo": 8, "fr_CA_f_June": 10,
                          "ru_RU_f_IvrvoiceRU": 12, "fr_FR_f_Armelle": 6})
    return root


@pytest.fixture(scope="module")
def corpus(packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "corpus"
    rc.build_real_corpus(out, SPEC, root=packages, show_progress=False)
    return out


def test_trim_silence() -> None:
    x = np.concatenate([np.zeros(800), 0.5 * np.ones(1600), 1e-4 * np.ones(800)])
    y = rc.trim_silence(x, SR, margin_s=0.0)
    assert y.size == 1600 and np.all(y == 0.5)
    assert rc.trim_silence(x, SR, margin_s=0.05).size == 1600 + 2 * 400
    assert rc.trim_silence(np.zeros(100), SR).size == 0


def test_gsm_prompts_decode(packages: Path) -> None:
    f = next((packages / "asterisk-prompt-fr-armelle").rglob("*.gsm"))
    x, sr = load_prompt(f)
    assert sr == 8000 and x.dtype == np.float32 and 0.1 < np.abs(x).max() <= 1.0


def test_specs_refuse_overlaps_and_unknowns() -> None:
    with pytest.raises(ValueError, match="two roles"):
        rc.SourcesSpec(train_speakers=("fr_CA_f_June",), valid_speakers=("fr_CA_f_June",))
    with pytest.raises(ValueError, match="unknown speaker"):
        rc.SourcesSpec(test_speakers=("en_US_f_Allison",))
    with pytest.raises(ValueError, match="sample_rate"):
        rc.RealCorpusSpec(sample_rate=22050)
    with pytest.raises(ValueError, match="unknown noise"):
        rc.RealCorpusSpec(noises=("white", "jet"))


def test_corpus_layout_splits_and_snrs(corpus: Path) -> None:
    m = rc.read_real_manifest(corpus)
    assert rc.is_real_corpus(corpus) and m["sample_rate"] == SR and m["task"] == "denoise"
    roles = {s: v["role"] for s, v in m["speakers"].items()}
    assert roles == {"es_MX_f_Allison": "train", "it_IT_m_Carlo": "train",
                     "fr_CA_f_June": "valid", "ru_RU_f_IvrvoiceRU": "test",
                     "fr_FR_f_Armelle": "babble"}
    assert m["splits"]["train"] == []
    test = m["splits"]["test"]
    assert len(test) == 3 * 3 and len(m["splits"]["valid"]) == 2 * 3
    assert {r["speaker"] for r in test} == {"ru_RU_f_IvrvoiceRU"}
    assert sorted({r["snr_db"] for r in test}) == [0.0, 5.0, 10.0]
    for r in test:
        clean, sr = sf.read(corpus / r["clean"])
        noisy, _ = sf.read(corpus / r["noisy"])
        assert sr == SR and clean.shape == noisy.shape and np.abs(noisy).max() <= 1.0
        measured = 10 * math.log10(active_power(clean, SR)
                                   / np.mean((noisy - clean) ** 2))
        assert abs(measured - r["snr_db"]) < 0.2, (r["id"], measured)  # 16-bit rounding
    # the same clean utterance at every SNR; file names carry the SNR
    by_index = {}
    for r in test:
        by_index.setdefault(r["id"][-4:], []).append(r)
    for rows in by_index.values():
        cleans = [sf.read(corpus / r["clean"])[0] for r in rows]
        peaks = [np.abs(c).max() for c in cleans]
        assert all(np.allclose(c / p, cleans[0] / peaks[0], atol=2e-4) for c, p in
                   zip(cleans, peaks, strict=True))
        assert {r["id"][:5] for r in rows} == {"snr00", "snr05", "snr10"}


def test_heldout_targets_and_babble_are_disjoint(corpus: Path) -> None:
    src = rc.Sources(corpus / "sources")
    m = rc.read_real_manifest(corpus)
    used = {p for r in m["splits"]["test"] for p in r["prompts"]}
    names = [n for n, _ in src.prompts("ru_RU_f_IvrvoiceRU")]
    cut = int(0.6 * len(names))
    assert used <= set(names[:cut])  # babble comes from the remaining 40%
    assert all(not n.startswith("silence/") for n in names)
    # trimmed: no prompt keeps its 0.2 s of leading silence
    for _, x in src.prompts("es_MX_f_Allison"):
        assert np.abs(x[: int(0.1 * SR)]).max() > 0.01


def test_corpus_is_deterministic_and_reuses_sources(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    rc.build_real_corpus(again, SPEC, sources=corpus / "sources", show_progress=False)
    a = json.loads((corpus / "manifest.json").read_text())
    b = json.loads((again / "manifest.json").read_text())
    assert a["splits"] == b["splits"]
    for r in a["splits"]["test"]:
        assert (corpus / r["noisy"]).read_bytes() == (again / r["noisy"]).read_bytes()
    with pytest.raises(ValueError, match="another SourcesSpec"):
        rc.build_real_corpus(tmp_path / "x", rc.RealCorpusSpec(), sources=corpus / "sources")
    with pytest.raises(FileExistsError):
        rc.build_real_corpus(again, SPEC, sources=corpus / "sources")
    # 16 kHz from the same sources: speech resampled, noise full band
    wide = rc.build_real_corpus(tmp_path / "w16", SPEC, sources=corpus / "sources",
                                sample_rate=16000, show_progress=False)
    x, sr = sf.read(tmp_path / "w16" / wide["splits"]["test"][0]["noisy"])
    assert sr == 16000


def test_noise_types_have_unit_rms() -> None:
    rng = np.random.default_rng(0)
    pool = np.concatenate([_prompt(rng, 1.0) for _ in range(4)])
    for kind in rc.NOISE_TYPES:
        x = rc.make_real_noise(kind, 4000, np.random.default_rng(1), SR, pool)
        assert x.shape == (4000,) and abs(np.sqrt(np.mean(x ** 2)) - 1) < 1e-9, kind
        again = rc.make_real_noise(kind, 4000, np.random.default_rng(1), SR, pool)
        assert np.array_equal(x, again)
    with pytest.raises(ValueError, match="pool"):
        rc.make_real_noise("babble", 4000, rng, SR, None)
    with pytest.raises(ValueError, match="unknown noise type"):
        rc.make_real_noise("jet", 4000, rng, SR)


def test_mixing_source(corpus: Path) -> None:
    import torch

    src = rc.MixingSource(corpus, segment_length=4000, bank_seconds=2.0)
    assert src.speakers == ["es_MX_f_Allison", "it_IT_m_Carlo"] and len(src) >= 1
    g = torch.Generator().manual_seed(3)
    clean, noisy = src.sample(range(16), g)
    assert clean.shape == noisy.shape == (16, 4000) and clean.dtype == torch.float32
    assert torch.allclose(noisy.abs().amax(1), torch.ones(16))  # noisy-peak normalised
    again = src.sample(range(16), torch.Generator().manual_seed(3))
    assert torch.equal(clean, again[0]) and torch.equal(noisy, again[1])
    # SNRs within the training range (active-speech power over noise power)
    dry = rc.MixingSource(corpus, segment_length=4000, bank_seconds=2.0, reverb_prob=0.0,
                          snr_db=(5.0, 5.0))
    c, y = dry.sample(range(8), torch.Generator().manual_seed(0))
    for ci, yi in zip(c.numpy(), y.numpy(), strict=True):
        snr = 10 * math.log10(active_power(ci, SR) / np.mean((yi - ci) ** 2))
        assert abs(snr - 5.0) < 0.5
    wet = rc.MixingSource(corpus, segment_length=4000, bank_seconds=2.0, reverb_prob=1.0)
    c2, _ = wet.sample(range(4), torch.Generator().manual_seed(0))
    assert not torch.allclose(c2, c[:4])
