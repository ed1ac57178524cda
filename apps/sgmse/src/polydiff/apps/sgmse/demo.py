"""The ``sgmse`` tour demo: the starter weights on held-out real speech.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+); the predictive-then-diffusion sampler follows
StoRM (Lemercier et al. 2023).

1. Data: held-out utterances of the test speaker of the real-speech corpus (ru_RU: a speaker
   and a language the models never trained on; the Debian package is fetched once into the
   cache by the full demo), mixed at 0, 5 and 10 dB with coloured, bursty, hum and
   music-like noise (:func:`polydiff.apps.sgmse.starter.check_slice`). Without network (and
   always in ``--quick`` mode when the package is not cached yet) the demo uses formant speech
   of held-out espeak-ng voices instead, and says so.
2. Models: the starter weights shipped with the app (an SGMSE model and its predictive
   baseline trained on real speech at 8 kHz; how, and on what, is in their manifest), no
   training. Without starter weights the demo trains tiny models on formant speech instead
   (:data:`FULL` / :data:`QUICK`, cached).
3. Every file is enhanced by the baseline (one network pass), by SGMSE with the recommended
   sampler (the baseline's estimate diffused to ``t_start``, then a few predictor-corrector
   steps) and, in the full demo, by SGMSE's own PC sampler from the prior; PESQ
   (narrow-band), ESTOI and SI-SDR are reported against the noisy input, per input SNR, with
   the real-time factor of each method on this machine.

Outputs: ``spectrograms.png`` (noisy / baseline / SGMSE / clean), ``quality_by_snr.png``,
WAV files of one held-out utterance under ``audio/``; ``results.json`` holds all numbers.
torch is imported inside :meth:`SGMSEDemo.demo` only.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

from polydiff.apps.sgmse.experiment import ExperimentSettings
from polydiff.core.cli import DemoReport, atomic_write, emit

__all__ = ["DEMO", "FULL", "QUICK", "SGMSEDemo", "demo_cache_root"]

#: ``quick=True``: seconds, for tests and smoke runs (the numbers mean little).
QUICK = ExperimentSettings(n_train=8, n_test=2, seconds=(1.0, 1.4), steps=24,
                           predictive_steps=24, batch_size=2, segment_frames=32, lr=2e-3,
                           ema=0.9, objective="data", sampler_steps=(5, 10))
#: The full demo: a few minutes on two CPU cores.
FULL = ExperimentSettings(n_train=64, n_test=6, seconds=(1.5, 2.5), steps=300,
                          predictive_steps=300, batch_size=4, segment_frames=64, lr=1e-3,
                          ema=0.99, objective="data", sampler_steps=(5, 10, 30))


#: The unit of a metric, by the last part of its name.
UNITS = {"pesq": "PESQ MOS-LQO (1-4.5)", "estoi": "fraction (0-1)", "si_sdr": "dB",
         "rtf": "s compute per s audio", "seconds": "s", "files": "count", "steps": "count",
         "parameters": "count", "sample_rate_hz": "Hz"}


def _units(metrics: dict[str, Any]) -> dict[str, str]:
    """The unit of every numeric metric (:data:`UNITS`; ``*_seconds`` are seconds)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, str):
            continue
        last = key.rsplit("/", 1)[-1]
        out[key] = "s" if last.endswith("seconds") else UNITS.get(last, "")
    return out


def demo_cache_root() -> Path:
    """``$POLYDIFF_CACHE/sgmse-demo``, else ``$XDG_CACHE_HOME/polydiff/sgmse-demo``, else
    ``~/.cache/polydiff/sgmse-demo``."""
    from polydiff.core.utils import cache_dir

    return cache_dir("sgmse-demo")


def _stft(wave: Any, n_fft: int, hop: int) -> Any:
    import torch

    x = torch.as_tensor(wave, dtype=torch.float32)
    return torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True,
                      return_complex=True).numpy()


class SGMSEDemo:
    """SGMSE+ (starter weights) against its predictive baseline on held-out real speech."""

    name = "sgmse"
    summary = ("SGMSE+ score-based speech enhancement (starter weights, 8 kHz) vs its "
               "predictive baseline on held-out real speech: a speaker and language never "
               "trained on, at 0/5/10 dB")

    def demo(self, out_dir: Path, *, quick: bool = False,
             settings: ExperimentSettings | None = None) -> DemoReport:
        """Run the demo into ``out_dir``: the starter weights on held-out speech, or (with
        ``settings``, or without starter weights) tiny models trained on formant speech."""
        from polydiff.apps.sgmse.starter import STARTER_DIR

        if settings is None and (STARTER_DIR / "manifest.json").is_file():
            return self.starter_demo(Path(out_dir), quick=quick)
        return self.trained_demo(Path(out_dir), quick=quick, settings=settings)

    def starter_demo(self, out: Path, *, quick: bool = False) -> DemoReport:
        """The starter weights on a held-out slice (see the module docstring)."""
        import torch

        from polydiff.apps.sgmse.starter import check_slice, load_starter, read_manifest
        from polydiff.core.plots import line_plot, spectrogram_plot
        from polydiff.core.utils import MissingDependencyError
        from polydiff.speech.audio import write_audio
        from polydiff.speech.metrics import evaluate_pair
        from polydiff.speech.sgmse.enhance import enhance_with_stats

        out.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, 2))
        try:
            sg, pr = load_starter()
            manifest = read_manifest()
            rec = dict(manifest.get("enhance", {}))
            snrs = (5.0,) if quick else (0.0, 5.0, 10.0)
            n = 1 if quick else 3
            try:
                items, kind = check_slice("real", n=n, snrs=snrs, fetch=not quick), "real"
            except (FileNotFoundError, MissingDependencyError, OSError, ValueError):
                items, kind = check_slice("formant", n=n, snrs=snrs), "formant"
            methods: list[tuple[str, Any, dict[str, Any]]] = [
                ("predictive", pr, {}),
                ("sgmse", sg, {**rec, "predictive": pr} if rec.get("sampler") == "storm"
                 else rec)]
            if not quick:
                methods.append(("sgmse_pc10", sg, {"sampler": "pc", "steps": 10}))
            rate = sg.sample_rate
            rows: dict[str, list[dict[str, Any]]] = {"noisy": []}
            cost: dict[str, float] = {}
            audio_s = 0.0
            first: dict[str, Any] = {}
            for i, it in enumerate(items):
                audio_s += it["noisy"].size / rate
                rows["noisy"].append({**evaluate_pair(it["clean"], it["noisy"], rate),
                                      "snr": it["snr_db"]})
                for name, model, kw in methods:
                    est, st = enhance_with_stats(model, it["noisy"], rate, seed=i, **kw)
                    rows.setdefault(name, []).append(
                        {**evaluate_pair(it["clean"], est, rate), "snr": it["snr_db"]})
                    cost[name] = cost.get(name, 0.0) + st.seconds
                    if i == 0:
                        first[name] = est
        finally:
            torch.set_num_threads(threads)
        results = {name: {m: _mean_of(rs, m) for m in ("pesq", "estoi", "si_sdr")}
                   for name, rs in rows.items()}
        for name in cost:
            results[name]["rtf"] = cost[name] / audio_s
        by_snr = {f"{g:g}": {name: {m: _mean_of([r for r in rs if r["snr"] == g], m)
                                    for m in ("pesq", "estoi", "si_sdr")}
                             for name, rs in rows.items()} for g in snrs}
        it0 = items[0]
        audio = []
        for label, wave in (("noisy", it0["noisy"]), ("predictive", first["predictive"]),
                            ("sgmse", first["sgmse"]), ("clean", it0["clean"])):
            path = out / "audio" / f"{it0['name']}_{label}.wav"
            write_audio(path, wave, rate)
            audio.append(path)
        spec = sg.representation.config
        panels = {f"noisy input ({it0['name']}, {it0['noise']} noise)":
                      _stft(it0["noisy"], spec.n_fft, spec.hop_length),
                  "predictive baseline": _stft(first["predictive"], spec.n_fft,
                                               spec.hop_length),
                  f"SGMSE ({rec.get('sampler', 'pc')}, N = {rec.get('steps', 30)})":
                      _stft(first["sgmse"], spec.n_fft, spec.hop_length),
                  "clean target": _stft(it0["clean"], spec.n_fft, spec.hop_length)}
        figures = [spectrogram_plot(out / "spectrograms.png", panels, sample_rate=rate,
                                    hop_length=spec.hop_length, n_fft=spec.n_fft)]
        if len(snrs) > 1:
            figures.append(line_plot(
                out / "quality_by_snr.png",
                {name: (list(snrs), [by_snr[f"{g:g}"][name]["pesq"] for g in snrs])
                 for name in rows}, xlabel="input SNR (dB)", ylabel="PESQ (narrow-band)",
                markers=True, title=f"held-out {'real' if kind == 'real' else 'formant'} "
                "speech"))
        metrics: dict[str, float | str] = {}
        for method, vals in results.items():
            for m, v in vals.items():
                metrics[f"{method}/{m}"] = v
        metrics.update({"data": kind, "files": float(len(items)), "seconds":
                        time.perf_counter() - tic, "device": "cpu",
                        "weights": "starter", "sample_rate_hz": float(rate)})
        buf = io.StringIO()
        emit({"results": results, "by_snr": by_snr, "metrics": metrics, "enhance": rec,
              "manifest_heldout": manifest.get("heldout", {})}, True, file=buf)
        atomic_write(out / "results.json", buf.getvalue())
        return DemoReport(title="SGMSE speech enhancement on held-out real speech",
                          metrics=metrics, figures=figures, audio=audio, units=_units(metrics),
                          text=_starter_text(results, by_snr, rec, kind, len(items), manifest,
                                             quick))

    def trained_demo(self, out_dir: Path, *, quick: bool = False,
                     settings: ExperimentSettings | None = None) -> DemoReport:
        """Train (or load from the cache) tiny models on formant speech and compare them."""
        import torch

        from polydiff.apps.sgmse.experiment import (
            evaluate_methods,
            prepare_corpus,
            settings_key,
            train_pair,
        )
        from polydiff.core.plots import line_plot, spectrogram_plot
        from polydiff.speech.audio import write_audio

        s = settings or (QUICK if quick else FULL)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, 2))  # tiny networks: more threads only cost
        try:
            corpus = prepare_corpus(s)
            t_corpus = time.perf_counter() - tic
            key = settings_key(s, torch.__version__, corpus.name)
            trained = train_pair(s, corpus, out / "train", device="cpu",
                                 cache=demo_cache_root() / key)
            results, kept = evaluate_methods(s, corpus, trained, device="cpu", keep=1)
        finally:
            torch.set_num_threads(threads)
        rate = kept["rate"]
        best = _best(s, results)
        first = kept["files"][0]
        audio = []
        for label in ("noisy", "predictive", best, "clean"):
            path = out / "audio" / f"{first['name']}_{label}.wav"
            write_audio(path, first[label], rate)
            audio.append(path)
        n_fft, hop = trained.sgmse.representation.config.n_fft, \
            trained.sgmse.representation.config.hop_length
        panels = {f"noisy input ({first['name']})": _stft(first["noisy"], n_fft, hop),
                  "predictive baseline": _stft(first["predictive"], n_fft, hop),
                  f"SGMSE ({s.objective} objective, PC sampler, N = {best[7:]})":
                      _stft(first[best], n_fft, hop),
                  "clean target": _stft(first["clean"], n_fft, hop)}
        figures = [spectrogram_plot(out / "spectrograms.png", panels, sample_rate=rate,
                                    hop_length=hop, n_fft=n_fft)]
        curves = {name: ([r["step"] for r in st], [r["loss"] for r in st])
                  for name, st in trained.stats.items() if len(st) >= 2}
        if curves:
            figures.append(line_plot(out / "loss.png", curves, xlabel="step",
                                     ylabel="training loss", logy=True,
                                     title="training losses (different objectives)"))
        steps = list(s.sampler_steps)
        figures.append(line_plot(
            out / "quality_vs_steps.png",
            {"SGMSE (PC)": (steps, [results[f"sgmse_n{n}"]["si_sdr"] for n in steps]),
             "predictive": (steps, [results["predictive"]["si_sdr"]] * len(steps)),
             "noisy input": (steps, [results["noisy"]["si_sdr"]] * len(steps))},
            xlabel="reverse steps N", ylabel="SI-SDR (dB)", markers=True,
            title="held-out voices and noise types"))
        metrics: dict[str, float | str] = {}
        for method, vals in results.items():
            for m, v in vals.items():
                metrics[f"{method}/{m}"] = v
        metrics.update({
            "train/sgmse_seconds": trained.seconds.get("sgmse", math.nan),
            "train/predictive_seconds": trained.seconds.get("predictive", math.nan),
            "train/steps": float(s.steps), "train/cached": "yes" if trained.cached else "no",
            "train/parameters": float(sum(p.numel() for p in trained.sgmse.parameters())),
            "corpus/seconds": t_corpus, "test/files": float(s.n_test),
            "seconds": time.perf_counter() - tic, "device": "cpu",
        })
        buf = io.StringIO()
        emit({"settings": s.to_dict(), "results": results, "metrics": metrics}, True, file=buf)
        atomic_write(out / "results.json", buf.getvalue())
        return DemoReport(title="SGMSE speech enhancement on synthetic speech",
                          metrics=metrics, figures=figures, audio=audio, units=_units(metrics),
                          text=_text(s, results, metrics, quick))


def _mean_of(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if math.isfinite(float(r[key]))]
    return sum(vals) / len(vals) if vals else math.nan


def _starter_text(r: dict[str, dict[str, float]], by_snr: dict[str, Any], rec: dict[str, Any],
                  kind: str, files: int, manifest: dict[str, Any], quick: bool) -> str:
    noisy, pred, sg = r["noisy"], r["predictive"], r["sgmse"]
    data = ("held-out real speech: prompts of the test speaker (ru_RU, a speaker and a "
            "language the models never trained on)" if kind == "real" else
            "Formant speech of held-out espeak-ng voices (the real held-out speaker's package "
            "is not in the cache; the full demo fetches it once). Formant speech is not "
            "natural speech and the models never saw any")
    lines = [
        f"Data: {files} files of {data}, 8 kHz, mixed at "
        + ", ".join(f"{k} dB" for k in by_snr) + " with white, pink, bursty, hum and "
        "music-like noise.",
        "Models: the starter weights shipped with sgmse (SGMSE with EDM preconditioning and "
        "its predictive baseline, the same 1M-parameter U-Net; trained on real speech of "
        "three other speakers on a CPU; see weights/manifest.json). SGMSE samples with "
        f"'{rec.get('sampler', 'pc')}' (N = {rec.get('steps')}"
        + (f", from t = {rec.get('t_start')}: the baseline's estimate diffused forward, "
           f"then reverse {rec.get('storm_base', 'pc')} steps" if rec.get("sampler") == "storm"
           else "")
        + ").",
        "",
        f"Means (PESQ narrow-band / ESTOI / SI-SDR dB): noisy {_fmt(noisy['pesq'])} / "
        f"{_fmt(noisy['estoi'])} / {_fmt(noisy['si_sdr'], 1)}; predictive "
        f"{_fmt(pred['pesq'])} / {_fmt(pred['estoi'])} / {_fmt(pred['si_sdr'], 1)}; SGMSE "
        f"{_fmt(sg['pesq'])} / {_fmt(sg['estoi'])} / {_fmt(sg['si_sdr'], 1)}"
        + (f"; SGMSE PC N=10 from the prior {_fmt(r['sgmse_pc10']['pesq'])} / "
           f"{_fmt(r['sgmse_pc10']['estoi'])} / {_fmt(r['sgmse_pc10']['si_sdr'], 1)}"
           if "sgmse_pc10" in r else "") + ". "
        f"Real-time factor on this CPU: predictive {_fmt(pred['rtf'], 3)}, SGMSE "
        f"{_fmt(sg['rtf'], 3)}.",
    ]
    held = manifest.get("heldout", {})
    if held.get("results"):
        lines.append(f"The manifest's held-out figures (the bench's test split, "
                     f"{held.get('files', '?')} files): "
                     + "; ".join(f"{k} PESQ {_fmt(v.get('pesq'))}, SI-SDR "
                                 f"{_fmt(v.get('si_sdr'), 1)} dB"
                                 for k, v in held["results"].items()) + ".")
    if quick:
        lines.append("Quick mode: one file at 5 dB; the numbers show that the pipeline runs.")
    lines += ["", "spectrograms.png: one held-out file (noisy, baseline, SGMSE, clean); "
              "audio/ holds the same four. quality_by_snr.png: PESQ against the input SNR."]
    return "\n".join(lines)


_OBJECTIVE = {"score": "SGMSE+'s score objective",
              "epsilon": "noise-prediction objective",
              "data": "clean-spectrogram (data) prediction objective"}


def _best(s: ExperimentSettings, results: dict[str, dict[str, float]]) -> str:
    """The SGMSE step count with the highest mean SI-SDR (``"sgmse_n<N>"``)."""
    keys = [f"sgmse_n{n}" for n in s.sampler_steps]
    score = {k: results[k]["si_sdr"] for k in keys}
    return max(keys, key=lambda k: score[k] if math.isfinite(score[k]) else -math.inf)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _text(s: ExperimentSettings, r: dict[str, dict[str, float]], m: dict[str, Any],
          quick: bool) -> str:
    best = _best(s, r)
    label = "SGMSE+" if s.objective == "score" else "SGMSE"
    noisy, pred, sg = r["noisy"], r["predictive"], r[best]
    lines = [
        f"Data: {s.n_train} training and {s.n_test} test utterances of espeak-ng formant "
        f"speech ({s.seconds[0]:g}-{s.seconds[1]:g} s, 16 kHz) in noise at "
        f"{s.snr_db[0]:g}..{s.snr_db[1]:g} dB SNR; the test voices and noise types (brown "
        "noise, mains hum) never occur in training. Formant speech is buzzier and more "
        "regular than recorded talkers: these numbers are not comparable with "
        "VoiceBank-DEMAND results, and the models will not transfer to real recordings.",
        f"Models: SGMSE ({_OBJECTIVE.get(s.objective, s.objective)}, OUVE SDE) and its "
        "predictive baseline, the same "
        f"'{s.preset}' NCSN++-style network ({int(m['train/parameters'])} parameters; the "
        f"paper's has about 65M), each trained {s.steps} steps of {s.batch_size} "
        f"{s.segment_frames}-frame segments on the CPU"
        + (" (loaded from the cache)." if m["train/cached"] == "yes" else
           f" ({_fmt(m['train/sgmse_seconds'], 0)} s and "
           f"{_fmt(m['train/predictive_seconds'], 0)} s)."),
        "",
        f"Held-out test (means over {s.n_test} files): SI-SDR noisy {_fmt(noisy['si_sdr'])} dB, "
        f"predictive {_fmt(pred['si_sdr'])} dB, {label} N = "
        + " / ".join(str(n) for n in s.sampler_steps) + ": "
        + " / ".join(_fmt(r[f"sgmse_n{n}"]["si_sdr"]) for n in s.sampler_steps) + " dB. "
        f"PESQ noisy / predictive / {label} (N = {best[7:]}): {_fmt(noisy['pesq'])} / "
        f"{_fmt(pred['pesq'])} / {_fmt(sg['pesq'])}; ESTOI {_fmt(noisy['estoi'])} / "
        f"{_fmt(pred['estoi'])} / "
        f"{_fmt(sg['estoi'])}. Real-time factor on this CPU: predictive "
        f"{_fmt(pred['rtf'], 3)}, {label} "
        + ", ".join(f"N={n}: {_fmt(r[f'sgmse_n{n}']['rtf'], 3)}" for n in s.sampler_steps)
        + " (PC sampling costs two network passes per step).",
    ]
    gain = sg["si_sdr"] - noisy["si_sdr"]
    if quick:
        lines.append("Quick mode: a few training steps only; the models are barely trained "
                     "and the numbers show that the pipeline runs, not what SGMSE+ can do.")
    else:
        lines.append(
            f"Where this stands: {label} (best N={best[7:]}) changes SI-SDR by {gain:+.1f} dB over "
            "the noisy input "
            f"and the baseline by {pred['si_sdr'] - noisy['si_sdr']:+.1f} dB. With a tiny "
            "network and a CPU budget of minutes the generative model is far from the "
            "paper's (which trains a 65M-parameter network for days on a GPU); the predictive "
            "baseline, a plain regression, learns faster from so little. Train longer with "
            "'sgmse train --preset small' or on a GPU ('tools/bench/sgmse.py --budget gpu')."
            + (" The data objective is used because, at this size and budget, SGMSE+'s score "
               "objective gives a score model whose sampler diverges (SI-SDR far below the "
               "noisy input in our runs); the OUVE SDE and the PC sampler are the same."
               if s.objective == "data" else ""))
    lines += ["", "spectrograms.png: one held-out utterance (noisy, baseline, SGMSE at its "
              "best N, clean); audio/ holds the same four as WAV. loss.png: training losses from "
              "the runs' stats.jsonl (the two objectives differ in scale). "
              "quality_vs_steps.png: SI-SDR against the number of reverse steps."]
    return "\n".join(lines)


DEMO = SGMSEDemo()
