"""polydiff for speech: score-based speech enhancement and dereverberation (SGMSE+).

Modules (import them directly; this package imports nothing heavy at import time):

* :mod:`polydiff.speech.audio`: reading/validating/resampling and atomic writing of audio;
* :mod:`polydiff.speech.data`: paired clean/noisy (or anechoic/reverberant) folder datasets;
* :mod:`polydiff.speech.metrics`: PESQ (wide-band), ESTOI and SI-SDR, per file and per folder;
* :mod:`polydiff.speech.sgmse`: SGMSE+ (representation, network, model, enhancement).
"""
