"""ProDiff: fast diffusion text-to-speech (Huang et al. 2022, "ProDiff: Progressive Fast
Diffusion Model for High-Quality Text-to-Speech") on polydiff's engine.

Modules (each imports what it needs; this package imports nothing heavy):

* :mod:`~polydiff.speech.prodiff.text`: the text front end (espeak-ng phonemes for any language
  it speaks, stress, word boundaries, punctuation; numbers and abbreviations read out);
* :mod:`~polydiff.speech.prodiff.features`: log-mel, Griffin-Lim, YIN F0, energy, MCD and F0
  error after DTW;
* :mod:`~polydiff.speech.prodiff.align`: monotonic alignment search (Glow-TTS), the Gaussian
  hard-EM aligner, the length regulator;
* :mod:`~polydiff.speech.prodiff.data`: corpora (real prompts, LJSpeech layout, espeak-ng
  formant speech with phoneme timings), features, durations, batches;
* :mod:`~polydiff.speech.prodiff.model`: the acoustic model (FFT-block encoder, variance
  adaptor, x0-predicting WaveNet decoder on ProDiff's VP schedule) and the diffusion vocoder;
* :mod:`~polydiff.speech.prodiff.train`: teacher, regression baseline, vocoder and progressive
  distillation through core's Trainer and :mod:`polydiff.core.distill`;
* :mod:`~polydiff.speech.prodiff.synth`: :class:`Voice`, synthesis by every method;
* :mod:`~polydiff.speech.prodiff.evaluate`: held-out scoring and speed;
* :mod:`~polydiff.speech.prodiff.recipe`: the settings and stages of a voice (the app's).

There is no process, loss, sampler or training loop here: they are polydiff-core's.
"""

from polydiff.core.lazy import lazy_exports

__all__ = ["Voice", "TextFrontEnd", "ProDiffAcoustic", "DiffVocoder", "VoiceSettings"]

_HOME = {"Voice": "polydiff.speech.prodiff.synth",
         "TextFrontEnd": "polydiff.speech.prodiff.text",
         "ProDiffAcoustic": "polydiff.speech.prodiff.model",
         "DiffVocoder": "polydiff.speech.prodiff.model",
         "VoiceSettings": "polydiff.speech.prodiff.recipe"}

__getattr__, __dir__ = lazy_exports(__name__, _HOME, frozenset(
    {"text", "features", "align", "data", "model", "train", "synth", "evaluate", "recipe"}))
