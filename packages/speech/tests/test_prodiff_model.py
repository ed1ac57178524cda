"""ProDiff end to end on a tiny model: corpus, training through core's Trainer, progressive
distillation, every sampling method and vocoder, voice files, bad input; the LJSpeech
loader on a fixture laid out like LJSpeech."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.speech.prodiff.data import (
    PaddedBatches,
    PhonemeVocab,
    build_corpus,
    formant_utterances,
    ljspeech_utterances,
    split_names,
)
from polydiff.speech.prodiff.model import (
    AcousticConfig,
    DiffVocoder,
    ProDiffAcoustic,
    VocoderConfig,
)
from polydiff.speech.prodiff.synth import METHODS, Voice
from polydiff.speech.prodiff.text import Token
from polydiff.speech.prodiff.train import (
    DistillSettings,
    TrainSettings,
    distill_students,
    teacher_grid,
    train_acoustic,
    train_vocoder,
)

pytest.importorskip("espeakng_loader")

TINY = dict(hidden=16, encoder_layers=1, heads=2, ffn_hidden=16, predictor_hidden=16,
            denoiser_channels=8, denoiser_layers=2, time_hidden=16)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(formant_utterances(6, "en-us", seed=1))


@pytest.fixture(scope="module")
def voice(corpus, tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("prodiff-run")
    cfg = AcousticConfig(symbols=corpus.symbols, language="en-us", mel_mean=tuple(corpus.mel_mean),
                         mel_std=tuple(corpus.mel_std), **TINY)
    teacher = ProDiffAcoustic(cfg)
    train_acoustic(teacher, corpus, run / "teacher",
                   TrainSettings(steps=4, batch_size=2, progress=False, log_every=2,
                                 ckpt_every=2))
    reg = ProDiffAcoustic(AcousticConfig(**{**cfg.__dict__, "decoder": "regression"}))
    train_acoustic(reg, corpus, run / "reg", TrainSettings(steps=2, batch_size=2,
                                                            progress=False))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    students = distill_students(teacher, corpus, run / "distill",
                                DistillSettings(steps=2, batch_size=2, progress=False))
    for k, v in teacher.state_dict().items():  # the teacher is left unchanged
        torch.testing.assert_close(v, before[k])
    voc = DiffVocoder(VocoderConfig(channels=8, layers=2, time_hidden=16,
                                    mel_mean=tuple(corpus.mel_mean),
                                    mel_std=tuple(corpus.mel_std)))
    train_vocoder(voc, corpus, run / "voc",
                  TrainSettings(steps=2, batch_size=2, segment_frames=8, progress=False))
    return Voice(teacher, students, reg, voc, {"speaker": "formant"}), run


def test_students_halve_the_steps(voice):
    v, run = voice
    assert sorted(v.students) == [1, 2]
    assert (run / "distill" / "4to2" / "checkpoints").is_dir()
    assert (run / "distill" / "2to1" / "checkpoints").is_dir()
    assert teacher_grid(4)[::2].tolist() == teacher_grid(2).tolist()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_vocoder_synthesizes(voice, method):
    v, _ = voice
    for voc in v.vocoders():
        s = v.synthesize("Hello there. How are you?", method, voc, seed=1)
        hop = v.mel_config.hop_length
        assert s.logmel.shape[0] == int(s.durations.sum())
        assert abs(len(s.wave) - s.logmel.shape[0] * hop) <= 2 * hop  # 2 sentences
        assert np.isfinite(s.wave).all() and np.abs(s.wave).max() <= 1.0
    # the same seed gives the same mel; diffusion methods depend on the seed
    a = v.mel(v.tokens("Hello.")[0][1], method, seed=3)[0]
    torch.testing.assert_close(a, v.mel(v.tokens("Hello.")[0][1], method, seed=3)[0])


def test_durations_given_are_used_and_pace_scales(voice):
    v, _ = voice
    toks = v.tokens("Go home now.")[0][1]
    d = torch.full((len(toks),), 3)
    lm, dur = v.mel(toks, "student-2", durations=d)
    assert lm.shape[0] == 3 * len(toks) and dur.tolist() == d.tolist()
    slow = v.mel(toks, "student-2", pace=3.0)[1]
    fast = v.mel(toks, "student-2", pace=1.0)[1]
    assert int(slow.sum()) >= int(fast.sum())


def test_long_text_is_spoken_sentence_by_sentence(voice):
    v, _ = voice
    text = " ".join(["One more sentence."] * 25)
    s = v.synthesize(text, "student-1")
    one = v.synthesize("One more sentence.", "student-1")
    assert len(s.wave) == pytest.approx(25 * len(one.wave), rel=0.2)


@pytest.mark.parametrize("text,message", [("", "empty"), ("...!?", "only punctuation"),
                                          ("hi \U0001F600", "cannot read character")])
def test_bad_text_is_one_line(voice, text, message):
    v, _ = voice
    with pytest.raises(ValueError, match=message):
        v.synthesize(text)


def test_temperature_scales_the_initial_noise_of_the_ddim_methods(voice):
    """At temperature T the DDIM methods equal core's DDIM run by hand from T times the seeded
    prior draw; T = 0 no longer depends on the seed; ddpm-50 and regression ignore T."""
    from polydiff.core.samplers import sample_ddim

    v, _ = voice
    toks = v.tokens("Hello world.")[0][1]
    ids, stress, word = v.vocab.encode(toks)
    mask = torch.ones((1, len(toks)), dtype=torch.bool)
    out = v.acoustic(ids[None], stress[None], word[None], mask)
    cond = out["cond"]
    g = torch.Generator().manual_seed(5)
    x = v.acoustic.process.prior_sample((1, v.acoustic.config.n_mels, cond.shape[-1]),
                                        generator=g)
    for method, net in (("teacher-4", v.acoustic.net), ("student-2", v.students[2])):
        steps = int(method.split("-")[1])
        for temp in (0.0, 0.5, 1.0):
            ref = sample_ddim(v.acoustic.denoiser(net), temp * x, teacher_grid(steps),
                              cond={"cond": cond}, disable=True)
            ref = v.acoustic.denormalize_mel(ref[0].T)
            got = v.mel(toks, method, seed=5, temperature=temp)[0]
            torch.testing.assert_close(got, ref)
        # temperature 1 is the plain sampler (the default of a voice without a setting)
        torch.testing.assert_close(v.mel(toks, method, seed=5)[0],
                                   v.mel(toks, method, seed=5, temperature=1.0)[0])
        cold = [v.mel(toks, method, seed=s, temperature=0.0)[0] for s in (1, 2)]
        torch.testing.assert_close(cold[0], cold[1])
        warm = [v.mel(toks, method, seed=s, temperature=1.0)[0] for s in (1, 2)]
        assert (warm[0] - warm[1]).abs().max() > 1e-4
    for method in ("ddpm-50", "regression"):
        torch.testing.assert_close(v.mel(toks, method, seed=5, temperature=0.0)[0],
                                   v.mel(toks, method, seed=5, temperature=1.0)[0])


def test_voice_default_temperature_and_bad_values(voice, tmp_path):
    v, _ = voice
    toks = v.tokens("Go home now.")[0][1]
    w = Voice(v.acoustic, v.students, v.regression, v.vocoder, {"temperature": 0.25})
    assert w.temperature == 0.25 and v.temperature == 1.0
    torch.testing.assert_close(w.mel(toks, "student-2", seed=2)[0],
                               v.mel(toks, "student-2", seed=2, temperature=0.25)[0])
    w.save(tmp_path / "voice")
    assert Voice.load(tmp_path / "voice").temperature == 0.25
    for bad in (-0.5, float("nan"), float("inf"), "warm"):
        with pytest.raises(ValueError, match="temperature must be"):
            v.mel(toks, "student-2", temperature=bad)


def test_tune_temperature_picks_the_lowest_validation_mcd(voice, corpus):
    from polydiff.speech.prodiff.evaluate import tune_temperature

    v, _ = voice
    res = tune_temperature(v, corpus, grid=(0.0, 1.0), max_prompts=2)
    s2 = [r for r in res["table"] if r["method"] == "student-2"]
    assert [r["temperature"] for r in s2] == [0.0, 1.0]
    assert {r["method"] for r in res["table"]} == {"student-2", "teacher-4"}
    assert res["choice"] == min(s2, key=lambda r: r["mcd_db"])["temperature"]
    assert all(r["vocoder"] == "griffin-lim" and r["prompts"] == 2 for r in res["table"])
    with pytest.raises(ValueError, match="empty"):
        tune_temperature(v, corpus, grid=())


def test_voice_round_trip_in_float16(voice, tmp_path):
    v, _ = voice
    v.save(tmp_path / "voice", half=True)
    w = Voice.load(tmp_path / "voice")
    assert w.methods() == v.methods() and w.vocoders() == v.vocoders()
    toks = v.tokens("Hello world.")[0][1]
    a, b = v.mel(toks, "student-2")[0], w.mel(toks, "student-2")[0]
    assert (a - b).abs().max() < 0.2  # float16 weights
    with pytest.raises(FileNotFoundError, match="not a prodiff voice"):
        Voice.load(tmp_path)


def test_training_resumes_exactly(corpus, tmp_path):
    cfg = AcousticConfig(symbols=corpus.symbols, language="en-us", mel_mean=tuple(corpus.mel_mean),
                         mel_std=tuple(corpus.mel_std), **TINY)
    torch.manual_seed(0)
    a = ProDiffAcoustic(cfg)
    init = {k: v.clone() for k, v in a.state_dict().items()}
    budget = TrainSettings(steps=4, batch_size=2, progress=False, ema=None, ckpt_every=2)
    train_acoustic(a, corpus, tmp_path / "a", budget)
    b = ProDiffAcoustic(cfg)
    b.load_state_dict(init)
    train_acoustic(b, corpus, tmp_path / "b", dataclasses.replace(budget, steps=2))
    c = ProDiffAcoustic(cfg)
    c.load_state_dict(init)
    train_acoustic(c, corpus, tmp_path / "b", budget)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(c.state_dict()[k], v)


def test_padded_batches_and_vocab(corpus):
    data = PaddedBatches(corpus, seed=0)
    b = data.get(torch.arange(4))
    assert b["mel"].shape[:2] == (4, 80) and b["ids"].shape[0] == 4
    assert torch.equal(b["frame_mask"].sum(1), (b["durations"] * b["mask"]).sum(1))
    assert float(b["mel"][~b["frame_mask"][:, None].expand_as(b["mel"])].abs().sum()) == 0.0
    vocab = PhonemeVocab(corpus.symbols)
    ids, _, _ = vocab.encode([Token("^"), Token("ɑː"), Token("qq"), Token(".")])
    assert ids[0] == vocab.index["^"] and ids[-1] == vocab.index["."]
    assert ids[2] == vocab.index["<unk>"]
    assert vocab.lookup("ɑ") != vocab.index["<unk>"] or "ɑ" not in vocab.index


def test_split_names_is_stable_and_disjoint():
    names = [f"p{i}" for i in range(50)]
    a = split_names(names, 5, 7)
    b = split_names(list(reversed(names)), 5, 7)
    assert a == b and len(a["test"]) == 7 and len(a["valid"]) == 5
    assert not set(a["test"]) & set(a["train"]) and not set(a["valid"]) & set(a["train"])
    # adding prompts never moves an old test prompt into training
    c = split_names(names + ["x1", "x2"], 5, 7)
    assert not set(a["test"]) & set(c["train"])


def test_ljspeech_layout_fixture(tmp_path):
    from polydiff.speech.espeak import synthesize

    root = tmp_path / "LJSpeech-1.1"
    (root / "wavs").mkdir(parents=True)
    rows = [("LJ001-0001", "Printing, in the only sense.", "Printing, in the only sense."),
            ("LJ001-0002", "It is 1 of 2 arts.", "It is one of two arts.")]
    for name, _, text in rows:
        sf.write(root / "wavs" / f"{name}.wav", synthesize(text, "en-us"), 22050)
    (root / "metadata.csv").write_text("".join(f"{a}|{b}|{c}\n" for a, b, c in rows),
                                       encoding="utf-8")
    utts = ljspeech_utterances(root, "en-us", sample_rate=8000)
    assert [u.name for u in utts] == ["LJ001-0001", "LJ001-0002"]
    assert utts[1].text == "It is one of two arts." and utts[0].sample_rate == 8000
    corpus = build_corpus(utts, align_rounds=2)
    for item in corpus.items:
        assert int(item["durations"].sum()) == item["mel"].shape[0]
        assert (item["durations"] >= 1).all()
    (root / "wavs" / "LJ001-0002.wav").unlink()
    with pytest.raises(FileNotFoundError, match="LJ001-0002.wav"):
        ljspeech_utterances(root)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        ljspeech_utterances(tmp_path)
