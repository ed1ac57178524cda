"""Backbones for polydiff's denoisers: shape-agnostic networks with addressable blocks.

* :class:`UNet` (:mod:`~polydiff.core.nn.unet`): the DDPM U-Net for 1-D, 2-D and 3-D signals;
* :class:`DiffusionTransformer` (:mod:`~polydiff.core.nn.transformer`): DiT (adaLN-Zero) or
  U-ViT (time tokens, long skips) over tokens of any modality, with :func:`patchify` /
  :func:`unpatchify`;
* :class:`MultiModalUViT` (:mod:`~polydiff.core.nn.uvit`): UniDiffuser's U-ViT over several
  modalities, each with its own time token, called as ``model(xs, ts)`` with mappings;
* :class:`WaveNet` (:mod:`~polydiff.core.nn.wavenet`): DiffWave's dilated residual network;
* :class:`GraphTransformer` (:mod:`~polydiff.core.nn.graph`): a masked graph transformer over a
  :class:`GraphLayout` (node features + free adjacency entries as one flat state), as a score
  network or a time-conditioned graph regressor;
* time embeddings (:mod:`~polydiff.core.nn.embeddings`);
* :func:`save_pretrained` / :func:`from_pretrained` (:mod:`~polydiff.core.nn.hub`):
  ``config.json`` + ``model.safetensors`` directories, written atomically.

Every backbone is called as ``model(x, t, *, class_labels=None, cond=None)`` with per-sample
``t`` of shape ``(B,)``, and lists its blocks with ``named_blocks()`` (names that are also
``get_submodule`` paths, for caching and quantisation hooks).
"""

from polydiff.core.nn.embeddings import (
    GaussianFourierEmbedding,
    LabelEmbedding,
    SinusoidalEmbedding,
    TimestepMLP,
)
from polydiff.core.nn.graph import (
    GraphLayout,
    GraphTransformer,
    GraphTransformerConfig,
    dag_free_edges,
)
from polydiff.core.nn.hub import (
    PretrainedMixin,
    from_pretrained,
    model_registry,
    register_model,
    save_pretrained,
)
from polydiff.core.nn.transformer import (
    DiffusionTransformer,
    DiffusionTransformerConfig,
    patchify,
    unpatchify,
)
from polydiff.core.nn.unet import UNet, UNetConfig
from polydiff.core.nn.uvit import MultiModalUViT, MultiModalUViTConfig
from polydiff.core.nn.wavenet import WaveNet, WaveNetConfig

__all__ = [
    "SinusoidalEmbedding", "GaussianFourierEmbedding", "TimestepMLP", "LabelEmbedding",
    "UNet", "UNetConfig", "DiffusionTransformer", "DiffusionTransformerConfig", "patchify",
    "unpatchify", "MultiModalUViT", "MultiModalUViTConfig", "WaveNet", "WaveNetConfig",
    "PretrainedMixin", "save_pretrained", "from_pretrained", "model_registry", "register_model",
    "GraphLayout", "GraphTransformer", "GraphTransformerConfig", "dag_free_edges",
]
