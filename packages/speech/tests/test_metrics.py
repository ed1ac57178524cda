"""Metrics: SI-SDR closed form and invariances, PESQ/ESTOI extremes and monotonicity,
NaN-with-reason handling, folder evaluation and atomic reports."""

import json
import math

import numpy as np
import pytest
import soundfile as sf

from polydiff.speech.audio import AudioError
from polydiff.speech.metrics import (
    estoi,
    evaluate_folder,
    evaluate_pair,
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


def test_other_rates_are_resampled_for_pesq():
    s16 = speech_like()
    s8 = speech_like(sr=8000)
    assert abs(pesq_wb(s8, s8, 8000)[0] - 4.644) < 0.01
    noisy_a = pesq_wb(s16, add_white_noise(s16, 10), SR)[0]
    assert 1.0 < noisy_a < 4.0


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
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_pair(s, s, SR, metrics=("mos",))


def test_summarize_is_nan_aware():
    rows = [{"name": "a", "pesq": 2.0, "error": ""}, {"name": "b", "pesq": math.nan,
                                                       "error": "x"},
            {"name": "c", "pesq": 4.0, "error": ""}]
    assert summarize(rows) == {"pesq": {"mean": 3.0, "std": 1.0, "count": 2}}
    empty = summarize([{"name": "a", "pesq": math.nan}])["pesq"]
    assert empty["count"] == 0 and math.isnan(empty["mean"])


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
                             "noisy_estoi", "noisy_si_sdr", "error"]
    for r in rows:
        assert r["error"] == ""
        assert r["si_sdr"] > r["noisy_si_sdr"] + 15
        assert r["estoi"] > r["noisy_estoi"] and r["pesq"] > r["noisy_pesq"]
    assert summary["files"] == 2 and summary["failed"] == 0 and summary["missing"] == 1
    assert summary["si_sdr"]["count"] == 2
    assert abs(summary["si_sdr"]["mean"] - np.mean([r["si_sdr"] for r in rows])) < 1e-12

    # a broken file gives a NaN row with its reason, not a crash
    (tmp_path / "enh" / "c.wav").write_bytes(b"not audio")
    rows, summary = evaluate_folder(tmp_path / "clean", tmp_path / "enh", show_progress=True)
    assert rows[2]["name"] == "c" and math.isnan(rows[2]["pesq"])
    assert "not a readable audio file" in rows[2]["error"]
    assert summary["failed"] == 1 and summary["pesq"]["count"] == 2

    csv_path, json_path = write_metrics(rows, summary, tmp_path / "out")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "name,pesq,estoi,si_sdr,error" and len(lines) == 4
    assert lines[3].startswith("c,,,,")
    doc = json.loads(json_path.read_text())
    assert doc["summary"]["files"] == 3 and doc["rows"][2]["pesq"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv",
                                                                   "metrics.json"]


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
