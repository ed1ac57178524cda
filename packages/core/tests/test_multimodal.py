"""Tests of polydiff.core.multimodal (per-modality timesteps) against closed forms.

The oracle is a jointly Gaussian pair ``(x, y)``: with per-coordinate times the exact noise
predictor of every modality is Gaussian conditioning, so sampling a conditional, a marginal or
the joint with the engine's samplers must reproduce the exact conditional, marginal and joint
moments; and with the text time fixed at 0 the joint loss must equal the conditional model's
:class:`~polydiff.core.losses.DiffusionLoss` term for term.
"""

from __future__ import annotations

import pytest
import torch

from polydiff.core.grids import time_grid
from polydiff.core.guidance import ClassifierFreeGuidance
from polydiff.core.losses import DiffusionLoss
from polydiff.core.multimodal import (
    JointDenoiser,
    JointDiffusionLoss,
    JointMarginalGuidance,
    ModalityLayout,
    time_key,
)
from polydiff.core.processes import VPCosine
from polydiff.core.samplers import sample_dpmpp_2m

LAYOUT = ModalityLayout({"image": (2,), "text": (1,)})


def _gaussian(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov = a @ a.T / 3 + 0.2 * torch.eye(3, dtype=torch.float64)
    mu = torch.tensor([0.5, -0.3, 0.8], dtype=torch.float64)
    return mu, cov


class ExactJoint:
    """The exact eps-predictor of ``z = (image[2], text[1]) ~ N(mu, cov)`` with a time per
    modality: ``E[eps | z_t] = S (A cov A + S^2)^-1 (z_t - A mu)``."""

    def __init__(self, process, mu, cov):
        self.process, self.mu, self.cov = process, mu, cov
        self.calls = 0

    def __call__(self, xs, ts):
        self.calls += 1
        z = LAYOUT.pack(xs).double()
        tt = torch.cat([ts["image"].double()[:, None].expand(-1, 2),
                        ts["text"].double()[:, None]], dim=1)  # (B, 3) per coordinate
        a, s = self.process.alpha(tt), self.process.sigma(tt)
        cov_t = a[:, :, None] * self.cov * a[:, None, :] + torch.diag_embed(s * s)
        r = (z - a * self.mu).unsqueeze(-1)
        eps = s * torch.linalg.solve(cov_t, r).squeeze(-1)
        return {k: v.to(xs["image"].dtype) for k, v in LAYOUT.unpack(eps).items()}


# --------------------------------------------------------------------------- layout
def test_layout_roundtrip_and_errors() -> None:
    lay = ModalityLayout({"image": (2, 3), "text": (4,)})
    xs = {"image": torch.randn(5, 2, 3), "text": torch.randn(5, 4)}
    flat = lay.pack(xs)
    assert flat.shape == (5, 10) and lay.size() == 10 and lay.size(["text"]) == 4
    back = lay.unpack(flat)
    assert all(torch.equal(back[k], xs[k]) for k in xs)
    assert torch.equal(lay.unpack(lay.pack(xs, ["text"]), ["text"])["text"], xs["text"])
    with pytest.raises(ValueError, match="expected shape"):
        lay.pack({"image": torch.randn(5, 3, 2), "text": xs["text"]})
    with pytest.raises(ValueError, match="distinct names"):
        lay.pack(xs, ["audio"])
    with pytest.raises(ValueError, match="expected"):
        lay.unpack(torch.randn(5, 9))


# --------------------------------------------------------------------------- the loss
def _net(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 3, generator=g)

    def net(xs, ts, **cond):
        z = LAYOUT.pack(xs)
        h = torch.tanh(z @ w + ts["image"][:, None] - 2 * ts["text"][:, None])
        return LAYOUT.unpack(h)

    return net


@pytest.mark.parametrize(("target", "weighting"), [("epsilon", "uniform"),
                                                   ("v_prediction", "snr")])
def test_clean_text_time_is_the_conditional_models_loss(target: str, weighting: str) -> None:
    """t_text = 0: the joint loss is the conditional model's DiffusionLoss, sample by sample."""
    proc = VPCosine()
    net = _net()
    g = torch.Generator().manual_seed(1)
    x0 = {"image": torch.randn(64, 2, generator=g), "text": torch.randn(64, 1, generator=g)}
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.01
    eps = torch.randn(64, 2, generator=g)
    joint = JointDiffusionLoss(proc, ["image", "text"], target=target, weighting=weighting,
                               fixed_times={"text": 0.0}, weights={"text": 0.0})
    got = joint(net, x0, t={"image": t}, eps={"image": eps}, reduction="none")

    def conditional(x, tt, text):
        return net({"image": x, "text": text}, {"image": tt, "text": torch.zeros_like(tt)}
                   )["image"]

    want = DiffusionLoss(proc, target=target, weighting=weighting)(
        conditional, x0["image"], cond={"text": x0["text"]}, t=t, eps=eps, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # the clean modality is input only, even with a positive weight
    joint2 = JointDiffusionLoss(proc, ["image", "text"], target=target, weighting=weighting,
                                fixed_times={"text": 0.0})
    parts = joint2.per_modality(net, x0, t={"image": t}, eps={"image": eps})
    assert torch.equal(parts["text"], torch.zeros(64))
    torch.testing.assert_close(parts["image"], want, rtol=1e-6, atol=1e-7)


def test_joint_loss_by_hand() -> None:
    proc = VPCosine()
    net = _net(3)
    g = torch.Generator().manual_seed(2)
    x0 = {"image": torch.randn(8, 2, generator=g), "text": torch.randn(8, 1, generator=g)}
    eps = {"image": torch.randn(8, 2, generator=g), "text": torch.randn(8, 1, generator=g)}
    t = {"image": torch.rand(8, generator=g, dtype=torch.float64),
         "text": torch.rand(8, generator=g, dtype=torch.float64)}
    loss = JointDiffusionLoss(proc, ["image", "text"], weights={"text": 0.5})
    got = loss(net, x0, t=t, eps=eps, reduction="none")
    xt = {m: proc.alpha(t[m]).float()[:, None] * x0[m] + proc.sigma(t[m]).float()[:, None]
          * eps[m] for m in x0}
    pred = net(xt, {m: v.float() for m, v in t.items()})
    want = ((pred["image"] - eps["image"]) ** 2).mean(1) \
        + 0.5 * ((pred["text"] - eps["text"]) ** 2).mean(1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_independent_times_and_end_masses() -> None:
    proc = VPCosine()
    loss = JointDiffusionLoss(proc, ["image", "text"], clean_prob={"text": 0.2},
                              noise_prob={"text": 0.1, "image": 0.3})
    g = torch.Generator().manual_seed(0)
    ts = loss.sample_times(40_000, generator=g)
    ti, tt = ts["image"], ts["text"]
    assert float((tt == 0).double().mean()) == pytest.approx(0.2, abs=0.01)
    assert float((tt == proc.t_max).double().mean()) == pytest.approx(0.1, abs=0.01)
    assert float((ti == proc.t_max).double().mean()) == pytest.approx(0.3, abs=0.01)
    assert float((ti == 0).double().mean()) == 0.0
    inner = (ti > 0) & (ti < proc.t_max)
    assert float(ti[inner].min()) >= proc.t_min and float(ti[inner].mean()) == pytest.approx(
        (proc.t_min + proc.t_max) / 2, abs=0.01)
    corr = torch.corrcoef(torch.stack([ti, tt]))[0, 1]
    assert abs(float(corr)) < 0.02  # independent draws
    with pytest.raises(ValueError, match="exceed 1"):
        JointDiffusionLoss(proc, ["a"], clean_prob={"a": 0.6}, noise_prob={"a": 0.6})
    with pytest.raises(ValueError, match="unknown modalities"):
        JointDiffusionLoss(proc, ["a"], fixed_times={"b": 0.0})


def test_one_clean_prob_mixes_in_conditional_samples() -> None:
    """one_clean_prob: that fraction of samples has exactly one clean modality (either one
    equally often) and the other uniform; the rest keep the independent draws; 0 changes
    nothing (same random stream)."""
    proc = VPCosine()
    base = JointDiffusionLoss(proc, ["image", "text"], clean_prob={"image": 0.2, "text": 0.2},
                              noise_prob={"image": 0.1, "text": 0.1})
    same = JointDiffusionLoss(proc, ["image", "text"], clean_prob={"image": 0.2, "text": 0.2},
                              noise_prob={"image": 0.1, "text": 0.1}, one_clean_prob=0.0)
    a = base.sample_times(1000, generator=torch.Generator().manual_seed(3))
    b = same.sample_times(1000, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[m], b[m]) for m in a)
    loss = JointDiffusionLoss(proc, ["image", "text"], clean_prob={"image": 0.2, "text": 0.2},
                              noise_prob={"image": 0.1, "text": 0.1}, one_clean_prob=0.5)
    ts = loss.sample_times(80_000, generator=torch.Generator().manual_seed(0))
    ci, ct = ts["image"] == 0, ts["text"] == 0
    # exactly-one-clean: 0.5 from the mixture + 0.5 * 2 * 0.2 * 0.8 from the independent draws
    assert float((ci ^ ct).double().mean()) == pytest.approx(0.5 + 0.16, abs=0.01)
    assert float((ci & ~ct).double().mean()) == pytest.approx(0.33, abs=0.01)
    assert float((ct & ~ci).double().mean()) == pytest.approx(0.33, abs=0.01)
    assert float((ci & ct).double().mean()) == pytest.approx(0.5 * 0.04, abs=0.005)
    assert float((ts["text"] == proc.t_max).double().mean()) == pytest.approx(0.05, abs=0.005)
    with pytest.raises(ValueError, match="one_clean_prob"):
        JointDiffusionLoss(proc, ["image", "text"], one_clean_prob=1.5)
    with pytest.raises(ValueError, match="two modalities"):
        JointDiffusionLoss(proc, ["image", "text"], fixed_times={"text": 0.0},
                           one_clean_prob=0.5)


def test_objective_trains_through_the_engine(tmp_path) -> None:
    """A few Trainer steps on the joint objective lower the loss of a small model."""
    from polydiff.core.training import TrainConfig, Trainer

    proc = VPCosine()
    mu, cov = _gaussian()
    g = torch.Generator().manual_seed(0)
    z = (mu + torch.randn(512, 3, generator=g, dtype=torch.float64)
         @ torch.linalg.cholesky(cov).T).float()
    data = {"image": z[:, :2].contiguous(), "text": z[:, 2:].contiguous()}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.SiLU(),
                                         torch.nn.Linear(64, 3))

        def forward(self, xs, ts):
            h = self.f(torch.cat([LAYOUT.pack(xs), ts["image"][:, None], ts["text"][:, None]],
                                 1))
            return LAYOUT.unpack(h)

    torch.manual_seed(0)
    loss = JointDiffusionLoss(proc, ["image", "text"])
    tr = Trainer(Net(), loss.objective(), data,
                 TrainConfig(steps=150, batch_size=128, lr=3e-3, ema_decay=None,
                             run_dir=str(tmp_path / "run"), progress=False, log_every=50,
                             device="cpu"))
    tr.fit()
    from polydiff.core.training import read_stats

    stats = read_stats(tmp_path / "run")
    assert stats[-1]["loss"] < 0.8 * stats[0]["loss"]


# --------------------------------------------------------------------------- sampling
def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def _sample(den, n: int, dim: int, cond=None, steps: int = 50, seed: int = 0):
    proc = den.process
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    ts = time_grid(proc, steps, "logsnr", final_zero=True)
    return sample_dpmpp_2m(den, x, ts, cond=cond, disable=True)


def test_conditional_marginal_and_joint_sampling_match_the_gaussian() -> None:
    proc = VPCosine()
    mu, cov = _gaussian()
    net = ExactJoint(proc, mu, cov)
    n = 40_000  # Monte Carlo: std of a variance estimate ~ var * sqrt(2 / n) ~ 0.014
    # image | text = y*: Gaussian conditioning
    y_star = 1.3
    den = JointDenoiser(net, proc, LAYOUT, ["image"])
    cond = {"text": torch.full((n, 1), y_star, dtype=torch.float64), time_key("text"): 0.0}
    x = _sample(den, n, 2, cond)
    s12 = cov[:2, 2:]
    want_mu = mu[:2] + (s12 / cov[2, 2]).squeeze(-1) * (y_star - mu[2])
    want_cov = cov[:2, :2] - s12 @ s12.T / cov[2, 2]
    m, c = _moments(x)
    torch.testing.assert_close(m, want_mu, atol=0.03, rtol=0)
    torch.testing.assert_close(c, want_cov, atol=0.07, rtol=0)
    # image marginal: text held at pure noise at t_max
    g = torch.Generator().manual_seed(5)
    cond = {"text": torch.randn(n, 1, generator=g, dtype=torch.float64),
            time_key("text"): proc.t_max}
    m, c = _moments(_sample(den, n, 2, cond, seed=1))
    torch.testing.assert_close(m, mu[:2], atol=0.03, rtol=0)
    torch.testing.assert_close(c, cov[:2, :2], atol=0.07, rtol=0)
    # joint: both modalities at one time
    joint = JointDenoiser(net, proc, LAYOUT, ["image", "text"])
    m, c = _moments(_sample(joint, n, 3, seed=2))
    torch.testing.assert_close(m, mu, atol=0.03, rtol=0)
    torch.testing.assert_close(c, cov, atol=0.07, rtol=0)


def test_conditional_sampling_fails_with_the_wrong_held_time() -> None:
    """The oracle can tell modes apart: holding the text as if noisy (t = 0.5) instead of
    clean does not give the conditional mean."""
    proc = VPCosine()
    mu, cov = _gaussian()
    den = JointDenoiser(ExactJoint(proc, mu, cov), proc, LAYOUT, ["image"])
    n, y_star = 4000, 1.3
    cond = {"text": torch.full((n, 1), y_star, dtype=torch.float64), time_key("text"): 0.5}
    m, _ = _moments(_sample(den, n, 2, cond))
    s12 = cov[:2, 2:]
    want_mu = mu[:2] + (s12 / cov[2, 2]).squeeze(-1) * (y_star - mu[2])
    assert float((m - want_mu).abs().max()) > 0.05


def test_guidance_by_the_models_own_marginal() -> None:
    """UniDiffuser's guidance is core CFG with the unconditional branch = the text at noise;
    weight 0 is the conditional denoiser exactly, and in general
    eps = (1 + s) eps(x, y0, t, 0) - s eps(x, noise, t, T)."""
    proc = VPCosine()
    mu, cov = _gaussian()
    net = ExactJoint(proc, mu, cov)
    den = JointDenoiser(net, proc, LAYOUT, ["image"])
    g = torch.Generator().manual_seed(0)
    b = 16
    x = torch.randn(b, 2, generator=g, dtype=torch.float64)
    t = torch.full((b,), 0.6, dtype=torch.float64)
    y0 = torch.randn(b, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(b, 1, generator=g, dtype=torch.float64)
    cond = {"text": y0, time_key("text"): torch.zeros(b, dtype=torch.float64)}
    uncond = {"text": noise, time_key("text"): torch.full((b,), proc.t_max,
                                                          dtype=torch.float64)}
    cfg0 = ClassifierFreeGuidance.from_weight(den, 0.0, uncond=uncond)
    for a, c in zip(cfg0.x0_eps(x, t, **cond), den.x0_eps(x, t, **cond)):
        assert torch.equal(a, c)
    s = 2.5
    guided = ClassifierFreeGuidance.from_weight(den, s, uncond=uncond).eps(x, t, **cond)
    want = (1 + s) * den.eps(x, t, **cond) - s * den.eps(x, t, **uncond)
    torch.testing.assert_close(guided, want)


def test_joint_marginal_guidance() -> None:
    proc = VPCosine()
    mu, cov = _gaussian()
    net = ExactJoint(proc, mu, cov)
    joint = JointDenoiser(net, proc, LAYOUT, ["image", "text"])
    g = torch.Generator().manual_seed(0)
    b = 8
    z = torch.randn(b, 3, generator=g, dtype=torch.float64)
    t = torch.full((b,), 0.4, dtype=torch.float64)
    noise = LAYOUT.noise(b, generator=g, dtype=torch.float64)
    plain = JointMarginalGuidance(joint, 0.0, noise=noise)
    assert torch.equal(plain.eps(z, t), joint.eps(z, t))
    s = 1.5
    got = JointMarginalGuidance(joint, s, noise=noise).eps(z, t)
    parts = LAYOUT.unpack(z)
    tm = torch.full_like(t, proc.t_max)
    e_joint = LAYOUT.unpack(joint.eps(z, t))
    e_img = net({"image": parts["image"], "text": noise["text"]}, {"image": t, "text": tm})
    e_txt = net({"image": noise["image"], "text": parts["text"]}, {"image": tm, "text": t})
    want = LAYOUT.pack({"image": (1 + s) * e_joint["image"] - s * e_img["image"],
                        "text": (1 + s) * e_joint["text"] - s * e_txt["text"]})
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="two or more"):
        JointMarginalGuidance(JointDenoiser(net, proc, LAYOUT, ["image"]), 1.0)


def test_joint_denoiser_needs_the_held_modality() -> None:
    proc = VPCosine()
    mu, cov = _gaussian()
    den = JointDenoiser(ExactJoint(proc, mu, cov), proc, LAYOUT, ["image"])
    with pytest.raises(ValueError, match="is held"):
        den.x0_eps(torch.randn(2, 2, dtype=torch.float64), torch.full((2,), 0.5))
