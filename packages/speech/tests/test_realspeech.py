"""polydiff.speech.realspeech on a fixture laid out like the Debian packages (no network)."""

from __future__ import annotations

import gzip
import wave
from pathlib import Path

import numpy as np
import pytest

from polydiff.speech import realspeech


def _wav(path: Path, x: np.ndarray, sr: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    """Unpacked 'packages' for the French speaker, as fetch_debian_package leaves them."""
    audio = tmp_path / "asterisk-core-sounds-fr-wav"
    spk = audio / "usr/share/asterisk/sounds/fr_CA_f_June"
    t = np.arange(800) / 8000
    _wav(spk / "hello.wav", 0.5 * np.sin(2 * np.pi * 200 * t))
    _wav(spk / "digits/7.wav", 0.25 * np.sin(2 * np.pi * 300 * t))
    _wav(spk / "untranscribed.wav", 0.1 * np.sin(2 * np.pi * 300 * t))
    _wav(spk / "silence/1.wav", np.zeros(800))
    (audio / ".complete").write_text("x\n")
    text = tmp_path / "asterisk-core-sounds-fr"
    doc = text / "usr/share/doc/asterisk-core-sounds-fr"
    doc.mkdir(parents=True)
    with gzip.open(doc / "core-sounds-fr.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("; Core Asterisk Sounds in French\n\nhello: Bonjour,   le monde.\n"
                 "digits/7: sept\nbroken line without colon\n")
    (text / ".complete").write_text("x\n")
    return tmp_path


def test_prompts_join_audio_and_transcripts(fake_root: Path) -> None:
    ps = realspeech.prompts(["fr_CA_f_June"], root=fake_root)
    by_name = {p.name: p for p in ps}
    assert set(by_name) == {"hello", "digits/7", "untranscribed"}  # silence/ skipped
    assert by_name["hello"].text == "Bonjour, le monde."
    assert by_name["digits/7"].text == "sept"
    assert by_name["untranscribed"].text is None
    assert {p.language for p in ps} == {"fr"}
    with_text = realspeech.prompts(["fr_CA_f_June"], with_text=True, root=fake_root)
    assert [p.name for p in with_text] == ["digits/7", "hello"]


def test_load_prompt_scales_to_unit_range(fake_root: Path) -> None:
    p = realspeech.prompts(["fr_CA_f_June"], root=fake_root)[1]
    x, sr = realspeech.load_prompt(p)
    assert sr == 8000 and x.dtype == np.float32 and x.shape == (800,)
    assert abs(float(np.abs(x).max()) - 0.5) < 1e-3


def test_reserved_and_unknown_are_refused(tmp_path: Path) -> None:
    assert realspeech.is_reserved("asterisk-core-sounds-en-wav")
    assert realspeech.is_reserved("asterisk-moh-opsound-wav")
    assert not realspeech.is_reserved("asterisk-core-sounds-fr-wav")
    assert not any(realspeech.is_reserved(a) or (t and realspeech.is_reserved(t))
                   for a, t, _ in realspeech.SPEAKERS.values())
    with pytest.raises(ValueError, match="reserved"):
        realspeech._fetch("asterisk-core-sounds-en-wav", tmp_path)
    with pytest.raises(ValueError, match="unknown speaker"):
        realspeech.prompts(["en_US_f_Allison"], root=tmp_path)
