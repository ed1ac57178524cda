"""The ``prodiff`` tour demo: the starter voice reads held-out prompts of a real speaker.

Huang et al. (2022), "ProDiff: Progressive Fast Diffusion Model for High-Quality
Text-to-Speech". The starter voice (package data, ``weights/voice``; how it was trained is in
``weights/manifest.json``) reads prompts of its speaker that were held out of training (their
recordings ship in ``weights/heldout``). Each method (the 2-step student, ProDiff's default;
the 1-step student; the 4-step teacher; the regression baseline of the same size) speaks the
prompt's text with its own predicted durations, through Griffin-Lim (and, in the full demo,
the diffusion vocoder); the demo reports the mel-cepstral distortion to the recording after
DTW (dB, lower is better) and the speed (seconds of audio per second of compute on this
machine), writes the audio and a spectrogram figure (recording vs methods).
torch is imported inside :meth:`ProDiffDemo.demo` only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from polydiff.core.cli import DemoReport, atomic_write

__all__ = ["DEMO", "HELDOUT", "ProDiffDemo", "heldout_prompts"]

HELDOUT = Path(__file__).resolve().parent / "weights" / "heldout"


def heldout_prompts() -> list[dict[str, Any]]:
    """``[{"name", "text", "path"}]`` of the held-out recordings shipped with the app."""
    index = HELDOUT / "prompts.json"
    if not index.is_file():
        return []
    return [{**p, "path": HELDOUT / p["file"]} for p in json.loads(index.read_text())]


class ProDiffDemo:
    """Speak held-out prompts with every method of the starter voice and score them."""

    name = "prodiff"
    summary = ("ProDiff fast diffusion TTS (2-step distilled student) vs its 4-step teacher, "
               "1-step student and a regression decoder, on held-out prompts of a real "
               "speaker")

    def demo(self, out_dir: Path, *, quick: bool = False) -> DemoReport:
        import torch

        from polydiff.apps.prodiff.commands import load_voice

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        voice = load_voice(None)
        # one thread: these small models gain little from two, and two threads of a
        # process wait for each other whenever another job shares the cores
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(out, quick, voice, tic)
        finally:
            torch.set_num_threads(threads)

    def _run(self, out: Path, quick: bool, voice: Any, tic: float) -> DemoReport:
        import numpy as np

        from polydiff.speech.audio import read_audio, write_audio
        from polydiff.speech.prodiff.features import mcd_dtw

        prompts = heldout_prompts()
        if not prompts:
            raise ValueError("the held-out prompts are not installed with the app")
        prompts = prompts[:2] if quick else prompts
        methods = ["student-2", "regression"] if quick else \
            [m for m in ("student-2", "student-1", "teacher-4", "regression")
             if m in voice.methods()]
        vocoders = ["griffin-lim"] if quick else voice.vocoders()
        sr = voice.sample_rate
        scores: dict[tuple[str, str], list[float]] = {}
        timing: dict[tuple[str, str], list[float]] = {}
        audio, panels = [], {}
        for k, p in enumerate(prompts):
            ref, _ = read_audio(p["path"], sample_rate=sr)
            if k == 0:
                path = out / "audio" / "recording.wav"
                write_audio(path, ref, sr)
                audio.append(path)
                panels["recording (held out)"] = _stft(ref)
            for method in methods:
                toks = voice.tokens(p["text"])
                t0 = time.perf_counter()
                mels = [voice.mel(t, method, seed=k)[0] for _, t in toks]
                t_ac = time.perf_counter() - t0
                for voc in vocoders:
                    t0 = time.perf_counter()
                    wave = np.concatenate([voice.vocode(m, voc, seed=k) for m in mels])
                    t_all = t_ac + time.perf_counter() - t0
                    scores.setdefault((method, voc), []).append(mcd_dtw(ref, wave,
                                                                        voice.mel_config))
                    timing.setdefault((method, voc), []).append(len(wave) / sr / t_all)
                    if k == 0:
                        path = out / "audio" / f"{method}_{voc}.wav"
                        write_audio(path, wave, sr)
                        audio.append(path)
                        if voc == vocoders[0]:
                            panels[f"{method} ({voc})"] = _stft(wave)
        figures = []
        try:
            from polydiff.core.plots import spectrogram_plot

            figures.append(spectrogram_plot(out / "spectrograms.png", panels, sample_rate=sr,
                                            hop_length=128, n_fft=512))
        except ImportError:  # the plots extra is missing: audio and numbers only
            pass
        metrics: dict[str, float | str] = {}
        units: dict[str, str] = {}
        for (method, voc), vals in scores.items():
            metrics[f"MCD {method} + {voc}"] = round(float(np.mean(vals)), 2)
            units[f"MCD {method} + {voc}"] = "dB"
        for (method, voc), vals in timing.items():
            metrics[f"speed {method} + {voc}"] = round(float(np.mean(vals)), 1)
            units[f"speed {method} + {voc}"] = "x real time"
        metrics["prompts"] = len(prompts)
        units["prompts"] = "count"
        metrics["seconds"] = round(time.perf_counter() - tic, 1)
        units["seconds"] = "s"
        atomic_write(out / "results.json",
                     json.dumps({"metrics": metrics, "units": units}, indent=2) + "\n")
        text = ("The starter voice (a real Mexican-Spanish speaker, 8 kHz telephone prompts, "
                "trained on a CPU; see the app's weights/manifest.json) reads prompts held "
                "out of its training. MCD: mel-cepstral distortion to the recording after "
                "DTW, lower is better; the 2-step student is ProDiff's default, the "
                "regression decoder is the FastSpeech 2-style baseline of the same size.")
        return DemoReport(title="ProDiff fast diffusion text-to-speech", metrics=metrics,
                          figures=figures, audio=audio, text=text, units=units)


def _stft(wave: Any) -> Any:
    import torch

    x = torch.as_tensor(wave, dtype=torch.float32)
    return torch.stft(x, 512, 128, window=torch.hann_window(512), return_complex=True).numpy()


DEMO = ProDiffDemo()
