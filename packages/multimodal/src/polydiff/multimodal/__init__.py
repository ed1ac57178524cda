"""polydiff-multimodal: diffusion over paired modalities.

* :mod:`polydiff.multimodal.data`: paired image-caption data (captioned digits with measured
  attributes; loaders for Flickr/COCO/per-image-text caption folders);
* :mod:`polydiff.multimodal.text`: a word vocabulary and a text autoencoder trained in the
  repo (captions <-> a few latent tokens), optionally on top of the bundled MiniLM sentence
  encoder;
* :mod:`polydiff.multimodal.unidiffuser`: UniDiffuser (Bao et al. 2023), one transformer for
  the marginal, conditional and joint distributions of images and text.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff-multimodal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
