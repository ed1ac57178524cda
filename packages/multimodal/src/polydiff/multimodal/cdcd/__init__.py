"""Conditional Discrete Contrastive Diffusion (CDCD), Zhu et al. (2022), "Discrete
Contrastive Diffusion for Cross-Modal Music and Image Generation".

* :mod:`~polydiff.multimodal.cdcd.data`: class-conditional digit tokens (scikit-learn's real
  8x8 digits at a few grey levels);
* :mod:`~polydiff.multimodal.cdcd.model`: the token network (core's DiffusionTransformer over
  one-hot tokens) with core's mask-and-replace process and ancestral sampler;
* :mod:`~polydiff.multimodal.cdcd.contrastive`: the step-wise parallel and sample-wise
  auxiliary contrastive terms with intra- and inter-sample negatives (a bounded InfoNCE);
* :mod:`~polydiff.multimodal.cdcd.train`: the objective and the engine's Trainer;
* :mod:`~polydiff.multimodal.cdcd.evaluation`: correspondence (classifier accuracy) and
  quality of generated digits.
"""

from polydiff.multimodal.cdcd.contrastive import (
    NEGATIVES,
    VARIANTS,
    ContrastiveSettings,
    contrastive_term,
    info_nce,
    inter_negatives,
    intra_negatives,
    negatives,
)
from polydiff.multimodal.cdcd.data import (
    TokenSet,
    TokenSplits,
    dequantise_digits,
    load_digit_tokens,
    quantise_digits,
)
from polydiff.multimodal.cdcd.evaluation import DigitJudge, level_tv, nn_distance, score_digits
from polydiff.multimodal.cdcd.model import CDCDConfig, CDCDModel, TokenNetwork, load_cdcd
from polydiff.multimodal.cdcd.train import TrainSettings, cdcd_objective, token_tensors, train_cdcd

__all__ = [
    "NEGATIVES", "VARIANTS", "ContrastiveSettings", "contrastive_term", "info_nce",
    "inter_negatives", "intra_negatives", "negatives", "TokenSet", "TokenSplits",
    "dequantise_digits", "load_digit_tokens", "quantise_digits", "DigitJudge", "level_tv",
    "nn_distance", "score_digits", "CDCDConfig", "CDCDModel", "TokenNetwork", "load_cdcd",
    "TrainSettings", "cdcd_objective", "token_tensors", "train_cdcd",
]
