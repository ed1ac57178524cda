"""SGMSE+: score-based speech enhancement and dereverberation in the complex STFT domain.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models"; Welker, Richter, Gerkmann (2022), "Speech Enhancement with
Score-Based Generative Models in the Complex STFT Domain".

* :mod:`.spec`: the compressed complex STFT (:class:`SpecConfig`, :class:`Representation`);
* :mod:`.network`: the NCSN++-style U-Net (:class:`NCSNppConfig`, :class:`NCSNpp`);
* :mod:`.model`: :class:`SGMSE` (network + core OUVE process + representation, wrapped as a
  core denoiser) and the predictive baseline :class:`SGMSEPredictive`;
* :mod:`.enhance`: :func:`enhance` (core samplers only, chunked cross-fading for long files),
  :func:`enhance_predictive`, :func:`measure_rtf`;
* :mod:`.train`: :func:`train_sgmse` / :func:`train_predictive` on core's Trainer.

Names are imported lazily (``from polydiff.speech.sgmse import SGMSE`` loads torch then).
The function ``enhance`` shares its name with its module: import it as
``from polydiff.speech.sgmse.enhance import enhance``.
"""

from __future__ import annotations

from polydiff.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # spec
    "SpecConfig": "spec", "Representation": "spec", "to_spec": "spec", "to_wave": "spec",
    "compress": "spec", "decompress": "spec", "pad_frames": "spec", "crop_frames": "spec",
    # network
    "NCSNppConfig": "network", "NCSNpp": "network", "SpecAdapter": "network",
    "PRESETS": "network",
    # model
    "SGMSEConfig": "model", "SGMSE": "model", "PredictiveConfig": "model",
    "SGMSEPredictive": "model", "Predictive": "model", "OBJECTIVES": "model",
    # enhance
    "SAMPLERS": "enhance", "EnhanceStats": "enhance", "sample_spec": "enhance",
    "enhance_predictive": "enhance",
    "enhance_with_stats": "enhance", "measure_rtf": "enhance",
    # train
    "TrainResult": "train", "train_sgmse": "train", "train_predictive": "train",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{mod}" for name, mod in _EXPORTS.items()})
