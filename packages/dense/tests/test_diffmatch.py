"""DiffMatch: cost volume, argmax and local cost against brute force; the denoiser; sampling
through core; save/load; a short training of every stage (resumable)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polydiff.dense.diffmatch import (
    DiffMatch,
    DiffMatchConfig,
    FeatureNet,
    FeatureNetConfig,
    FlowDenoiserNet,
    FlowNetConfig,
    TrainSettings,
    train_pipeline,
)
from polydiff.dense.diffmatch.features import (
    argmax_flow,
    daisy_features,
    feature_loss,
    global_cost,
    local_cost,
)
from polydiff.dense.diffmatch.model import working_size
from polydiff.dense.warps import make_pairs


def _features(seed: int, c: int = 8, h: int = 6, w: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(1, c, h, w, generator=g), dim=1)


def test_argmax_flow_finds_a_shift() -> None:
    fb = _features(0, c=32)
    fa = torch.roll(fb, shifts=(1, -2), dims=(2, 3))   # A(y, x) = B(y - 1, x + 2)
    flow = argmax_flow(global_cost(fa, fb), temperature=1e-4)
    inner = flow[0, :, 2:-2, 2:-2]
    torch.testing.assert_close(inner[0], torch.full_like(inner[0], 2.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(inner[1], torch.full_like(inner[1], -1.0), atol=1e-3, rtol=0)


def test_argmax_refines_to_sub_cell_positions() -> None:
    """A cost peaked between two cells gives a flow between them."""
    cost = torch.full((1, 1, 5, 1, 5), -1.0)
    cost[0, 0, 0, 0, 2] = 1.0
    cost[0, 0, 0, 0, 3] = 1.0 - 1e-6
    f = argmax_flow(cost, temperature=0.05)
    assert 2.3 < float(f[0, 0, 0, 0]) < 2.7 and float(f[0, 1, 0, 0]) == 0.0


def test_local_cost_equals_the_global_cost_around_the_flow() -> None:
    fa, fb = _features(1), _features(2)
    g = global_cost(fa, fb)[0]                 # (h, w, h, w)
    flow = torch.zeros(1, 2, 6, 7)
    flow[0, 0] = 1.0
    r = 1
    lc = local_cost(fa, fb, flow, r)[0]        # (9, h, w)
    for i in range(6):
        for j in range(7):
            k = 0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    y, x = i + dy, j + 1 + dx
                    want = float(g[i, j, y, x]) if 0 <= y < 6 and 0 <= x < 7 else 0.0
                    assert float(lc[k, i, j]) == pytest.approx(want, abs=1e-5)
                    k += 1


def test_feature_net_shapes_and_loss() -> None:
    torch.manual_seed(0)
    net = FeatureNet(FeatureNetConfig(widths=(8, 8, 8), dim=8, fine_dim=4))
    photo = torch.rand(1, 90, 90)
    pb = make_pairs([photo], torch.Generator().manual_seed(0), 2, 32)
    coarse, fine = net(pb.a)
    assert coarse.shape == (2, 8, 8, 8) and fine.shape == (2, 4, 16, 16)
    torch.testing.assert_close(coarse.norm(dim=1), torch.ones(2, 8, 8))
    loss = feature_loss(net, pb.a, pb.b, pb.flow, pb.valid, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_daisy_features_grid() -> None:
    img = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    d = daisy_features(img)
    assert d.shape[0] == 1 and d.shape[2:] == (8, 12)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(1, 8, 12), atol=1e-5, rtol=0)


def test_denoiser_starts_as_the_initial_flow() -> None:
    net = FlowDenoiserNet(FlowNetConfig(cost_channels=9, base_channels=8))
    init = torch.randn(2, 2, 8, 8)
    out = net(torch.randn(2, 2, 8, 8), torch.rand(2), init_flow=init, cost=torch.randn(2, 9, 8, 8))
    torch.testing.assert_close(out, init)   # zero-initialised output: a residual on F_init


def test_working_size() -> None:
    assert working_size(500, 741, 192) == (128, 192)
    assert working_size(128, 128, 192) == (128, 128)
    h, w = working_size(300, 451, 192)
    assert h % 16 == 0 and w % 16 == 0 and w == 192


def _tiny_pipe() -> DiffMatch:
    torch.manual_seed(0)
    cfg = DiffMatchConfig(radius=1, sr_radius=1, hypotheses=3)
    feats = FeatureNet(FeatureNetConfig(widths=(8, 8, 8), dim=8, fine_dim=4))
    coarse = FlowDenoiserNet(FlowNetConfig(cost_channels=9, base_channels=8))
    sr = FlowDenoiserNet(FlowNetConfig(cost_channels=9, feat_channels=4, base_channels=8))
    return DiffMatch(cfg, feats, coarse, sr, FlowDenoiserNet(FlowNetConfig(9, base_channels=8)))


def test_pipeline_sampling_grid_and_shapes() -> None:
    pipe = _tiny_pipe()
    ts = pipe.time_grid()
    assert len(ts) == 6 and float(ts[-1]) == 0.0 and bool((ts[1:] < ts[:-1]).all())
    # the last noise level before the clean step is sigma_end
    st = float(pipe.process.sigma_tilde(ts[-2:-1]))
    assert st == pytest.approx(pipe.config.sigma_end, rel=1e-6)
    a, b = torch.rand(2, 1, 32, 48), torch.rand(2, 1, 32, 48)
    res = pipe.match_tensors(a, b, generator=torch.Generator().manual_seed(0))
    assert set(res) == {"flow", "coarse", "init", "uncertainty"}
    assert res["flow"].shape == (2, 2, 32, 48) and res["uncertainty"].shape == (2, 32, 48)
    # untrained residual networks return the initial flow (up to resizing)
    torch.testing.assert_close(res["coarse"], res["init"], atol=1e-4, rtol=0)
    assert pipe.regress_tensors(a, b).shape == (2, 2, 32, 48)
    rng = np.random.default_rng(0)
    flows = pipe.match(rng.random((40, 50)), rng.random((40, 50, 3)))
    assert flows["flow"].shape == (2, 40, 50)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pipe = _tiny_pipe()
    pipe.save(tmp_path / "m", extra={"note": "x"})
    assert json.loads((tmp_path / "m" / "diffmatch.json").read_text())["note"] == "x"
    back = DiffMatch.load(tmp_path / "m")
    assert set(back.networks()) == {"features", "coarse", "sr", "regressor"}
    a, b = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    r1 = pipe.match_tensors(a, b, generator=torch.Generator().manual_seed(1))
    r2 = back.match_tensors(a, b, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r1["flow"], r2["flow"])
    with pytest.raises(FileNotFoundError):
        DiffMatch.load(tmp_path)


def test_training_every_stage_resumes_exactly(tmp_path: Path) -> None:
    s = TrainSettings(feature_steps=3, coarse_steps=3, sr_steps=3, batch_size=2, size=64,
                      base_channels=8)
    pipe, summ = train_pipeline(s, tmp_path / "a")
    assert set(summ) == {"features", "coarse", "regressor", "sr"}
    assert all(v["step"] == 3 for v in summ.values())
    stats = [json.loads(x) for x in (tmp_path / "a/runs/coarse/stats.jsonl").read_text()
             .splitlines()]
    assert all(np.isfinite(r["loss"]) for r in stats)
    # two more steps of the coarse stage on top of a finished run equal a 5-step run
    s5 = TrainSettings(**{**s.to_dict(), "pipeline": s.pipeline, "coarse_steps": 5})
    more, _ = train_pipeline(s5, tmp_path / "a", stages=("features", "coarse"))
    fresh, _ = train_pipeline(s5, tmp_path / "b", stages=("features", "coarse"))
    for p, q in zip(more.coarse.parameters(), fresh.coarse.parameters()):
        torch.testing.assert_close(p, q)


def test_lookup_reads_the_local_cost_around_the_denoised_estimate() -> None:
    """With ``lookup_radius`` the extra cost channels are the local cost around
    ``x_t / alpha_t`` (in ``lookup_unit`` cells): checked against ``local_cost`` directly."""
    cfg = FlowNetConfig(cost_channels=9, base_channels=8, lookup_radius=1, lookup_unit=2.0)
    net = FlowDenoiserNet(cfg)
    fa, fb = _features(3, h=8, w=8), _features(4, h=8, w=8)
    flow = torch.randn(1, 2, 8, 8)                 # cells
    t = torch.tensor([0.3])
    alpha = net.process.alpha(t)
    x = flow / 2.0 * alpha                          # a noise-free x_t for that flow
    got = net.lookup(x, t, fa, fb)
    torch.testing.assert_close(got, local_cost(fa, fb, flow, 1), atol=1e-5, rtol=1e-5)
    # the condition grows by the lookup's channels, and a missing lookup is one clear error
    assert cfg.unet().cond_channels == 2 + 9 + 9
    with pytest.raises(ValueError, match="look_a"):
        net(x, t, init_flow=flow, cost=torch.randn(1, 9, 8, 8))


def test_pipeline_with_lookup_samples_and_regresses() -> None:
    torch.manual_seed(0)
    cfg = DiffMatchConfig(radius=1, sr_radius=1, hypotheses=2, lookup=True)
    feats = FeatureNet(FeatureNetConfig(widths=(8, 8, 8), dim=8, fine_dim=4))

    def net(feat: int = 0) -> FlowDenoiserNet:
        return FlowDenoiserNet(FlowNetConfig(cost_channels=9, feat_channels=feat,
                                             base_channels=8, lookup_radius=1))

    pipe = DiffMatch(cfg, feats, net(), net(4), net())
    a, b = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    res = pipe.match_tensors(a, b, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res["coarse"], res["init"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pipe.regress_tensors(a, b), res["init"], atol=1e-4, rtol=0)
    # the regressor's input is F_init itself when it looks up the cost around its input
    prep = pipe.prepare(a, b, fine=False)
    cond = pipe.coarse_cond(prep)
    torch.testing.assert_close(pipe.regressor_input(cond), cond["init_flow"])
