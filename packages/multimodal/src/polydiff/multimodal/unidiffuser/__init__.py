"""UniDiffuser (Bao et al. 2023, "One Transformer Fits All Distributions in Multi-Modal
Diffusion at Scale"): one transformer for the marginal, conditional and joint distributions of
paired images and texts, selected by the timestep of each modality.

* :mod:`~polydiff.multimodal.unidiffuser.model`: :class:`UniDiffuser` (network + codecs),
  save/load;
* :mod:`~polydiff.multimodal.unidiffuser.train`: training (joint objective, and the dedicated
  text->image / image->text baselines with the same compute);
* :mod:`~polydiff.multimodal.unidiffuser.sampling`: the modes (t2i, i2t, joint, marginals,
  chains) with classifier-free guidance by the model's own marginal;
* :mod:`~polydiff.multimodal.unidiffuser.metrics`: scoring on the captioned digits.

The engine parts (per-modality timesteps, the multi-modal U-ViT, DPM-Solver++, guidance, the
training loop) live in polydiff-core.
"""

from polydiff.multimodal.unidiffuser.model import (
    TASKS,
    UniDiffuser,
    UniDiffuserConfig,
    load_unidiffuser,
)
from polydiff.multimodal.unidiffuser.sampling import MODES, Samples, sample
from polydiff.multimodal.unidiffuser.train import (
    DiffusionSettings,
    TextSettings,
    train_text_autoencoder,
    train_unidiffuser,
)

__all__ = ["UniDiffuser", "UniDiffuserConfig", "load_unidiffuser", "TASKS", "MODES", "Samples",
           "sample", "DiffusionSettings", "TextSettings", "train_text_autoencoder",
           "train_unidiffuser"]
