"""End-to-end runs of every ``prodiff`` verb on a tiny voice (espeak-ng formant speech), the
starter voice re-scored on its held-out slice, and bad input."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.apps.prodiff.commands import STARTER_VOICE
from polydiff.apps.prodiff.main import main

torch.set_num_threads(int(os.environ.get("POLYDIFF_TEST_THREADS", "1")))
pytest.importorskip("espeakng_loader")

TINY = ["speaker=formant", "language=en-us", "formant_utterances=8", "n_valid=1", "n_test=2",
        "hidden=16", "encoder_layers=1", "ffn_hidden=16", "denoiser_channels=8",
        "denoiser_layers=2", "vocoder_channels=8", "vocoder_layers=2", "teacher_steps=3",
        "vocoder_steps=2", "distill_steps=2", "batch_size=2", "segment_frames=16"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("prodiff: error")]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "cache"
    old = os.environ.get("POLYDIFF_CACHE")
    os.environ["POLYDIFF_CACHE"] = str(cache)
    try:
        run_dir = tmp_path_factory.mktemp("prodiff") / "run"
        assert main(["train-teacher", "-o", str(run_dir), "--set", *TINY, "--json"]) == 0
        assert main(["distill", str(run_dir), "--json"]) == 0
    finally:
        if old is None:
            os.environ.pop("POLYDIFF_CACHE", None)
        else:
            os.environ["POLYDIFF_CACHE"] = old
    return run_dir


def test_help_is_instant_and_imports_no_torch():
    for verb in ("", "train-teacher", "distill", "synthesize", "evaluate", "bench", "demo"):
        code = ("import sys\nfrom polydiff.apps.prodiff.main import main\ntry:\n    main([" +
                (f"'{verb}', " if verb else "") + "'--help'])\nexcept SystemExit:\n    pass\n"
                "assert 'torch' not in sys.modules, 'torch imported'\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "usage: prodiff" in proc.stdout


def test_train_distill_synthesize_evaluate_bench(tiny_run, tmp_path, capsys):
    run_dir = tiny_run
    for part in ("teacher", "regression", "vocoder"):
        assert (run_dir / part / "model" / "model.safetensors").is_file()
        assert (run_dir / part / "checkpoints").is_dir()
    assert (run_dir / "distill" / "4to2").is_dir() and (run_dir / "distill" / "2to1").is_dir()
    voice = run_dir / "voice"
    assert sorted(p.name for p in voice.iterdir() if p.is_dir()) == \
        ["acoustic", "regression", "student-1", "student-2", "vocoder"]
    out = tmp_path / "hello.wav"
    code, stdout, err = run(["synthesize", "Hello there, 42 cats. How are you?", "-o", out,
                             "--voice", run_dir, "--json", "--vocoder", "diffusion"], capsys)
    assert code == 0, err
    wave, sr = sf.read(out)
    assert sr == 8000 and len(wave) > 1000 and np.isfinite(wave).all()
    assert json.loads(stdout)["files"][0]["output"] == str(out)
    # the voice's default temperature (voice.json, from the settings) and --temperature
    assert json.loads((voice / "voice.json").read_text())["temperature"] == 1.0
    assert json.loads(stdout)["temperature"] == 1.0
    mels = []
    for seed in ("1", "2"):
        code, stdout, err = run(["synthesize", "Hello there.", "-o", tmp_path / "cold.wav",
                                 "--voice", run_dir, "--json", "--temperature", "0", "--seed",
                                 seed], capsys)
        assert code == 0, err
        assert json.loads(stdout)["temperature"] == 0.0
        mels.append(sf.read(tmp_path / "cold.wav")[0])
    # temperature 0: a deterministic start, the same speech whatever the seed (Griffin-Lim
    # starts from zero phase)
    np.testing.assert_array_equal(mels[0], mels[1])
    code, stdout, err = run(["evaluate", "--voice", voice, "--max-prompts", "1", "--json",
                             "--methods", "student-2", "--vocoders", "griffin-lim",
                             "--split", "valid", "--temperature", "0.5"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["temperature"] == 0.5 and json.loads(stdout)["split"] == "valid"
    code, stdout, err = run(["evaluate", "--voice", voice, "--max-prompts", "1", "--json",
                             "--methods", "student-2,regression", "--vocoders",
                             "griffin-lim"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert {r["method"] for r in res["results"]} == {"student-2", "regression"}
    assert all(r["mcd_db"] > 0 and r["speed_x"] > 0 for r in res["results"])
    code, stdout, err = run(["bench", "--voice", voice, "--sentences", "1", "--repeats", "1",
                             "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(stdout)["results"]) == 10  # 5 methods x 2 vocoders
    code, stdout, err = run(["bench", "--voice", voice, "--sentences", "1", "--repeats", "1",
                             "--methods", "student-2", "--vocoders", "griffin-lim", "--json"],
                            capsys)
    assert code == 0, err
    assert [(r["method"], r["vocoder"]) for r in json.loads(stdout)["results"]] == \
        [("student-2", "griffin-lim")]


def test_lines_file_to_folder_with_one_bad_line(tiny_run, tmp_path, capsys):
    src = tmp_path / "lines.txt"
    src.write_text("Good morning.\n\n?!...\nSee you later.\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = run(["synthesize", "-f", src, "-o", out, "--voice", tiny_run], capsys)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["line-0001.wav", "line-0004.wav"]
    bad = [ln for ln in err.splitlines() if "line-0003.wav" in ln]
    assert len(bad) == 1 and "only punctuation" in bad[0]


def test_resume_and_a_held_run_folder(tiny_run, tmp_path, capsys):
    code, _, err = run(["train-teacher", "-o", tiny_run, "--set", *TINY], capsys)
    assert code == 2 and "not empty" in errors(err)[0]
    code, _, err = run(["train-teacher", "-o", tiny_run, "--resume"], capsys)
    assert code == 0, err  # every sub-run already finished: nothing to redo
    with open(tiny_run / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run(["distill", tiny_run, "--resume"], capsys)
    assert code == 2 and "in use by another" in errors(err)[0]
    code, _, err = run(["distill", tiny_run], capsys)
    assert code == 2 and "--resume" in errors(err)[0]


@pytest.mark.parametrize("argv,message", [
    (["synthesize", "", "-o", "x.wav"], "the text is empty"),
    (["synthesize", "...!?", "-o", "x.wav"], "only punctuation"),
    (["synthesize", "hola \U0001F600", "-o", "x.wav"], "cannot read character"),
    (["synthesize", "hola", "-o", "x.mp3"], ".wav file"),
    (["synthesize", "-o", "x.wav"], "either TEXT or --file"),
    (["synthesize", "hola", "-o", "x.wav", "--voice", "no-such-dir"], "no such folder"),
    (["train-teacher", "-o", "r", "--language", "xx"], "unsupported language code 'xx'"),
    (["train-teacher", "-o", "r", "--speaker", "nobody"], "unknown speaker 'nobody'"),
    (["train-teacher", "-o", "r", "--steps", "0"], "teacher_steps must be >= 1"),
    (["distill", "no-such-run"], "no such run folder"),
    (["synthesize", "hola", "-o", "x.wav", "--temperature", "-1"],
     "--temperature must be a finite number >= 0"),
    (["evaluate", "--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["train-teacher", "-o", "r", "--set", "temperature=-0.5"],
     "temperature must be a finite number >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tiny_run, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "synthesize" and "--voice" not in argv:
        argv = argv + ["--voice", str(tiny_run)]
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = errors(err)
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.wav"))


def test_very_long_text_has_no_cap(tiny_run, tmp_path, capsys):
    text = " ".join(f"This is sentence number {i}." for i in range(40))
    code, _, err = run(["synthesize", text, "-o", tmp_path / "long.wav", "--voice", tiny_run,
                        "--method", "student-1"], capsys)
    assert code == 0, err
    assert sf.info(tmp_path / "long.wav").duration > 20 * 0.3


# ----------------------------------------------------------------------------- starter voice
def test_starter_voice_rescored_on_its_heldout_slice():
    """The shipped voice, re-scored on the held-out recordings shipped with it, gives the
    manifest's numbers (same seeds; float tolerance)."""
    from polydiff.apps.prodiff.demo import heldout_prompts
    from polydiff.speech.audio import read_audio
    from polydiff.speech.prodiff.features import compare_dtw
    from polydiff.speech.prodiff.synth import Voice

    manifest = json.loads((STARTER_VOICE.parent / "manifest.json").read_text())
    for key in ("train_command", "distill_command", "commit", "device", "wall_time_s",
                "heldout_metrics"):
        assert key in manifest
    total = sum(p.stat().st_size for p in STARTER_VOICE.rglob("*.safetensors"))
    assert total <= 8 * 2**20
    voice = Voice.load(STARTER_VOICE)
    expected = manifest["heldout_slice"]
    for p in heldout_prompts():
        ref, _ = read_audio(p["path"], sample_rate=voice.sample_rate)
        for method in ("student-2", "regression"):
            toks = voice.tokens(p["text"])
            wave = np.concatenate([voice.vocode(voice.mel(t, method, seed=0)[0], "griffin-lim")
                                   for _, t in toks])
            mcd = compare_dtw(ref, wave, voice.mel_config)["mcd_db"]
            assert mcd == pytest.approx(expected[p["name"]][method], abs=0.05)


def test_demo_quick(tmp_path, capsys):
    code, stdout, err = run(["demo", "--quick", "-o", tmp_path / "demo", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert any(k.startswith("MCD student-2") for k in res)
    numeric = [k for k, v in res.items() if isinstance(v, int | float)]
    assert numeric and all(res["units"].get(k) for k in numeric), res["units"]
    assert (tmp_path / "demo" / "audio" / "recording.wav").is_file()
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    # every numeric metric carries a unit (the tour shows it beside the value)
    assert saved["units"] and all(saved["units"].get(k) for k, v in saved["metrics"].items()
                                  if not isinstance(v, str))


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "hola.wav").is_file()
