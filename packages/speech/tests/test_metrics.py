"""Metrics: SI-SDR closed form and invariances, PESQ/ESTOI extremes and monotonicity,
NaN-with-reason handling, folder evaluation and atomic reports."""

import json
import math

import numpy as np
import pytest
import soundfile as sf

from polydiff.speech.audio import AudioError, resample
from polydiff.speech.metrics import (
    estoi,
    evaluate_folder,
    evaluate_pair,
    pesq,
    pesq_wb,
    si_sdr,
    snr,
    summarize,
    write_metrics,
)

SR = 16000
SNRS = (-5, 0, 5, 10, 20)


def speech_like(sr=SR, dur=3.0, seed=0):
    """Voiced, formant-shaped harmonic signal with syllabic modulation and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * dur)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros_like(t)
    for k in range(1, 30):
        fk = k * f0
        amp = (np.exp(-((fk - 500) / 300) ** 2) + 0.6 * np.exp(-((fk - 1500) / 400) ** 2)
               + 0.3 * np.exp(-((fk - 2500) / 500) ** 2) + 0.05) / math.sqrt(k)
        x += np.where(fk < sr / 2 - 200, amp, 0.0) * np.sin(k * phase + rng.uniform(0, 6.3))
    x *= np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5 * ((t % 1.0) < 0.7)
    return 0.5 * x / np.abs(x).max()


def add_white_noise(s, snr_db, seed=1):
    n = np.random.default_rng(seed).standard_normal(len(s))
    return s + n * np.sqrt(np.sum(s ** 2) / np.sum(n ** 2) / 10 ** (snr_db / 10))


def test_si_sdr_closed_form_and_invariances():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(1000)
    s -= s.mean()
    n = rng.standard_normal(1000)
    n -= n.mean()
    n -= (n @ s) / (s @ s) * s  # orthogonal to s and to constants
    n *= math.sqrt(0.3 / (n @ n))  # ||n||^2 = 0.3
    a = 0.7
    expected = 10 * math.log10(a ** 2 * (s @ s) / 0.3)
    assert abs(si_sdr(s, a * s + n) - expected) < 1e-10
    # scale invariance in either argument, sign included; offset invariance (zero-mean)
    assert abs(si_sdr(s, -5.0 * (a * s + n)) - expected) < 1e-10
    assert abs(si_sdr(3.0 * s, a * s + n) - expected) < 1e-10
    assert abs(si_sdr(s + 0.2, a * s + n - 0.1) - expected) < 1e-10
    # plain SNR is not scale-invariant: closed form ||s||^2 / ||(1-a)s - n||^2
    assert abs(snr(s, a * s + n) - 10 * math.log10((s @ s) / ((1 - a) ** 2 * (s @ s) + 0.3))) \
        < 1e-10
    # batches along the last axis; perfect -> +inf; zero reference -> NaN
    batch = si_sdr(np.stack([s, s]), np.stack([a * s + n, s]))
    assert batch.shape == (2,) and abs(batch[0] - expected) < 1e-10 and batch[1] > 200
    assert si_sdr(np.zeros(10), np.ones(10)) != si_sdr(np.zeros(10), np.ones(10))  # NaN
    with pytest.raises(ValueError, match="shape"):
        si_sdr(s, s[:-1])


def test_clean_against_clean_is_perfect():
    s = speech_like()
    row = evaluate_pair(s, s, SR)
    assert abs(row["pesq"] - 4.644) < 0.01
    assert row["estoi"] > 0.999
    assert row["si_sdr"] > 100
    assert row["error"] == ""


def test_metrics_increase_with_snr():
    s = speech_like()
    rows = [evaluate_pair(s, add_white_noise(s, d), SR) for d in SNRS]
    for m in ("pesq", "estoi", "si_sdr"):
        vals = [r[m] for r in rows]
        assert all(b > a for a, b in zip(vals, vals[1:], strict=False)), (m, vals)
    # SI-SDR of signal + independent white noise is the SNR, up to the chance correlation
    for d, r in zip(SNRS, rows, strict=True):
        assert abs(r["si_sdr"] - d) < 0.25
    assert rows[-1]["estoi"] - rows[0]["estoi"] > 0.4
    assert rows[-1]["pesq"] - rows[0]["pesq"] > 0.1


def test_metrics_increase_with_snr_on_espeak_speech():
    from polydiff.speech.corpus import synthesize

    s = synthesize("The birch canoe slid on the smooth planks.", sample_rate=SR)
    s = s.astype(np.float64)
    rows = [evaluate_pair(s, add_white_noise(s, d), SR) for d in SNRS]
    for m in ("pesq", "estoi", "si_sdr"):
        vals = [r[m] for r in rows]
        assert all(b > a for a, b in zip(vals, vals[1:], strict=False)), (m, vals)
    assert rows[0]["estoi"] < 0.5 < 0.9 < rows[-1]["estoi"]


def test_pesq_modes_and_rates():
    s16 = speech_like()
    s8 = speech_like(sr=8000)
    # narrow-band at 8 kHz: identical signals get the top of the P.862.1 scale
    assert abs(pesq(s8, s8, 8000, "nb")[0] - 4.549) < 0.01
    assert pesq(s8, s8, 8000)[0] == pesq(s8, s8, 8000, "nb")[0]  # auto = nb below 16 kHz
    # wide-band is refused for 8 kHz material (up-sampling does not make it wide-band)
    with pytest.raises(ValueError, match="wide-band PESQ needs material sampled at 16 kHz"):
        pesq_wb(s8, s8, 8000)
    with pytest.raises(ValueError, match="use narrow-band"):
        evaluate_pair(s8, s8, 8000, pesq_mode="wb")
    noisy_wb = pesq_wb(s16, add_white_noise(s16, 10), SR)[0]
    noisy_nb = pesq(s16, add_white_noise(s16, 10), SR, "nb")[0]
    assert 1.0 < noisy_wb < 4.0 and 1.0 < noisy_nb < 4.5 and noisy_nb != noisy_wb
    assert pesq(s16, s16, SR)[0] == pesq_wb(s16, s16, SR)[0]  # auto = wb at 16 kHz
    # other rates: resampled to 16 kHz (wb) or 8 kHz (nb, below 16 kHz)
    s22 = resample(s16, SR, 22050)
    assert abs(pesq_wb(s22, s22, 22050)[0] - 4.644) < 0.01
    s11 = resample(s8, 8000, 11025)
    assert abs(pesq(s11, s11, 11025, "nb")[0] - 4.549) < 0.01
    with pytest.raises(ValueError, match="PESQ mode"):
        pesq(s8, s8, 8000, "swb")


def test_length_mismatch_is_an_error_unless_aligned():
    """Regression: a shorter estimate used to be compared over the common part only, so a
    truncated estimate of a clean file scored as perfect."""
    s = speech_like()
    short = s[: s.size // 2]  # the second half missing
    with pytest.raises(ValueError, match="shorter than its reference.*--align"):
        evaluate_pair(s, short, SR)
    with pytest.raises(ValueError, match="longer than its reference"):
        evaluate_pair(s, np.pad(s, (0, 10)), SR)
    row = evaluate_pair(s, short, SR, align=True)  # zero-padded: the missing part counts
    assert row["error"] == "" and row["si_sdr"] < 30 < evaluate_pair(s, s, SR)["si_sdr"]
    assert evaluate_pair(s, np.pad(s, (0, 10)), SR, align=True)["si_sdr"] > 100


def test_failures_become_nan_with_reason():
    s = speech_like()
    v, why = pesq_wb(s[:2000], s[:2000], SR)  # 1/8 s: PESQ needs >= 1/4 s
    assert math.isnan(v) and why.startswith("pesq:") and "1/4" in why
    v, why = pesq_wb(s, np.zeros_like(s), SR)
    assert math.isnan(v) and "silent" in why
    v, why = estoi(s[:2000], s[:2000], SR)
    assert math.isnan(v) and "not enough" in why
    row = evaluate_pair(np.zeros(SR), np.ones(SR), SR)
    assert all(math.isnan(row[m]) for m in ("pesq", "estoi", "si_sdr"))
    assert row["error"] == ("pesq: silent reference; estoi: silent reference; "
                            "si_sdr: silent reference")
    # regression: a silent *estimate* was reported as a silent reference
    row = evaluate_pair(s, np.zeros_like(s), SR)
    assert all(math.isnan(row[m]) for m in ("pesq", "estoi", "si_sdr"))
    assert row["error"] == ("pesq: silent estimate; estoi: silent estimate; "
                            "si_sdr: silent estimate")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_pair(s, s, SR, metrics=("mos",))


def test_summarize_is_nan_aware():
    rows = [{"name": "a", "pesq": 2.0, "error": ""}, {"name": "b", "pesq": math.nan,
                                                       "error": "x"},
            {"name": "c", "pesq": 4.0, "error": ""}]
    assert summarize(rows) == {"pesq": {"mean": 3.0, "std": 1.0, "count": 2}}
    empty = summarize([{"name": "a", "pesq": math.nan}])["pesq"]
    assert empty == {"mean": None, "std": None, "count": 0}  # no NaN in any output


def _write(p, x, sr=SR):
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), x, sr, subtype="FLOAT")


def test_evaluate_folder_and_write_metrics(tmp_path):
    s0, s1 = speech_like(seed=0), speech_like(seed=1, dur=2.0)
    for name, s in (("a", s0), ("b", s1)):
        _write(tmp_path / "clean" / f"{name}.wav", s)
        _write(tmp_path / "noisy" / f"{name}.wav", add_white_noise(s, 0))
    _write(tmp_path / "clean" / "c.wav", s1)  # not enhanced: counted as missing
    _write(tmp_path / "enh" / "a.wav", add_white_noise(s0, 20))
    # enhanced at another rate: resampled to the reference's rate
    from polydiff.speech.audio import resample

    _write(tmp_path / "enh" / "b.wav", resample(add_white_noise(s1, 20), SR, 22050), 22050)
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh", tmp_path / "noisy")
    assert [r["name"] for r in rows] == ["a", "b"]
    assert list(rows[0]) == ["name", "pesq", "estoi", "si_sdr", "noisy_pesq",
                             "noisy_estoi", "noisy_si_sdr"]
    assert summary["pesq_mode"] == "wb" and summary["errors"] == []
    for r in rows:
        assert r["si_sdr"] > r["noisy_si_sdr"] + 15
        assert r["estoi"] > r["noisy_estoi"] and r["pesq"] > r["noisy_pesq"]
    assert summary["files"] == 2 and summary["failed"] == 0 and summary["missing"] == 1
    assert summary["si_sdr"]["count"] == 2
    assert abs(summary["si_sdr"]["mean"] - np.mean([r["si_sdr"] for r in rows])) < 1e-12

    # a broken file is reported with its reason (not a NaN row), not a crash
    (tmp_path / "enh" / "c.wav").write_bytes(b"not audio")
    seen = []
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh", show_progress=True,
                                    on_row=lambda r, s: seen.append((len(r), s["failed"])))
    assert [r["name"] for r in rows] == ["a", "b"] and seen == [(1, 0), (2, 0), (2, 1)]
    assert summary["failed"] == 1 and summary["scored"] == 2 and summary["files"] == 3
    assert summary["errors"][0]["name"] == "c"
    assert "not a readable audio file" in summary["errors"][0]["error"]
    assert summary["pesq"]["count"] == 2

    csv_path, json_path = write_metrics(rows, summary, tmp_path / "out")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "name,pesq,estoi,si_sdr" and len(lines) == 3
    text = json_path.read_text()
    doc = json.loads(text)
    assert doc["summary"]["files"] == 3 and len(doc["rows"]) == 2
    assert "NaN" not in text and "null" not in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv",
                                                                   "metrics.json"]


def test_evaluate_folder_with_nothing_scorable_has_no_nan(tmp_path):
    s = speech_like(dur=1.0)
    _write(tmp_path / "clean" / "a.wav", s)
    _write(tmp_path / "enh" / "a.wav", np.zeros_like(s))  # silent estimate
    _write(tmp_path / "enh2" / "a.wav", s[:8000])  # truncated estimate
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh")
    assert rows == [] and summary["failed"] == 1 and summary["pesq"]["mean"] is None
    assert summary["errors"][0]["error"].startswith("pesq: silent estimate")
    csv_path, json_path = write_metrics(rows, summary, tmp_path / "out")
    assert "NaN" not in json_path.read_text()
    assert csv_path.read_text().splitlines() == ["name,pesq,estoi,si_sdr"]
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh2")
    assert rows == [] and "shorter than its reference" in summary["errors"][0]["error"]
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh2", align=True)
    assert len(rows) == 1 and rows[0]["si_sdr"] < 20  # half the file missing


def test_evaluate_folder_errors(tmp_path):
    _write(tmp_path / "clean" / "a.wav", speech_like(dur=1.0))
    _write(tmp_path / "enh" / "zz.wav", speech_like(dur=1.0))
    with pytest.raises(AudioError, match="no clean reference for 1 enhanced file.*zz.wav"):
        evaluate_folder(tmp_path / "clean", tmp_path / "enh")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio files"):
        evaluate_folder(tmp_path / "clean", tmp_path / "empty")
    with pytest.raises(AudioError, match="no such folder"):
        evaluate_folder(tmp_path / "clean", tmp_path / "nothing")
