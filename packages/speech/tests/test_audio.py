"""Audio I/O: validation messages, downmix, exact resampling, atomic writing."""

import logging
import os

import numpy as np
import pytest
import soundfile as sf

from polydiff.core.cli import run_cli
from polydiff.speech.audio import (
    AudioError,
    audio_info,
    list_audio,
    read_audio,
    resample,
    write_audio,
)


def _tone(n, sr, f=440.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def test_read_write_round_trip_pcm16_and_float(tmp_path):
    x = _tone(1600, 16000)
    assert write_audio(tmp_path / "a.wav", x, 16000) == 0
    y, sr = read_audio(tmp_path / "a.wav")
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (1600,)
    assert np.abs(y - x).max() <= 1 / 32768 + 1e-7  # 16-bit quantisation
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    write_audio(tmp_path / "b.wav", x, 16000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "b.wav")
    np.testing.assert_array_equal(y, x)
    write_audio(tmp_path / "c.flac", x, 16000)
    y, _ = read_audio(tmp_path / "c.flac")
    assert np.abs(y - x).max() <= 1 / 32768 + 1e-7
    assert audio_info(tmp_path / "c.flac") == (1600, 16000, 1)


def test_write_accepts_torch_and_clips_with_count(tmp_path, caplog):
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.0, 0.5, 1.5, -2.0, 1.0])
    with caplog.at_level(logging.WARNING, logger="polydiff.speech.audio"):
        n = write_audio(tmp_path / "t.wav", x[None], 8000, subtype="FLOAT")
    assert n == 2
    assert "clipped 2 of 5" in caplog.text
    y, sr = read_audio(tmp_path / "t.wav")
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0, -1.0, 1.0])
    assert sr == 8000


def test_write_is_atomic_and_rejects_nan(tmp_path):
    p = tmp_path / "keep.wav"
    write_audio(p, _tone(100, 16000), 16000)
    before = p.read_bytes()
    bad = _tone(100, 16000)
    bad[3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(p, bad, 16000)
    with pytest.raises(AudioError, match="mono"):
        write_audio(p, np.zeros((2, 10)), 16000)
    with pytest.raises(AudioError, match="empty"):
        write_audio(p, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="suffix"):
        write_audio(tmp_path / "x.mp3", _tone(100, 16000), 16000)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.wav"]  # no temporary leftovers


def test_stereo_downmix_or_error(tmp_path):
    left, right = _tone(800, 16000, 300), _tone(800, 16000, 500, 0.25)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], 1), 16000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)
    with pytest.raises(AudioError, match="2 channels"):
        read_audio(tmp_path / "st.wav", mono="error")


@pytest.mark.parametrize("content, match", [
    (b"this is not a wav file", "not a readable audio file"),
    (b"", "not a readable audio file"),
])
def test_unreadable_files(tmp_path, content, match):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=match) as e:
        read_audio(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_validation_messages(tmp_path):
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(500), 16000)
    with pytest.raises(AudioError, match="silent"):
        read_audio(tmp_path / "silent.wav")
    y, _ = read_audio(tmp_path / "silent.wav", allow_silent=True)
    assert y.shape == (500,) and not y.any()
    with pytest.raises(AudioError, match="too short"):
        read_audio(tmp_path / "silent.wav", allow_silent=True, min_samples=501)
    x = _tone(100, 16000)
    x[5], x[7] = np.inf, np.nan
    sf.write(str(tmp_path / "nan.wav"), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="2 NaN or infinite"):
        read_audio(tmp_path / "nan.wav")
    sf.write(str(tmp_path / "low.wav"), _tone(100, 800, 50), 800)
    with pytest.raises(AudioError, match="below 1000 Hz"):
        read_audio(tmp_path / "low.wav")
    with pytest.raises(AudioError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="folder"):
        read_audio(tmp_path)
    with pytest.raises(ValueError):
        read_audio(tmp_path / "silent.wav", mono="left")


def test_cli_reports_one_line_exit_2(tmp_path, capsys):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"garbage")

    def main(argv):
        read_audio(p)

    assert run_cli(main, [], prog="x") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("x: error: ") and str(p) in err and "\n" not in err


def test_resample_unusual_rate_exact_and_read(tmp_path):
    sr_in, sr_out = 22050, 16000
    x = _tone(22050, sr_in, 440.0)  # 1 s
    sf.write(str(tmp_path / "r.wav"), x, sr_in, subtype="FLOAT")
    y, sr = read_audio(tmp_path / "r.wav", sample_rate=sr_out)
    assert sr == sr_out and y.shape == (16000,)
    ref = _tone(16000, sr_out, 440.0)
    # away from the filter's edge transients the resampled tone matches the exact tone
    assert np.abs(y[500:-500] - ref[500:-500]).max() < 2e-3
    z, sr = read_audio(tmp_path / "r.wav", sample_rate=22050)
    np.testing.assert_array_equal(z, x)
    assert resample(x, 22050, 22050) is x
    assert resample(np.ones(441, np.float32), 44100, 16000).shape == (160,)
    with pytest.raises(ValueError):
        read_audio(tmp_path / "r.wav", sample_rate=100)


def test_list_audio_sorted_and_filtered(tmp_path):
    for name in ("b.wav", "a.FLAC", "c.ogg", "notes.txt", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.wav").write_bytes(b"x")
    assert [p.name for p in list_audio(tmp_path)] == ["a.FLAC", "b.wav", "c.ogg"]
    assert [p.name for p in list_audio(tmp_path, recursive=True)][-1] == "d.wav"
    with pytest.raises(AudioError, match="no such folder"):
        list_audio(tmp_path / "nope")
