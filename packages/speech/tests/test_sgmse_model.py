"""SGMSE+ as a polydiff model: config and save/load, the objective against its closed-form
minimum, and the whole sampling path (core denoiser, complex adapter, conditioning on ``y``,
core samplers) against the closed-form output distribution of an exact Gaussian score."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from polydiff.speech.sgmse.enhance import sample_spec
from polydiff.speech.sgmse.model import (
    SGMSE,
    PredictiveConfig,
    SGMSEConfig,
    SGMSEPredictive,
)
from polydiff.speech.sgmse.network import NCSNppConfig, SpecAdapter
from polydiff.speech.sgmse.spec import SpecConfig


class ExactGaussian(nn.Module):
    """The exact prediction for clean spectrograms ``x0 ~ CN(mu, s^2)`` (independent complex
    entries) under the OUVE process centred on ``y``, as a real-channel backbone for
    :class:`SpecAdapter`: ``x_t | y ~ CN(m_t, v_t)`` with ``m_t = y + a (mu - y)``, ``v_t =
    a^2 s^2 + sigma^2``; score ``-(x - m_t) / v_t``, ``E[eps | x_t] = sigma (x - m_t) / v_t``,
    ``E[x0 | x_t] = mu + a s^2 (x - m_t) / v_t``."""

    def __init__(self, process, mu: Tensor, s: float, kind: str, score_error: float = 0.0):
        super().__init__()
        self.process, self.mu, self.s, self.kind = process, mu, s, kind
        self.score_error = score_error  # a relative error added to the exact score

    def forward(self, h: Tensor, log_t: Tensor) -> Tensor:
        h = h.double()
        x = torch.complex(h[:, 0:1], h[:, 1:2])
        y = torch.complex(h[:, 2:3], h[:, 3:4])
        t = torch.exp(log_t.double())
        a = self.process.alpha(t).reshape(-1, 1, 1, 1)
        sig = self.process.sigma(t).reshape(-1, 1, 1, 1)
        v = a * a * self.s**2 + sig * sig
        d = x - (y + a * (self.mu - y))
        score = -d / v * (1.0 + self.score_error)
        out = {"score": score, "epsilon": -sig * score,
               "sample": self.mu - a * self.s**2 * score}[self.kind]
        return torch.cat([out.real, out.imag], dim=1).float()


class ExactGaussianEDM(nn.Module):
    """The exact EDM network output ``F`` for the same Gaussian: the backbone receives ``c_in
    x~`` (and ``y``) with ``x~ = (x_t - y) / alpha = (x0 - y) + sigma~ z`` and ``c_noise = log
    (sigma~) / 4`` as its log-time, so ``x~ ~ CN(mu - y, s^2 + sigma~^2)`` and ``E[x0 - y |
    x~] = (mu - y) + s^2 (x~ - (mu - y)) / (s^2 + sigma~^2)``; ``F = (E[x0 - y | x~] - c_skip
    x~) / c_out``. Built from the EDM formulas of Karras et al. (2022), independently of
    core's implementation."""

    def __init__(self, mu: Tensor, s: float, sigma_data: float, score_error: float = 0.0):
        super().__init__()
        self.mu, self.s, self.sd, self.score_error = mu, s, sigma_data, score_error

    def forward(self, h: Tensor, c_noise: Tensor) -> Tensor:
        h = h.double()
        sig = torch.exp(4.0 * c_noise.double()).reshape(-1, 1, 1, 1)
        root = torch.sqrt(sig * sig + self.sd**2)
        xt = torch.complex(h[:, 0:1], h[:, 1:2]) * root  # undo c_in
        y = torch.complex(h[:, 2:3], h[:, 3:4])
        m = self.mu - y
        x0t = m + self.s**2 * (xt - m) / (self.s**2 + sig * sig)
        c_skip, c_out = self.sd**2 / root**2, sig * self.sd / root
        out = (x0t - c_skip * xt) / c_out * (1.0 + self.score_error)
        return torch.cat([out.real, out.imag], dim=1).float()


def _gaussian_setup(objective: str, s: float = 1.0, seed: int = 0, shape=(4, 1, 64, 64)):
    model = SGMSE(SGMSEConfig(preset="tiny", objective=objective))
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 * torch.randn(*shape, dtype=torch.complex64, generator=g)
    y = mu + 2.0 * torch.randn(*shape, dtype=torch.complex64, generator=g)
    mu128 = mu.to(torch.complex128)
    backbone = (ExactGaussianEDM(mu128, s, model.config.sigma_data) if objective == "edm"
                else ExactGaussian(model.process, mu128, s, model.prediction_type))
    model.net = SpecAdapter(backbone)
    return model, mu, y


def _closed_form(process, s: float, stochastic: bool) -> tuple[float, float]:
    """``(c, var)`` of the output ``x ~ CN(mu + c (y - mu), var)`` of the exact reverse
    process started from SGMSE+'s prior ``CN(y, sigma(T)^2)`` (which neglects ``alpha(T) (x0
    - y)``) and run to ``t = 0``. The deviation from ``p_t`` is propagated by the linear
    reverse dynamics: with ``v_t' = 2 f v_t + g^2``, the mean deviation is scaled by
    ``Phi = a_T s^2 / v_T`` (reverse SDE) or ``Psi = s / sqrt(v_T)`` (probability flow),
    the variance deviation ``-a_T^2 s^2`` by ``Phi^2`` (SDE)."""
    T = torch.tensor(process.t_max, dtype=torch.float64)
    a, sig2 = float(process.alpha(T)), float(process.sigma(T)) ** 2
    v = a * a * s * s + sig2
    if stochastic:
        phi = a * s * s / v
        return phi * a, s * s - phi**2 * a * a * s * s
    psi = s / math.sqrt(v)
    return psi * a, psi**2 * sig2


def _moments(x: Tensor, mu: Tensor, y: Tensor, c: float, var: float) -> tuple[float, ...]:
    """``(c_hat, |mean residual|, E|r|^2, E[Re(r)^2])`` of samples ``x`` against
    ``CN(mu + c (y - mu), var)``: ``c_hat`` regresses ``x - mu`` on ``y - mu``."""
    x, mu, y = x.to(torch.complex128), mu.to(torch.complex128), y.to(torch.complex128)
    dy = y - mu
    c_hat = float((((x - mu) * dy.conj()).real.sum()) / dy.abs().square().sum())
    r = (x - mu - c * dy) / math.sqrt(var)  # standardised residual: CN(0, 1) if right
    return (c_hat, abs(complex(r.mean())), float(r.abs().square().mean()),
            float(r.real.square().mean()))


@pytest.mark.parametrize(("objective", "sampler", "steps", "tol"), [
    ("score", "pc", 30, 0.04),        # SGMSE+'s sampler with the paper's N = 30
    ("data", "pc", 30, 0.04),
    ("epsilon", "em", 60, 0.04),
    ("data", "dpmpp_2m", 20, 0.03),
    ("epsilon", "heun", 15, 0.03),
    ("score", "ode", 0, 0.03),        # adaptive Dormand-Prince
    ("edm", "pc", 30, 0.04),          # EDM preconditioning, SGMSE+'s sampler
    ("edm", "dpmpp_2m", 20, 0.03),
])
def test_exact_score_recovers_the_clean_distribution(objective, sampler, steps, tol) -> None:
    """Started from the exact marginal ``p_T``, every sampler driven through the SGMSE
    denoiser (complex adapter, conditioning on ``y``) returns ``x0 ~ CN(mu, s^2)``."""
    s = 1.0
    model, mu, y = _gaussian_setup(objective, s)
    T = torch.tensor(model.process.t_max, dtype=torch.float64)
    a, sig = float(model.process.alpha(T)), float(model.process.sigma(T))
    g = torch.Generator().manual_seed(7)
    x_T = y + a * (mu - y) + math.sqrt(a * a * s * s + sig * sig) * torch.randn(
        y.shape, dtype=y.dtype, generator=g)
    x = sample_spec(model, y, sampler=sampler, steps=max(steps, 1), seed=1, x_init=x_T)
    c_hat, mean_r, var_r, re_r = _moments(x, mu, y, 0.0, s * s)
    assert abs(c_hat) < tol and mean_r < 0.03
    assert var_r == pytest.approx(1.0, abs=2 * tol)
    assert re_r == pytest.approx(0.5, abs=tol)  # complex normal: half the variance in Re


@pytest.mark.parametrize(("objective", "sampler", "steps"), [
    ("score", "em", 60), ("epsilon", "ode", 0), ("data", "dpmpp_2m", 20), ("edm", "em", 60)])
def test_from_sgmse_prior_matches_the_closed_form(objective, sampler, steps) -> None:
    """From SGMSE+'s prior ``CN(y, sigma(T)^2)`` (default ``x_init``) the output follows the
    closed form of :func:`_closed_form`: the mean keeps a known fraction of ``y - mu``."""
    s = 1.0
    model, mu, y = _gaussian_setup(objective, s)
    x = sample_spec(model, y, sampler=sampler, steps=max(steps, 1), seed=2)
    c, var = _closed_form(model.process, s, stochastic=sampler == "em")
    c_hat, mean_r, var_r, _ = _moments(x, mu, y, c, var)
    assert c_hat == pytest.approx(c, abs=0.03)
    assert mean_r < 0.03 and var_r == pytest.approx(1.0, abs=0.06)


def test_corrector_pulls_toward_the_marginals() -> None:
    """SGMSE+'s annealed Langevin corrector moves the state toward ``p_t`` at every step,
    so from the prior it removes more of the prior's offset than the plain reverse SDE."""
    model, mu, y = _gaussian_setup("score", 1.0)
    c_sde, _ = _closed_form(model.process, 1.0, stochastic=True)
    x = sample_spec(model, y, sampler="pc", steps=30, seed=3)
    c_hat = _moments(x, mu, y, 0.0, 1.0)[0]
    assert 0.0 < c_hat < 0.5 * c_sde


def test_prior_neglect_is_visible() -> None:
    """The closed forms are far from the naive ``CN(mu, s^2)``, so the tolerances above
    can tell them apart."""
    process = SGMSE(SGMSEConfig(preset="tiny")).process
    c_sde, var_sde = _closed_form(process, 1.0, True)
    c_ode, var_ode = _closed_form(process, 1.0, False)
    assert c_sde > 0.2 and c_ode > 0.4 and var_ode < 0.8 and var_sde < 0.95


@pytest.mark.parametrize("objective", ["score", "epsilon", "data", "edm"])
def test_loss_is_minimised_by_the_exact_prediction(objective) -> None:
    s, t = 0.8, 0.9
    model, mu, _ = _gaussian_setup(objective, s, shape=(2, 1, 64, 32))
    g = torch.Generator().manual_seed(5)
    x0 = mu + s * torch.randn(mu.shape, dtype=mu.dtype, generator=g)
    y = mu + torch.randn(mu.shape, dtype=mu.dtype, generator=g)
    exact = float(model.loss(x0, y, t=t, generator=torch.Generator().manual_seed(1)))
    model.net.backbone.score_error = 0.2
    worse = float(model.loss(x0, y, t=t, generator=torch.Generator().manual_seed(1)))
    assert worse > exact * 1.01
    # the closed-form minima: E|sigma s + z|^2 = Var(z | x_t) = 1 - sigma^2 / v (score,
    # epsilon), E|x0_hat - x0|^2 = Var(x0 | x_t) = s^2 sigma^2 / v (data) and EDM's weight
    # (st^2 + sd^2) / (st sd)^2 times that (edm; st = sigma / a)
    tt = torch.tensor(t, dtype=torch.float64)
    a, sig2 = float(model.process.alpha(tt)), float(model.process.sigma(tt)) ** 2
    v = a * a * s * s + sig2
    expected = 1.0 - sig2 / v if objective in ("score", "epsilon") else s * s * sig2 / v
    if objective == "edm":
        st2, sd2 = sig2 / (a * a), model.config.sigma_data ** 2
        expected *= (st2 + sd2) / (st2 * sd2)
    assert exact == pytest.approx(expected, rel=0.03)


def test_config_validation_and_preset_resolution() -> None:
    cfg = SGMSEConfig(preset="tiny")
    assert cfg.network == NCSNppConfig.preset("tiny") and cfg.network.conditional
    assert cfg.spec == SpecConfig()
    with pytest.raises(ValueError, match="objective"):
        SGMSEConfig(objective="velocity")
    with pytest.raises(ValueError, match="preset"):
        SGMSEConfig(preset="huge")
    with pytest.raises(ValueError, match="sigma_min"):
        SGMSEConfig(sigma_min=0.6)
    assert not PredictiveConfig(preset="tiny").network.conditional
    model = SGMSE(cfg)
    assert (model.process.theta, model.process.sigma_min, model.process.sigma_max) == \
        (1.5, 0.05, 0.5)
    assert model.process.t_min == 0.03 and model.prediction_type == "score"


def _perturb(model: nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("cls", [SGMSE, SGMSEPredictive])
def test_save_load_round_trip(cls, tmp_path) -> None:
    cfg = SGMSEConfig(preset="tiny", objective="data", spec=SpecConfig(alpha=0.4)) \
        if cls is SGMSE else PredictiveConfig(preset="tiny")
    model = cls(cfg)
    _perturb(model)
    path = model.save_pretrained(tmp_path / "m")
    again = cls.from_pretrained(path)
    assert again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    y = torch.randn(1, 1, 256, 4, dtype=torch.complex64)
    with torch.no_grad():
        if cls is SGMSE:
            t = torch.tensor([0.5])
            torch.testing.assert_close(model(y, t, y), again(y, t, y))
        else:
            torch.testing.assert_close(model(y), again(y))
    with pytest.raises(ValueError, match="not a"):
        (SGMSEPredictive if cls is SGMSE else SGMSE).from_pretrained(path)


def test_wave_loss_and_predictive_loss() -> None:
    g = torch.Generator().manual_seed(0)
    clean = 0.3 * torch.randn(2, 1100, generator=g)  # 9 frames, cropped to 8
    noisy = clean + 0.1 * torch.randn(2, 1100, generator=g)
    model = SGMSE(SGMSEConfig(preset="tiny"))
    loss = model.wave_loss(clean, noisy, generator=torch.Generator().manual_seed(1))
    # a fresh network outputs 0 (zero-initialised head): the score loss is E|z|^2 = 1
    assert float(loss.detach()) == pytest.approx(1.0, abs=0.05)
    assert loss.requires_grad
    pred = SGMSEPredictive(PredictiveConfig(preset="tiny"))
    spec_clean = pred.spectrogram(clean / noisy.abs().amax(-1, keepdim=True))[..., :8]
    expected = spec_clean.abs().square().mean()  # D(y) = 0 at initialisation
    torch.testing.assert_close(pred.wave_loss(clean, noisy), expected)
    with pytest.raises(ValueError, match="equal"):
        model.wave_loss(clean, noisy[:, :100])
