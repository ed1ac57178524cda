"""End-to-end runs of every ``sgmse`` verb on a tiny model, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydiff.apps.sgmse.config import SAMPLER_NAMES, TRAIN_FILE, TrainSettings
from polydiff.apps.sgmse.main import main
from polydiff.core.cli import load_config


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("sgmse: ")]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes that were left behind."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("verb", ["", "train", "corpus", "enhance", "evaluate", "bench",
                                  "demo"])
def test_help_is_instant_and_imports_no_torch(verb: str) -> None:
    code = ("import sys; from polydiff.apps.sgmse.main import "
            "main\ntry:\n    main([" + (f"'{verb}', " if verb else "") + "'--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules\n"
            "assert 'numpy' not in sys.modules")
    # "instant" is checked structurally (no torch, no numpy imported), not by a wall-clock
    # limit, which a busy CI machine can exceed for reasons that are not the CLI's
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: sgmse" in proc.stdout


def test_sampler_names_match_the_package() -> None:
    from polydiff.speech.sgmse.enhance import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES


def test_objective_names_match_the_package() -> None:
    import typing

    from polydiff.apps.sgmse.config import TrainSettings
    from polydiff.apps.sgmse.main import build_parser
    from polydiff.speech.sgmse.model import OBJECTIVES

    hints = typing.get_type_hints(TrainSettings)
    assert typing.get_args(hints["objective"]) == tuple(OBJECTIVES)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    train = sub.choices["train"]
    flag = next(a for a in train._actions if a.dest == "objective")
    assert tuple(flag.choices) == tuple(OBJECTIVES)


# ----------------------------------------------------------------------------- train
def test_train_writes_a_run_and_its_settings(trained: dict) -> None:
    run: Path = trained["run"]
    assert trained["step"] == 3 and trained["model"] == "sgmse"
    for name in ("config.json", "stats.jsonl", "log.txt", TRAIN_FILE, "model/config.json",
                 "model/model.safetensors"):
        assert (run / name).is_file(), name
    settings = load_config(TrainSettings, run / TRAIN_FILE)
    assert (settings.preset, settings.steps, settings.batch_size) == ("tiny", 3, 2)
    assert settings.log_every == 1 and settings.device == "cpu"


def test_train_predictive_then_resume(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "pred"
    args = ["train", "--data", corpus, "-o", run, "--predictive", "--preset", "tiny",
            "--batch-size", "2", "--segment-frames", "16", "--device", "cpu", "--json"]
    code, out, _ = run_(args + ["--steps", "2", "--set", "ckpt_every=1",
                                "network.base_channels=6", "network.norm_groups=3"], capsys)
    assert code == 0 and json.loads(out)["model"] == "predictive"
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["_class_name"] == "SGMSEPredictive"
    assert saved["network"]["base_channels"] == 6 and saved["network"]["norm_groups"] == 3
    code, _, err = run_(args + ["--steps", "2"], capsys)  # exists: refuse without --resume
    assert code == 2 and "--resume" in err
    code, out, err = run_(["train", "--data", corpus, "-o", run, "--resume", "--steps", "4",
                           "--json"], capsys)  # the saved sgmse.toml is the base
    assert code == 0, err
    assert json.loads(out)["step"] == 4 and json.loads(out)["model"] == "predictive"
    assert json.loads((run / "model" / "config.json").read_text())["network"] == saved["network"]
    assert (run / "model" / "config.json").is_file()


run_ = run


# ----------------------------------------------------------------------------- enhance
def test_enhance_a_file_and_a_folder(corpus: Path, trained: dict, tmp_path: Path,
                                     capsys) -> None:
    noisy = corpus / "test" / "noisy"
    src = sorted(noisy.glob("*.wav"))[0]
    out_file = tmp_path / "one.wav"
    code, out, err = run(["enhance", src, "-o", out_file, "--model", trained["run"],
                          "--steps", "3", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["written"] == 1 and result["failed"] == 0 and result["rtf"] > 0
    x, sr = sf.read(src)
    y, sr2 = sf.read(out_file)
    assert sr2 == sr and y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0
    # a folder, the ODE sampler, chunked: same names in the output folder
    out_dir = tmp_path / "enh"
    code, out, err = run(["enhance", noisy, "-o", out_dir, "--model", trained["run"] / "model",
                          "--sampler", "dpmpp_2m", "--steps", "2", "--chunk-seconds", "0.5",
                          "--overlap-seconds", "0.1"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.glob("*.wav")) == \
        sorted(p.name for p in noisy.glob("*.wav"))
    assert (out_dir / "sgmse-enhance.toml").is_file()
    assert "written" in out and not leftovers(out_dir)


def _write(path: Path, data: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return path


def test_enhance_folder_with_bad_files(trained: dict, tmp_path: Path, capsys) -> None:
    """Each unusable file gives one line, the others are written, exit code 2 at the end,
    and nothing partial is left behind. Stereo is averaged to mono and other rates are
    resampled (both documented), so those are written."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)
    _write(src / "good.wav", tone + 0.05 * rng.standard_normal(8000))
    _write(src / "stereo.wav", np.stack([tone, 0.5 * tone], axis=1))
    _write(src / "rate22k.wav", 0.3 * np.sin(2 * np.pi * 220 * np.arange(11025) / 22050),
           sr=22050)
    (src / "text.wav").write_text("this is not audio\n")
    _write(src / "empty.wav", np.zeros(0))
    _write(src / "silent.wav", np.zeros(4000))
    nan = tone.astype(np.float32)
    nan[100] = np.nan
    _write(src / "nan.wav", nan, subtype="FLOAT")
    _write(src / "short.wav", tone[:100])
    out = tmp_path / "out"
    code, _, err = run(["enhance", src, "-o", out, "--model", trained["run"], "--steps", "2"],
                       capsys)
    assert code == 2
    lines = error_lines(err)
    bad = {"text": "not a readable audio file", "empty": "empty", "silent": "silent",
           "nan": "NaN", "short": "too short"}
    for name, words in bad.items():
        assert sum(ln.startswith("sgmse: skipped: ") and f"{name}.wav" in ln and words in ln
                   for ln in lines) == 1, (name, lines)
    assert lines[-1].startswith("sgmse: error: 5 of 8 file(s)")
    assert sorted(p.name for p in out.glob("*.wav")) == ["good.wav", "rate22k.wav",
                                                         "stereo.wav"]
    assert sf.info(out / "rate22k.wav").samplerate == 22050
    assert sf.info(out / "stereo.wav").channels == 1
    assert not leftovers(out)
    assert "Traceback" not in err


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d / "missing.wav", "no such file"),
    (lambda d: (d / "x.wav").write_bytes(b"RIFF....WAVEjunk") and d / "x.wav",
     "not a readable audio file"),
])
def test_enhance_one_bad_file(make, words, trained: dict, tmp_path: Path, capsys) -> None:
    src = make(tmp_path)
    code, out, err = run(["enhance", src, "-o", tmp_path / "o.wav", "--model", trained["run"]],
                         capsys)
    assert code == 2 and words in err
    assert len(err.strip().splitlines()) <= 2  # the per-file line and the summary line
    assert not (tmp_path / "o.wav").exists() and not leftovers(tmp_path)


# ----------------------------------------------------------------------------- evaluate
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the std of inf SI-SDRs
def test_evaluate_writes_metrics(corpus: Path, trained: dict, tmp_path: Path, capsys) -> None:
    enh = tmp_path / "enh"
    code, _, err = run(["enhance", corpus / "test" / "noisy", "-o", enh, "--model",
                        trained["run"], "--steps", "2"], capsys)
    assert code == 0, err
    code, out, err = run(["evaluate", "--clean", corpus / "test" / "clean", "--noisy",
                          corpus / "test" / "noisy", "--enhanced", enh, "-o", tmp_path / "m",
                          "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["files"] == 2
    for key in ("pesq", "estoi", "si_sdr", "noisy_si_sdr", "delta_si_sdr"):
        assert key in result
    assert result["noisy_si_sdr"] > -10  # the corpus SNR range is -5..15 dB
    doc = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert len(doc["rows"]) == 2
    assert (tmp_path / "m" / "metrics.csv").read_text().startswith("name,")
    # the clean folder against itself: a perfect SI-SDR, shown as text in human mode
    code, out, _ = run(["evaluate", "--clean", corpus / "test" / "clean", "--enhanced",
                        corpus / "test" / "clean", "-o", tmp_path / "m2"], capsys)
    assert code == 0 and "si_sdr" in out


def _speechish(n: int, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * k * 180 * t) / k for k in range(1, 10))
    return 0.3 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) \
        + 0.003 * rng.standard_normal(n)


def _speech(sr: int) -> np.ndarray:
    """Formant speech (espeak-ng), which PESQ detects as speech."""
    from polydiff.speech.corpus import synthesize

    x = synthesize("The birch canoe slid on the smooth planks.", sample_rate=sr)
    return 0.5 * x / np.abs(x).max()


def test_evaluate_reports_bad_files_and_exits_2(tmp_path: Path, capsys) -> None:
    """Regression (issue 10): every unusable file used to give a NaN row with exit code 0;
    a silent estimate was reported as a silent reference; a shorter estimate was silently
    truncated and scored better. Now: one line per bad file, exit code 2, no NaN written,
    a length mismatch is an error unless --align."""
    sr = 16000
    s = _speech(sr)
    for name in ("good", "silent", "short", "junk"):
        _write(tmp_path / "clean" / f"{name}.wav", s, sr)
    _write(tmp_path / "enh" / "good.wav", s + 0.01 * np.sin(np.arange(s.size)), sr)
    _write(tmp_path / "enh" / "silent.wav", np.zeros_like(s), sr)
    _write(tmp_path / "enh" / "short.wav", s[: s.size // 2], sr)
    (tmp_path / "enh" / "junk.wav").write_bytes(b"not audio")
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "enh", "-o", tmp_path / "m", "--json"], capsys)
    assert code == 2 and "Traceback" not in err
    lines = error_lines(err)
    assert sum("silent.wav" not in ln and ln.startswith("sgmse: silent: ") for ln in lines) == 1
    assert any(ln.startswith("sgmse: silent: pesq: silent estimate") for ln in lines)
    assert not any("silent reference" in ln for ln in lines)
    assert any(ln.startswith("sgmse: short: ") and "shorter than its reference" in ln
               for ln in lines)
    assert any(ln.startswith("sgmse: junk: ") and "not a readable" in ln for ln in lines)
    assert lines[-1].startswith("sgmse: error: 3 of 4 file(s) could not be scored")
    result = json.loads(out)
    assert result["scored"] == 1 and result["failed"] == 3 and result["pesq_mode"] == "wb"
    for path in (tmp_path / "m" / "metrics.json", tmp_path / "m" / "metrics.csv"):
        text = path.read_text()
        assert "NaN" not in text and "nan" not in text.lower().replace("name", "")
    assert len(json.loads((tmp_path / "m" / "metrics.json").read_text())["rows"]) == 1
    # --align zero-pads the short estimate: scored, and worse than the good one
    (tmp_path / "enh" / "silent.wav").unlink()
    (tmp_path / "enh" / "junk.wav").unlink()
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "enh", "-o", tmp_path / "m2", "--align", "--json"],
                         capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in
            json.loads((tmp_path / "m2" / "metrics.json").read_text())["rows"]}
    assert rows["short"]["si_sdr"] < rows["good"]["si_sdr"] - 10
    # every file unusable: exit 2, nothing but nulls for the means
    (tmp_path / "bad").mkdir()
    _write(tmp_path / "bad" / "good.wav", np.zeros_like(s), sr)
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "bad", "-o", tmp_path / "m3", "--json"], capsys)
    assert code == 2 and json.loads(out)["pesq"] is None and "NaN" not in out


def test_evaluate_pesq_modes(tmp_path: Path, capsys) -> None:
    """Narrow-band PESQ at 8 kHz; wide-band refused for 8 kHz material with one line."""
    sr = 8000
    s = _speech(sr)
    _write(tmp_path / "clean" / "a.wav", s, sr)
    _write(tmp_path / "enh" / "a.wav", s + 0.02 * np.sin(np.arange(s.size)), sr)
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "enh", "-o", tmp_path / "m", "--json"], capsys)
    assert code == 0, err
    auto = json.loads(out)
    assert auto["pesq_mode"] == "nb" and 1.0 < auto["pesq"] <= 4.55
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "enh", "-o", tmp_path / "m", "--pesq", "nb", "--json"],
                         capsys)
    assert code == 0 and json.loads(out)["pesq"] == auto["pesq"]
    code, out, err = run(["evaluate", "--clean", tmp_path / "clean", "--enhanced",
                          tmp_path / "enh", "-o", tmp_path / "m4", "--pesq", "wb"], capsys)
    assert code == 2 and out == "" and len(error_lines(err)) == 1
    assert "wide-band PESQ needs material sampled at 16 kHz" in err and "Traceback" not in err


def test_enhance_folder_progress_and_incremental_summary(corpus: Path, trained: dict,
                                                         tmp_path: Path, capsys) -> None:
    """Off a terminal a folder run prints one line per file, and enhance-summary.json is
    rewritten after every file (so an interrupted run keeps its statistics)."""
    out_dir = tmp_path / "enh"
    code, out, err = run(["enhance", corpus / "test" / "noisy", "-o", out_dir, "--model",
                          trained["run"], "--steps", "2"], capsys)
    assert code == 0, err
    lines = [ln for ln in error_lines(err) if ln.startswith("sgmse: enhance ")]
    assert [ln.split(":")[1].split()[-1] for ln in lines] == ["1/2", "2/2"]
    assert all("rtf" in ln for ln in lines)
    summary = json.loads((out_dir / "enhance-summary.json").read_text())
    assert summary["written"] == 2 and summary["pending"] == 0 and len(summary["outputs"]) == 2
    assert summary["settings"]["chunk_seconds"] == 6.0  # chunked by default


def test_corpus_verb_from_a_sources_pack(tmp_path: Path, capsys) -> None:
    """'sgmse corpus' builds the held-out splits from a sources pack without network."""
    from polydiff.speech import realcorpus as rc

    sources = tmp_path / "pack"
    (sources).mkdir()
    rng = np.random.default_rng(0)
    spec = rc.SourcesSpec()
    index = {"format": "polydiff-speech-real-sources", "version": rc.SOURCES_VERSION,
             "sample_rate": 8000, "spec": json.loads(json.dumps(
                 __import__("dataclasses").asdict(spec))), "speakers": {}}
    for k, (speaker, role) in enumerate(spec.roles().items()):
        parts = [_speechish(int(rng.uniform(0.6, 1.2) * 8000), 8000, k * 10 + i)
                 for i in range(8)]
        bounds = np.cumsum([0] + [p.size for p in parts]).tolist()
        sf.write(sources / f"{speaker}.flac", np.concatenate(parts), 8000, subtype="PCM_16")
        index["speakers"][speaker] = {
            "role": role, "language": speaker[:2], "file": f"{speaker}.flac", "seconds": 1,
            "prompts": [[f"p{i}", bounds[i], bounds[i + 1]] for i in range(8)]}
    h = np.zeros((1, 400), dtype=np.float16)
    h[0, 0] = 1.0
    np.savez_compressed(sources / "rirs.npz", rirs=h, lengths=np.array([400]),
                        gains=np.array([1.0]), sample_rate=np.array(16000))
    index["rirs"] = {"file": "rirs.npz", "count": 1, "sample_rate": 16000, "rooms": []}
    (sources / "index.json").write_text(json.dumps(index))
    code, out, err = run(["corpus", "-o", tmp_path / "c", "--sources", sources, "--json",
                          "--set", "n_test=2", "n_valid=1"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["test_files"] == 6 and result["valid_files"] == 3
    assert "test ru_RU_f_IvrvoiceRU" in result["description"]
    code, _, err = run(["corpus", "-o", tmp_path / "c", "--sources", sources], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = run(["corpus", "-o", tmp_path / "d", "--sources", sources, "--set",
                        "bogus=1"], capsys)
    assert code == 2 and "bogus" in err


# ----------------------------------------------------------------------------- bench
def test_bench_tiny(corpus: Path, trained: dict, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "bench.json"
    code, out, err = run(["bench", "--model", trained["run"], "--data", corpus, "--steps", "1,2",
                          "--seconds", "0.5", "--max-files", "1", "--device", "cpu", "--json",
                          "-o", out_json], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert [r["steps"] for r in result["results"]] == [1, 2]
    assert result["results"][1]["nfe"] > result["results"][0]["nfe"]
    assert all(r["rtf"] > 0 and "si_sdr" in r for r in result["results"])
    assert "si_sdr" in result["noisy"]
    assert json.loads(out_json.read_text()) == result


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--data", "D", "-o", "R", "--bogus"], "unrecognized arguments"),
    (["train", "--data", "D", "-o", "R", "--steps", "many"], "invalid int value"),
    (["enhance", "x.wav", "-o", "y.wav", "--model", "M", "--sampler", "magic"], "sampler"),
    (["enhance", "x.wav", "-o", "y.wav", "--model", "M", "--steps", "0"], "steps"),
    (["train", "--data", "D", "-o", "R", "--config", "{bad}"], "not valid TOML"),
    (["train", "--data", "D", "-o", "R", "--config", "{unknown}"], "unknown config key"),
    (["train", "--data", "D", "-o", "R", "--set", "lr=fast"], "expects float"),
    (["bench", "--model", "M", "--steps", "5,x"], "comma-separated"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, words, tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.toml").write_text("steps = [unclosed\n")
    (tmp_path / "unknown.toml").write_text("stepz = 3\n")
    argv = [a.format(bad=tmp_path / "bad.toml", unknown=tmp_path / "unknown.toml")
            for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and words in err, err
    assert "Traceback" not in err and out == ""
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1


def test_missing_model_and_data(corpus: Path, tmp_path: Path, capsys) -> None:
    wav = _write(tmp_path / "a.wav", 0.1 * np.ones(4000))
    code, _, err = run(["enhance", wav, "-o", tmp_path / "o.wav", "--model", tmp_path / "nope"],
                       capsys)
    assert code == 2 and "no such folder" in err
    code, _, err = run(["enhance", wav, "-o", tmp_path / "o.wav", "--model", tmp_path], capsys)
    assert code == 2 and "not a model folder" in err
    code, _, err = run(["train", "--data", tmp_path / "none", "-o", tmp_path / "r"], capsys)
    assert code == 2 and "no such dataset folder" in err
    code, _, err = run(["train", "--data", tmp_path, "-o", tmp_path / "r2", "--preset", "tiny"],
                       capsys)
    assert code == 2 and "'train' split" in err and len(error_lines(err)) == 1
    assert not (tmp_path / "r2").exists()


def test_corrupt_weights_give_one_line(trained: dict, tmp_path: Path, capsys) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained["run"] / "model", model)
    (model / "model.safetensors").write_bytes(b"garbage")
    wav = _write(tmp_path / "a.wav", 0.1 * np.sin(np.arange(4000)))
    code, _, err = run(["enhance", wav, "-o", tmp_path / "o.wav", "--model", model], capsys)
    assert code == 2 and "safetensors" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- demo
def test_demo_quick_with_the_starter_weights(tmp_path: Path, capsys, monkeypatch) -> None:
    """The tour demo enhances held-out speech with the shipped starter weights; with an
    empty cache (no real speech, no network in tests) it says it uses formant speech."""
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "-o", out, "--quick", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    m = result["metrics"]
    assert m["data"] == "formant" and m["weights"] == "starter" and m["files"] == 1
    for key in ("noisy/pesq", "predictive/si_sdr", "predictive/rtf", "sgmse/estoi",
                "sgmse/rtf"):
        assert key in m, key
    assert m["predictive/si_sdr"] > m["noisy/si_sdr"]
    assert {Path(p).name for p in result["figures"]} == {"spectrograms.png"}
    assert len(result["audio"]) == 4 and all(Path(p).is_file() for p in result["audio"])
    assert "Formant speech" in result["text"] and "starter weights" in result["text"]
    assert not (tmp_path / "cache" / "debian").exists()  # nothing fetched


def test_demo_quick_trains_without_starter_weights(tmp_path: Path, capsys,
                                                  monkeypatch) -> None:
    import polydiff.apps.sgmse.starter as starter

    monkeypatch.setattr(starter, "STARTER_DIR", tmp_path / "no-weights")
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "-o", out, "--quick", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    m = result["metrics"]
    for key in ("noisy/si_sdr", "predictive/si_sdr", "predictive/rtf", "sgmse_n5/pesq",
                "sgmse_n10/estoi", "sgmse_n10/rtf"):
        assert key in m, key
    assert m["train/cached"] == "no"
    assert {Path(p).name for p in result["figures"]} == {"spectrograms.png", "loss.png",
                                                          "quality_vs_steps.png"}
    assert len(result["audio"]) == 4 and all(Path(p).is_file() for p in result["audio"])
    assert "Formant speech" in result["text"]
    assert any((tmp_path / "cache" / "sgmse-demo").glob("*/done.json"))


def test_demo_is_registered_for_the_tour() -> None:
    from polydiff.core.cli import discover_apps

    app = discover_apps()["sgmse"].load()
    assert app.name == "sgmse" and app.summary and callable(app.demo)



def test_trained_pair_is_cached(corpus: Path, tmp_path: Path) -> None:
    from polydiff.apps.sgmse.experiment import ExperimentSettings, evaluate_methods, train_pair

    s = ExperimentSettings(steps=1, predictive_steps=1, batch_size=2, segment_frames=16,
                           sampler_steps=(1,))
    first = train_pair(s, corpus, tmp_path / "runs", progress=False, cache=tmp_path / "c")
    again = train_pair(s, corpus, tmp_path / "runs2", progress=False, cache=tmp_path / "c")
    assert not first.cached and again.cached and not (tmp_path / "runs2").exists()
    assert again.stats == first.stats and set(again.seconds) == {"sgmse", "predictive"}
    results, kept = evaluate_methods(s, corpus, again, keep=1, max_files=1, progress=False)
    assert set(results) == {"noisy", "predictive", "sgmse_n1"}
    assert results["predictive"]["rtf"] > 0 and "rtf" not in results["noisy"]
    assert kept["files"][0]["sgmse_n1"].shape == kept["files"][0]["clean"].shape


def test_evaluate_a_predictive_centred_pair(corpus: Path) -> None:
    """A StoRM-style pair (SGMSE centred on the baseline's estimate) is evaluated with the
    baseline passed to every SGMSE call, the warm-up included (untrained tiny models)."""
    from polydiff.apps.sgmse.experiment import ExperimentSettings, Trained, evaluate_methods
    from polydiff.speech.sgmse.model import (
        SGMSE,
        PredictiveConfig,
        SGMSEConfig,
        SGMSEPredictive,
    )

    s = ExperimentSettings(sampler_steps=(1,), storm_variants=("euler:1@0.1",), objective="edm",
                           center="predictive")
    pair = Trained(SGMSE(SGMSEConfig(preset="tiny", objective="edm", center="predictive")),
                   SGMSEPredictive(PredictiveConfig(preset="tiny")), {}, {})
    results, kept = evaluate_methods(s, corpus, pair, max_files=1, progress=False)
    assert set(results) == {"noisy", "predictive", "sgmse_n1", "storm_euler1_t0.1"}
    assert kept["count"] == 1 and all(r["rtf"] > 0 for k, r in results.items() if k != "noisy")
