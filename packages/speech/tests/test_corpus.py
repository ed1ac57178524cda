"""Tests for the offline speech corpus: espeak-ng synthesis, noise spectra, SNR mixing,
simulated reverberation, and the corpus builder (layout, held-out sets, determinism,
atomicity, cache). Everything is generated from fixed seeds; nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate, welch

from polydiff.speech import corpus as C

SR = 16000
TINY = dict(n_train=6, n_valid=2, n_test=2, seconds=(1.0, 1.2), seed=3)


def _frames_db(x: np.ndarray, sr: int = SR, frame_s: float = 0.02) -> np.ndarray:
    n = int(frame_s * sr)
    e = np.square(x[: len(x) // n * n].astype(np.float64)).reshape(-1, n).mean(axis=1)
    return 10 * np.log10(e / e.max() + 1e-12)


def _slope_db_per_octave(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = welch(x, SR, nperseg=4096)
    m = (f >= lo) & (f <= hi)
    return float(np.polyfit(np.log2(f[m]), 10 * np.log10(p[m]), 1)[0])


def _median_f0(w: np.ndarray, sr: int = SR) -> float:
    """Autocorrelation pitch of the loud 40 ms frames (a crude but sufficient estimator)."""
    fl, out = int(0.04 * sr), []
    for i in range(0, len(w) - fl, fl // 2):
        x = w[i:i + fl] - w[i:i + fl].mean()
        if np.sqrt(np.mean(x ** 2)) < 0.05 * np.abs(w).max():
            continue
        ac = np.correlate(x, x, "full")[fl - 1:]
        lo, hi = sr // 400, sr // 60
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.3 * ac[0]:
            out.append(sr / k)
    return float(np.median(out))


# ----------------------------------------------------------------------------- espeak
def test_espeak_native_rate_and_speech_like_output() -> None:
    assert C.espeak_info()["sample_rate"] == 22050
    native = C.synthesize("One, two, three. Four, five, six.", "en")
    w = C.synthesize("One, two, three. Four, five, six.", "en", sample_rate=SR)
    assert w.dtype == np.float32 and abs(len(w) / len(native) - SR / 22050) < 1e-3
    assert 0.02 < np.sqrt(np.mean(w ** 2)) and np.abs(w).max() <= 1.0
    f, p = welch(w, SR, nperseg=1024)
    assert p[(f >= 100) & (f <= 4000)].sum() / p.sum() > 0.9  # speech band
    db = _frames_db(w)
    active = np.flatnonzero(db > -30)
    body = db[active[0]:active[-1] + 1]
    quiet = body < -35
    gaps = np.count_nonzero(np.diff(quiet.astype(int)) == 1)  # pauses inside the utterance
    assert gaps >= 2 and 2.0 < len(w) / SR < 6.0


def test_voices_differ_and_synthesis_is_repeatable() -> None:
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    female = C.synthesize(text, "en+f1", sample_rate=SR)
    male = C.synthesize(text, "en+m2", sample_rate=SR)
    assert _median_f0(female) > 1.5 * _median_f0(male)
    german = C.synthesize(text, "de", sample_rate=SR)
    assert len(german) != len(C.synthesize(text, "en", sample_rate=SR))
    junk = [np.random.default_rng(0).standard_normal(10 ** k) for k in range(2, 7)]  # heap noise
    np.testing.assert_array_equal(female, C.synthesize(text, "en+f1", sample_rate=SR))
    del junk
    high = C.synthesize(text, "en", pitch=90, sample_rate=SR)
    low = C.synthesize(text, "en", pitch=10, sample_rate=SR)
    assert _median_f0(high) > 1.2 * _median_f0(low)


def test_breathy_voices_are_refused_by_the_builder(tmp_path: Path) -> None:
    assert C.is_reproducible("en+f1") and C.is_reproducible("de")
    assert not C.is_reproducible("en+f3")
    assert all(C.is_reproducible(v) for v in C.DEFAULT_VOICES_TRAIN + C.DEFAULT_VOICES_TEST)
    with pytest.raises(C.EspeakError, match="breath noise"):
        C.build_corpus(tmp_path / "c", voices_test=("en+f3",), **TINY)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("voice", ["xx-nonexistent", "en+nosuchvariant", ""])
def test_unknown_voice_is_a_clear_error(voice: str) -> None:
    with pytest.raises(C.EspeakError, match="voice"):
        C.synthesize("hello", voice)


def test_sentences_are_many_distinct_and_seeded() -> None:
    assert len(set(C.SENTENCES)) == len(C.SENTENCES) >= 300
    assert C.make_sentences(50, seed=1) == C.make_sentences(50, seed=1)
    assert C.make_sentences(50, seed=1) != C.make_sentences(50, seed=2)
    assert any(s.endswith("?") for s in C.SENTENCES) and any("," in s for s in C.SENTENCES)


# ----------------------------------------------------------------------------- noise
@pytest.mark.parametrize(("kind", "slope"), [("white", 0.0), ("pink", -3.01), ("brown", -6.02)])
def test_coloured_noise_slopes(kind: str, slope: float) -> None:
    x = C.make_noise(kind, 10 * SR, np.random.default_rng(0), SR)
    assert abs(np.sqrt(np.mean(x ** 2)) - 1.0) < 1e-6
    assert abs(_slope_db_per_octave(x, 100, 4000) - slope) < 0.3


def test_babble_is_speech_shaped_and_steadier_than_one_talker() -> None:
    rng = np.random.default_rng(1)
    babble = C.make_noise("babble", 6 * SR, rng, SR)
    one = C.synthesize(" ".join(C.SENTENCES[:3]), "en", sample_rate=SR)[: 6 * SR]
    assert -9.0 < _slope_db_per_octave(babble, 500, 4000) < -2.0  # falls like speech
    f, p = welch(babble, SR, nperseg=1024)
    assert p[(f >= 100) & (f <= 4000)].sum() / p.sum() > 0.9
    # summing 3-8 talkers fills the pauses: frame energies spread far less than one talker's
    assert np.std(_frames_db(babble)) < 0.5 * np.std(_frames_db(one))


def test_non_stationary_noises() -> None:
    rng = np.random.default_rng(2)
    bursty = _frames_db(C.make_noise("bursty", 8 * SR, rng, SR))
    assert np.percentile(bursty, 90) - np.percentile(bursty, 10) > 20.0  # on/off
    hum = C.make_noise("hum", 8 * SR, rng, SR)
    f, p = welch(hum, SR, nperseg=8192)
    peak = f[np.argmax(p)]
    assert min(abs(peak - 50), abs(peak - 60)) < 2.0  # mains fundamental dominates
    with pytest.raises(ValueError, match="unknown noise type 'rain'"):
        C.make_noise("rain", 100, rng, SR)


# ----------------------------------------------------------------------------- mixing
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
@pytest.mark.parametrize("kind", ["white", "babble", "bursty"])
def test_mix_hits_requested_snr(snr: float, kind: str) -> None:
    rng = np.random.default_rng(4)
    clean = C.synthesize(C.SENTENCES[5], "en-us", sample_rate=SR).astype(np.float64) * 3.0
    noise = C.make_noise(kind, clean.size + 100, rng, SR)
    c, noisy = C.mix_at_snr(clean, noise, snr, SR)
    measured = 10 * np.log10(C.active_power(c, SR) / np.mean((noisy - c) ** 2))
    assert abs(measured - snr) < 0.1
    assert max(np.abs(noisy).max(), np.abs(c).max()) <= 0.99 + 1e-12
    ratio = c / np.where(clean == 0, np.nan, clean)  # one common scale for clean and noisy
    assert np.nanstd(ratio) < 1e-9


def test_active_power_ignores_silence() -> None:
    tone = np.sin(np.arange(SR) * 0.1)
    padded = np.concatenate([np.zeros(SR), tone, np.zeros(2 * SR)])
    assert abs(C.active_power(padded, SR) - 0.5) < 0.01  # vs mean power 0.125


# ----------------------------------------------------------------------------- reverberation
def _schroeder_rt60(h: np.ndarray, sr: int = SR) -> float:
    """RT60 from the Schroeder backward-integrated decay, fitted between -5 and -25 dB."""
    edc = np.cumsum(h[::-1] ** 2)[::-1]
    edc = 10 * np.log10(edc / edc[0] + 1e-30)
    i5, i25 = int(np.argmax(edc <= -5)), int(np.argmax(edc <= -25))
    slope = np.polyfit(np.arange(i5, i25) / sr, edc[i5:i25], 1)[0]
    return float(-60.0 / slope)


@pytest.mark.parametrize(("rt60", "max_order"), [(0.3, 17), (0.8, 17), (0.3, 60)])
def test_rir_rt60_matches_target(rt60: float, max_order: int) -> None:
    h, h_direct, info = C.simulate_rir(np.random.default_rng(5), rt60, SR, max_order=max_order)
    assert abs(_schroeder_rt60(h) / rt60 - 1.0) < 0.3
    assert abs(h_direct.sum() - 1.0) < 1e-9 and info["rt60"] == rt60
    if max_order == 60:  # Sabine's order is below 60 here: pure image sources, no tail
        assert info["tail_from_s"] is None and info["max_order"] < 60


def test_anechoic_target_is_aligned_with_the_direct_path() -> None:
    h, h_direct, _ = C.simulate_rir(np.random.default_rng(6), 0.6, SR)
    clean = C.synthesize(C.SENTENCES[7], "en", sample_rate=SR).astype(np.float64)
    dry, wet = C.reverberate(clean, h, h_direct)
    assert dry.shape == wet.shape == clean.shape
    for a, b in ((wet, dry), (dry, clean)):
        xc = correlate(a, b, mode="full", method="fft")
        assert int(np.argmax(xc)) - (len(b) - 1) == 0
    assert np.corrcoef(dry, clean)[0, 1] > 0.9  # the dry speech, delayed by under a sample
    assert np.sum(wet ** 2) > 1.2 * np.sum(dry ** 2)  # reflections add energy


# ----------------------------------------------------------------------------- building
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus") / "denoise"
    manifest = C.build_corpus(
        out, voices_train=("en", "en+f4", "de+m2"), voices_test=("en-us+f4",),
        noises_train=("white", "babble"), noises_test=("brown", "hum"), **TINY)
    return out, manifest


def test_build_corpus_layout_and_manifest(tiny: tuple[Path, dict]) -> None:
    out, manifest = tiny
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["input"] == "noisy" and manifest["target"] == "clean"
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        clean = sorted(p.name for p in (out / split / "clean").glob("*.wav"))
        noisy = sorted(p.name for p in (out / split / "noisy").glob("*.wav"))
        assert clean == noisy and len(clean) == n == len(manifest["splits"][split])
        for item in manifest["splits"][split]:
            c, sr_c = sf.read(out / item["clean"])
            y, sr_y = sf.read(out / item["noisy"])
            assert sr_c == sr_y == SR and c.shape == y.shape
            assert 1.0 <= len(c) / SR <= 1.2 and np.abs(y).max() <= 0.99 + 1e-4
            assert {"voice", "text", "noise", "snr_db", "seed"} <= item.keys()
            assert -5.0 <= item["snr_db"] <= 15.0
            assert np.abs(c).max() > 0.01
    train = manifest["splits"]["train"] + manifest["splits"]["valid"]
    test = manifest["splits"]["test"]
    assert {i["voice"] for i in test} <= {"en-us+f4"}
    assert not {i["voice"] for i in train} & {i["voice"] for i in test}
    assert {i["noise"] for i in train} <= {"white", "babble"}
    assert {i["noise"] for i in test} <= {"brown", "hum"}
    assert not list(out.parent.glob("*.tmp-*"))
    clean, noisy, meta = C.make_item(C.CorpusSpec(**manifest["spec"]), "test", 1)
    assert meta == {k: v for k, v in test[1].items() if k not in ("id", "clean", "noisy")}
    np.testing.assert_allclose(sf.read(out / test[1]["noisy"])[0], noisy, atol=1.0 / 32767)


def test_build_corpus_is_byte_identical_for_a_seed(tiny: tuple[Path, dict],
                                                   tmp_path: Path) -> None:
    out, manifest = tiny
    again = C.build_corpus(tmp_path / "again", C.CorpusSpec(**manifest["spec"]))
    assert again == manifest and _files(out) == _files(tmp_path / "again")
    other = C.build_corpus(tmp_path / "other", C.CorpusSpec(**{**manifest["spec"], "seed": 4}),
                           n_valid=0, n_test=0)
    assert other["splits"]["train"][0]["seed"] != manifest["splits"]["train"][0]["seed"]


def test_build_is_identical_in_a_fresh_process(tmp_path: Path) -> None:
    """Another interpreter (other memory layout, other history) writes the same bytes."""
    kwargs = dict(TINY, n_train=2, n_valid=0, n_test=1, noises_train=("babble",))
    code = ("import sys; from polydiff.speech import corpus as C; "
            f"C.build_corpus(sys.argv[1], **{kwargs!r})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    C.build_corpus(tmp_path / "b", **kwargs)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_dereverb_corpus(tmp_path: Path) -> None:
    manifest = C.build_corpus(tmp_path / "rev", task="dereverb", rt60=(0.4, 0.9), **TINY)
    assert (manifest["target"], manifest["input"]) == ("anechoic", "reverb")
    for item in manifest["splits"]["train"]:
        dry, _ = sf.read(tmp_path / "rev" / item["anechoic"])
        wet, _ = sf.read(tmp_path / "rev" / item["reverb"])
        assert 0.4 <= item["rt60"] <= 0.9 and len(item["room"]) == 3
        assert np.sum(wet ** 2) > np.sum(dry ** 2) > 0
    assert {i["voice"] for i in manifest["splits"]["test"]} <= set(C.DEFAULT_VOICES_TEST)


def test_crash_leaves_no_corpus_and_existing_is_kept(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = C.make_item, []

    def flaky(spec: C.CorpusSpec, split: str, index: int):  # noqa: ANN202
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(spec, split, index)

    monkeypatch.setattr(C, "make_item", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        C.build_corpus(tmp_path / "c", **TINY)
    assert list(tmp_path.iterdir()) == []  # neither the corpus nor its temporary folder
    (tmp_path / "c").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        C.build_corpus(tmp_path / "c", **TINY)
    assert not C.is_complete(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a complete corpus"):
        C.read_manifest(tmp_path / "c")


def test_cached_corpus_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = dict(TINY, n_train=2, n_valid=0, n_test=1, noises_train=("pink",))
    path = C.cached_corpus(cache_dir=tmp_path, **small)
    assert C.is_complete(path) and path.parent == tmp_path and path.name.startswith("denoise-")

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("rebuilt a cached corpus")

    monkeypatch.setattr(C, "build_corpus", boom)
    assert C.cached_corpus(cache_dir=tmp_path, **small) == path
    with pytest.raises(AssertionError, match="rebuilt"):  # another seed is another corpus
        C.cached_corpus(cache_dir=tmp_path, **dict(small, seed=9))
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "pc"))
    assert C.cache_root() == tmp_path / "pc" / "speech"
    monkeypatch.delenv("POLYDIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_root() == tmp_path / "xdg" / "polydiff" / "speech"


def test_spec_validation() -> None:
    spec = C.CorpusSpec(snr_db=[0, 5, 10])
    assert spec.snr_values == (0.0, 5.0, 10.0) and spec.snr_db == (0.0, 10.0)
    assert C.CorpusSpec(**json.loads(json.dumps(spec.to_dict()))) == spec
    assert C.CorpusSpec(snr_db=[2, 8]).snr_values is None
    assert C.CorpusSpec(seed=1).key() != C.CorpusSpec(seed=2).key()
    assert C.CorpusSpec(seed=1).key() == C.CorpusSpec(seed=1).key()
    with pytest.raises(ValueError, match="unknown noise type 'rain'"):
        C.CorpusSpec(noises_test=("rain",))
    with pytest.raises(ValueError, match="task must be"):
        C.CorpusSpec(task="separate")
    with pytest.raises(ValueError, match="seconds must be"):
        C.CorpusSpec(seconds=(3.0, 2.0))
    with pytest.raises(TypeError):
        C.build_corpus("/nonexistent/never", n_trian=3)
