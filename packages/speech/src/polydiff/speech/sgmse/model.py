"""SGMSE+ and its predictive baseline as polydiff models.

Richter, Welker, Lemercier, Lay, Gerkmann (2023), "Speech Enhancement and Dereverberation with
Diffusion-based Generative Models" (SGMSE+), building on Welker, Richter, Gerkmann (2022),
"Speech Enhancement with Score-Based Generative Models in the Complex STFT Domain".

:class:`SGMSE` holds the three pieces: the score network (:class:`~.network.NCSNpp`), the
forward process (polydiff-core's :class:`~polydiff.core.processes.OUVE`, the centre being the
noisy spectrogram ``y``) and the spectrogram :class:`~.spec.Representation`. It is wrapped
once as a core :class:`~polydiff.core.denoiser.ModelDenoiser` (:meth:`SGMSE.denoiser`); core
samplers take it with ``cond={"y": y}``.

Objectives (``SGMSEConfig.objective``), all with core's
:class:`~polydiff.core.losses.DiffusionLoss` and ``t ~ U[t_eps, T]``:

* ``"score"`` (SGMSE+): the network output *is* the score ``s_theta(x_t, y, t)`` (the SGMSE
  code's ``score = -dnn(...)``, with ``scale_by_sigma=False``: no division by ``sigma(t)``),
  trained by denoising score matching ``|sigma(t) s_theta + z|^2`` with ``z`` complex standard
  normal (paper eq. 12). polydiff averages over the spectrogram instead of SGMSE's half-sum,
  a constant factor ``D / 2`` that leaves the minimiser unchanged.
* ``"epsilon"``: the network predicts ``z`` and the score is ``-output / sigma(t)`` (NCSN's
  ``scale_by_sigma`` variant); the loss ``|output - z|^2`` equals the ``"score"`` loss at the
  same score, only the network's output scale differs.
* ``"data"``: the network predicts the clean spectrogram ``x0`` (the data-prediction
  parameterisation of later SGMSE variants), loss ``|x0_theta - x0|^2``.
* ``"edm"``: EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of
  Diffusion-Based Generative Models") of the same OUVE model; later work of the SGMSE authors
  compares such training objectives for speech (Richter, de Oliveira, Gerkmann 2024,
  "Investigating Training Objectives for Generative Speech Enhancement", arXiv:2409.10753).
  polydiff's construction: core's :class:`~polydiff.core.denoiser.EDMDenoiser` works on
  the centred, rescaled state ``(x_t - y) / alpha(t) = (x0 - y) + sigma~ z`` (``sigma~ =
  sigma / alpha``), ``D = c_skip x~ + c_out F(c_in x~, c_noise) + y``, and the loss is EDM's
  ``lambda(sigma~) |D - x0|^2`` (a unit-weighted error on ``F``). ``sigma_data`` is the scale of
  ``x0 - y`` (about 0.1 for peak-normalised, compressed spectrograms of noisy speech). The
  network sees ``c_noise = log(sigma~) / 4`` as its time input. Unlike ``"score"``, whose
  output must reach ``|z| / sigma(t_eps)`` (about 50 here) with a precision of a fraction of a
  percent at ``t = T`` before it beats ``y`` itself, every target of this objective has unit
  scale. Measured on CPU (``tools/bench/README.md``): a 67k-parameter network trained for
  1500 steps gives an ``x0`` estimate better than ``y`` at every ``t`` with this objective;
  with ``"score"`` the same network's estimate is worse than ``y`` for ``t >= 0.7`` and its
  sampler diverges.

:class:`SGMSEPredictive` is the paper's predictive baseline: the same U-Net (input ``y`` only)
regresses the clean compressed spectrogram in one forward pass, loss ``|D(y) - x0|^2``.

Both save and load through polydiff-core's hub (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import Denoiser, EDMDenoiser, ModelDenoiser
from polydiff.core.losses import DiffusionLoss
from polydiff.core.nn import PretrainedMixin, register_model
from polydiff.core.processes import OUVE
from polydiff.speech.sgmse.network import PRESETS, NCSNpp, NCSNppConfig
from polydiff.speech.sgmse.spec import Representation, SpecConfig, normalize_by_noisy

__all__ = [
    "OBJECTIVES", "SGMSEConfig", "SGMSE", "PredictiveConfig", "SGMSEPredictive", "Predictive",
    "as_spec_batch",
]

#: objective name -> the core prediction type of the network output
OBJECTIVES: dict[str, str] = {"score": "score", "epsilon": "epsilon", "data": "sample",
                              "edm": "sample"}


def _network(preset: str, network: Any, conditional: bool) -> NCSNppConfig:
    if network is None:
        net = NCSNppConfig.preset(preset)
    elif isinstance(network, dict):
        net = NCSNppConfig(**network)
    elif isinstance(network, NCSNppConfig):
        net = network
    else:
        raise TypeError(f"network must be an NCSNppConfig, a dict or None, got "
                        f"{type(network).__name__}")
    return replace(net, conditional=conditional) if net.conditional != conditional else net


def _spec(spec: Any) -> SpecConfig:
    if isinstance(spec, dict):
        return SpecConfig(**spec)
    if not isinstance(spec, SpecConfig):
        raise TypeError(f"spec must be a SpecConfig or a dict, got {type(spec).__name__}")
    return spec


def as_spec_batch(spec: Tensor) -> Tensor:
    """A complex spectrogram batch as ``(B, 1, F, N)`` (``(B, F, N)`` gains the channel)."""
    if not spec.is_complex():
        raise TypeError(f"expected a complex spectrogram, got dtype {spec.dtype}")
    if spec.ndim == 3:
        return spec.unsqueeze(1)
    if spec.ndim != 4 or spec.shape[1] != 1:
        raise ValueError(f"expected a spectrogram batch (B, 1, F, N) or (B, F, N), got "
                         f"{tuple(spec.shape)}")
    return spec


class _SpecModel(PretrainedMixin, nn.Module):
    """What SGMSE and its predictive baseline share: the network, the representation and
    the wave-level loss used by training."""

    config: Any
    net: NCSNpp

    def __init__(self, spec: SpecConfig):
        super().__init__()
        self.representation = Representation(spec)

    @property
    def padding_multiple(self) -> int:
        """The frame axis is padded to a multiple of this at inference."""
        return self.net.padding_multiple

    @property
    def sample_rate(self) -> int:
        return self.representation.config.sample_rate

    def spectrogram(self, wave: Tensor) -> Tensor:
        """Waves ``(B, T)`` -> compressed complex spectrograms ``(B, 1, F, N)``."""
        return self.representation.forward(wave).unsqueeze(1)

    def waveform(self, spec: Tensor, length: int) -> Tensor:
        """Spectrograms ``(B, 1, F, N)`` -> waves ``(B, length)``."""
        return self.representation.inverse(as_spec_batch(spec)[:, 0], length)

    def loss(self, clean: Tensor, noisy: Tensor, *, generator: torch.Generator | None = None,
             reduction: str = "mean") -> Tensor:
        raise NotImplementedError

    def wave_loss(self, clean: Tensor, noisy: Tensor, *, generator: torch.Generator | None = None,
                  reduction: str = "mean") -> Tensor:
        """The training loss of paired waves ``(B, T)``: both are divided by the noisy
        peak (SGMSE's ``normalize="noisy"``), transformed, cropped to a whole multiple of
        :attr:`padding_multiple` frames (256-frame segments need no crop) and passed to
        :meth:`loss`."""
        if clean.shape != noisy.shape or clean.ndim != 2:
            raise ValueError(f"clean and noisy must be equal (B, T) batches, got "
                             f"{tuple(clean.shape)} and {tuple(noisy.shape)}")
        (noisy, clean), _ = normalize_by_noisy(noisy.float(), clean.float())
        x, y = self.spectrogram(clean), self.spectrogram(noisy)
        m = self.padding_multiple
        frames = (x.shape[-1] // m) * m
        if frames == 0:
            raise ValueError(f"training segments of {clean.shape[-1]} samples give "
                             f"{x.shape[-1]} frames; the network needs at least {m}")
        y = self.condition(y[..., :frames])
        return self.loss(x[..., :frames], y, generator=generator, reduction=reduction)

    def condition(self, y: Tensor) -> Tensor:
        """The spectrogram the model is conditioned on and centred at, given the noisy one:
        ``y`` itself (predictive models and SGMSE with ``center="noisy"``)."""
        return y


class _NoiseInput(nn.Module):
    """Feed EDM's ``c_noise`` to the network as its time embedding input: the network embeds
    ``log(t)``, so it is given ``exp(c_noise)``."""

    def __init__(self, net: NCSNpp):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor) -> Tensor:
        return self.net(x, torch.exp(c_noise), y)


@dataclass
class SGMSEConfig:
    """Configuration of :class:`SGMSE` (defaults: the paper's).

    Attributes:
        objective: ``"score"`` (SGMSE+), ``"epsilon"``, ``"data"`` or ``"edm"`` (module
            docstring).
        preset: the network size used when ``network`` is not given (``"tiny"``, ``"small"``,
            ``"paper"``); the resolved network is stored in ``network``.
        network: the :class:`~.network.NCSNppConfig` (always conditional on ``y``).
        spec: the STFT/compression settings.
        theta, sigma_min, sigma_max, t_eps, t_max: the OUVE SDE (paper: 1.5, 0.05, 0.5,
            0.03, 1).
        sigma_data: the scale of ``x0 - y`` in EDM's preconditioning (``"edm"`` only).
        center: ``"noisy"`` (SGMSE+: the process reverts to, and the network is conditioned
            on, the noisy spectrogram ``y``) or ``"predictive"`` (StoRM-style, Lemercier et
            al. 2023: both use a predictive model's estimate ``D(y)`` instead; the
            predictive model is attached with :meth:`SGMSE.attach_predictive`, it is not
            part of this model's weights).
    """

    objective: str = "score"
    preset: str = "small"
    network: NCSNppConfig | None = None
    spec: SpecConfig = field(default_factory=SpecConfig)
    center: str = "noisy"
    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    t_eps: float = 0.03
    t_max: float = 1.0
    sigma_data: float = 0.1

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got "
                             f"{self.objective!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        self.network = _network(self.preset, self.network, conditional=True)
        self.spec = _spec(self.spec)
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if not (self.theta > 0 and 0 < self.t_eps < self.t_max):
            raise ValueError("need theta > 0 and 0 < t_eps < t_max")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")
        if self.center not in ("noisy", "predictive"):
            raise ValueError(f"center must be 'noisy' or 'predictive', got {self.center!r}")
        if self.spec.n_freq % self.network_multiple:
            raise ValueError(f"{self.spec.n_freq} frequency bins are not divisible by the "
                             f"network's padding multiple {self.network_multiple}")

    @property
    def network_multiple(self) -> int:
        assert self.network is not None
        return 2 ** (len(self.network.channel_mults) - 1)


@register_model
class SGMSE(_SpecModel):
    """SGMSE+ (Richter et al. 2023): score network + OUVE process + representation.

    * :meth:`denoiser`: the core denoiser (``prediction_type`` from the objective);
      sample with core samplers and ``cond={"y": y}`` (see :mod:`.enhance`).
    * :meth:`loss`: the objective on compressed complex spectrograms ``(B, 1, F, N)``.
    * ``forward(x, t, y)``: the raw network output.
    """

    config_class = SGMSEConfig

    def __init__(self, config: SGMSEConfig | None = None):
        config = SGMSEConfig() if config is None else config
        super().__init__(config.spec)
        self.config = config
        assert config.network is not None
        self.net = NCSNpp(config.network)
        self.process = OUVE(theta=config.theta, sigma_min=config.sigma_min,
                            sigma_max=config.sigma_max, t_eps=config.t_eps,
                            t_max=config.t_max)
        # "snr" on the x0 error is sigma^2 on the score error: SGMSE+'s |sigma s + z|^2
        weighting = {"data": "uniform", "edm": "edm"}.get(config.objective, "snr")
        self.objective = DiffusionLoss(self.process, target=self.prediction_type,
                                       weighting=weighting, time_sampling="uniform",
                                       dim_reduction="mean", sigma_data=config.sigma_data)

    @property
    def prediction_type(self) -> str:
        """The core prediction type of the network output."""
        return OBJECTIVES[self.config.objective]

    def denoiser(self) -> Denoiser:
        """The network wrapped once as a core denoiser conditioned on ``y``
        (:class:`~polydiff.core.denoiser.EDMDenoiser` for ``"edm"``)."""
        if self.config.objective == "edm":
            return EDMDenoiser(_NoiseInput(self.net), self.process,
                               sigma_data=self.config.sigma_data)
        return ModelDenoiser(self.net, self.process, prediction_type=self.prediction_type)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.net(x, t, y)

    @property
    def predictive(self) -> SGMSEPredictive | None:
        """The attached predictive model (``center="predictive"``), or ``None``."""
        return self.__dict__.get("_predictive")

    def attach_predictive(self, model: SGMSEPredictive | None) -> SGMSE:
        """Attach the (frozen) predictive model whose estimate a ``center="predictive"``
        model is centred on; it is not a registered submodule (not saved, not trained)."""
        if model is not None:
            if not isinstance(model, SGMSEPredictive):
                raise TypeError(f"expected an SGMSEPredictive, got {type(model).__name__}")
            if model.representation.config != self.representation.config:
                raise ValueError("the predictive model uses other STFT settings")
            model.eval().requires_grad_(False)
        self.__dict__["_predictive"] = model
        return self

    def condition(self, y: Tensor) -> Tensor:
        """``y`` for ``center="noisy"``; the attached predictive model's estimate ``D(y)``
        (computed without gradients) for ``center="predictive"``."""
        if self.config.center == "noisy":
            return y
        pred = self.predictive
        if pred is None:
            raise ValueError("this SGMSE model is centred on a predictive estimate: attach "
                             "its predictive model (attach_predictive, or --predictive)")
        pred.to(y.device)
        with torch.no_grad():
            mult = pred.padding_multiple
            n = y.shape[-1]
            pad = (-n) % mult
            yp = torch.nn.functional.pad(y, (0, pad)) if pad else y
            return pred(yp)[..., :n]

    def loss(self, clean: Tensor, noisy: Tensor, *, t: Tensor | float | None = None,
             eps: Tensor | None = None, generator: torch.Generator | None = None,
             reduction: str = "mean") -> Tensor:
        """The objective on clean ``x0`` and noisy ``y`` spectrograms ``(B, 1, F, N)``:
        ``x_t ~ q(x_t | x0, y)`` at ``t ~ U[t_eps, T]`` (or the given ``t``/``eps``)."""
        clean, noisy = as_spec_batch(clean), as_spec_batch(noisy)
        if clean.shape != noisy.shape:
            raise ValueError(f"clean {tuple(clean.shape)} and noisy {tuple(noisy.shape)} "
                             "spectrograms differ in shape")
        return self.objective(self.denoiser(), clean, cond={"y": noisy}, t=t, eps=eps,
                              generator=generator, reduction=reduction)


@dataclass
class PredictiveConfig:
    """Configuration of :class:`SGMSEPredictive` (the network sees ``y`` only)."""

    preset: str = "small"
    network: NCSNppConfig | None = None
    spec: SpecConfig = field(default_factory=SpecConfig)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        self.network = _network(self.preset, self.network, conditional=False)
        self.spec = _spec(self.spec)


@register_model
class SGMSEPredictive(_SpecModel):
    """The predictive baseline of SGMSE+ (Richter et al. 2023, Sec. V): the NCSN++-style
    network maps the noisy spectrogram ``y`` to the clean one in one pass (its time input
    is held at ``t = 1``), trained with ``|D(y) - x0|^2``."""

    config_class = PredictiveConfig

    def __init__(self, config: PredictiveConfig | None = None):
        config = PredictiveConfig() if config is None else config
        super().__init__(config.spec)
        self.config = config
        assert config.network is not None
        self.net = NCSNpp(config.network)

    def forward(self, y: Tensor) -> Tensor:
        """The clean spectrogram estimate ``D(y)`` of ``(B, 1, F, N)`` spectrograms."""
        y = as_spec_batch(y)
        return self.net(y, torch.ones(y.shape[0], device=y.device))

    def loss(self, clean: Tensor, noisy: Tensor, *, generator: torch.Generator | None = None,
             reduction: str = "mean") -> Tensor:
        """Mean squared error ``|D(y) - x0|^2`` over the spectrogram, per example reduced
        by ``reduction`` (``generator`` is unused: the objective is deterministic)."""
        clean, noisy = as_spec_batch(clean), as_spec_batch(noisy)
        per = (self(noisy) - clean).abs().square().reshape(clean.shape[0], -1).mean(1)
        if reduction == "none":
            return per
        return per.mean() if reduction == "mean" else per.sum()


Predictive = SGMSEPredictive
