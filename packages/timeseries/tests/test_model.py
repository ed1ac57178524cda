"""TSDiff model: config, schedule, windows and lag features, denoiser, loss, hub round trip."""

import numpy as np
import pytest
import torch

from polydiff.core.denoiser import ModelDenoiser
from polydiff.core.nn.hub import from_pretrained
from polydiff.timeseries.tsdiff.model import (
    DAILY_LAGS,
    HOURLY_LAGS,
    TSDiffBackbone,
    TSDiffConfig,
    TSDiffModel,
    lags_for_freq,
    make_window,
    mean_scale,
)


@pytest.fixture(scope="module")
def tiny() -> TSDiffModel:
    torch.manual_seed(0)
    return TSDiffModel(TSDiffConfig.tiny()).eval()


def test_presets_and_lags():
    p = TSDiffConfig.paper()
    assert (p.context_length, p.prediction_length, p.hidden_dim, p.num_blocks) == (336, 24, 64, 3)
    assert p.lags == HOURLY_LAGS == (24, 48, 72, 96, 120, 144, 168, 336, 504, 672)
    assert (p.diffusion_steps, p.beta_start, p.beta_end) == (100, 1e-4, 0.1)
    d = TSDiffConfig.paper("D")
    assert (d.context_length, d.prediction_length, d.lags) == (360, 30, DAILY_LAGS)
    assert lags_for_freq("h") == HOURLY_LAGS and lags_for_freq("B") == DAILY_LAGS
    with pytest.raises(ValueError, match="frequency"):
        lags_for_freq("W")
    t = TSDiffConfig.tiny(hidden_dim=8)
    assert t.hidden_dim == 8 and t.window_length == 60 and t.in_channels == 5
    for bad in (dict(lags=(0,)), dict(lags=(3, 3)), dict(state_dim=7), dict(s4_init="x"),
                dict(dropout=1.0), dict(beta_end=1.0), dict(context_length=0),
                dict(lag_dropout=1.5)):
        with pytest.raises(ValueError):
            TSDiffConfig.tiny(**bad)


def test_schedule_is_ddpm_linear_betas(tiny):
    n = 100
    betas = torch.linspace(1e-4, 0.1, n, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    torch.testing.assert_close(tiny.process.alpha(t) ** 2, alpha_bar, rtol=1e-12, atol=0)
    grid = tiny.sampling_grid()
    assert grid.shape == (n + 1,) and float(grid[-1]) == 0.0
    steps = tiny.process.model_timestep(grid[:-1])
    torch.testing.assert_close(steps, torch.arange(n - 1, -1, -1, dtype=torch.float64))


def test_mean_scale_closed_form():
    ctx = torch.tensor([[1.0, -3.0, float("nan"), 2.0], [0.0, 0.0, 0.0, 0.0],
                        [float("nan")] * 4, [4.0, 8.0, 1.0, 1.0]], dtype=torch.float64)
    obs = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 0]]).bool()
    s = mean_scale(ctx, obs)
    torch.testing.assert_close(s, torch.tensor([[2.0], [1.0], [1.0], [2.5]],
                                               dtype=torch.float64))


def test_make_window_lags_are_the_shifted_series():
    cfg = TSDiffConfig.tiny(lags=(3, 12, 30))
    rng = np.random.default_rng(0)
    series = rng.uniform(1, 5, size=(2, 25 + cfg.window_length))  # history 25 < max lag 30
    series[0, 40] = np.nan
    w = make_window(series, cfg, dtype=torch.float64)
    length, ctx = cfg.window_length, cfg.context_length
    win = series[:, -length:]
    scale = np.nanmean(np.abs(win[:, :ctx]), axis=1, keepdims=True)
    torch.testing.assert_close(w.scale, torch.from_numpy(scale))
    start = series.shape[1] - length
    for j, lag in enumerate(cfg.lags):
        idx = np.arange(start, start + length) - lag
        ok = (idx >= 0) & np.isfinite(series[:, np.clip(idx, 0, None)])
        vals = np.where(ok, series[:, np.clip(idx, 0, None)], 0.0) / scale
        torch.testing.assert_close(w.lags[:, j], torch.from_numpy(vals))
        torch.testing.assert_close(w.lags[:, len(cfg.lags) + j], torch.from_numpy(ok * 1.0))
    assert not bool(w.lags[:, 2 + 3, :5].any())  # lag 30 reaches before the series start
    # the NaN (position 40) is unobserved in the target and in the lags that see it
    assert not bool(w.observed[0, 0, 40 - start]) and float(w.x[0, 0, 40 - start]) == 0.0
    assert float(w.lags[0, 3, 43 - start]) == 0.0  # lag 3 at position 43 sees position 40
    torch.testing.assert_close(w.descale(w.x)[:, 0][w.observed[:, 0]],
                               torch.from_numpy(win)[w.observed[:, 0]])


def test_interpolate_fill_and_errors():
    cfg = TSDiffConfig.tiny(lags=())
    s = np.arange(cfg.window_length, dtype=np.float64) + 1.0
    s[[0, 10, 11, 59]] = np.nan
    w = make_window(s, cfg, fill="interpolate", dtype=torch.float64)
    x = (w.x[0, 0] * w.scale[0]).numpy()
    want = np.arange(cfg.window_length) + 1.0
    want[0], want[59] = 2.0, 59.0  # nearest observed value at the ends
    np.testing.assert_allclose(x, want, rtol=1e-12)
    assert w.lags.shape == (1, 0, cfg.window_length)
    with pytest.raises(ValueError, match=">= context_length"):
        make_window(s[:10], cfg)
    with pytest.raises(ValueError, match="fill"):
        make_window(s, cfg, fill="mean")


def test_forecast_window_marks_the_horizon_missing(tiny):
    cfg = tiny.config  # lags (12, 24), horizon 12: lag 12 never reaches the horizon
    past = np.linspace(1, 2, 24 + cfg.context_length)
    w = tiny.forecast_window(past)
    assert w.x.shape == (1, 1, cfg.window_length) and w.x.dtype == torch.float32
    assert bool(w.observed[0, 0, : cfg.context_length].all())
    assert not bool(w.observed[0, 0, cfg.context_length:].any())
    assert bool((w.lags[0, 2:] == 1).all())  # every lag value is known
    short = TSDiffModel(TSDiffConfig.tiny(lags=(5,)))
    w5 = short.forecast_window(past)
    ind = w5.lags[0, 1]
    assert bool((ind[: cfg.context_length + 5] == 1).all())
    assert not bool(ind[cfg.context_length + 5:].any())  # lag 5 sees future points there


def test_backbone_shapes_any_length(tiny):
    net: TSDiffBackbone = tiny.backbone
    for length in (1, 17, 60):
        x = torch.randn(3, 1, length)
        out = net(x, torch.tensor([0.0, 50.0, 99.0]), lags=torch.randn(3, 4, length))
        assert out.shape == (3, 1, length)
    torch.testing.assert_close(net(x, 5.0), net(x, 5.0, lags=torch.zeros(3, 4, 60)))
    with pytest.raises(ValueError, match="lags must have shape"):
        net(x, 5.0, lags=torch.zeros(3, 2, 60))
    with pytest.raises(ValueError, match=r"\(B, 1, L\)"):
        net(torch.zeros(3, 2, 60), 5.0)
    assert net.block_names() == ["blocks.0", "blocks.1"]


def test_denoiser_is_epsilon_prediction_at_the_ddpm_step(tiny):
    d = tiny.denoiser()
    assert isinstance(d, ModelDenoiser) and d.prediction_type == "epsilon"
    x = torch.randn(2, 1, 60)
    lags = torch.randn(2, 4, 60)
    t = torch.tensor([0.37, 1.0], dtype=torch.float64)
    with torch.no_grad():
        x0, eps = d.x0_eps(x, t, lags=lags)
        raw = tiny(x, t * 100 - 1, lags=lags)
    torch.testing.assert_close(eps, raw)
    a, s = tiny.process.alpha(t).float(), tiny.process.sigma(t).float()
    torch.testing.assert_close(a[:, None, None] * x0 + s[:, None, None] * eps, x, rtol=1e-5,
                               atol=1e-5)


def test_loss_is_ddpm_simple_loss(tiny):
    """Closed form: n ~ U{0..N-1}, x_t = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps,
    loss = mean |eps_theta(x_t, n) - eps|^2, with the same random numbers."""
    rng = np.random.default_rng(1)
    w = tiny.make_window(rng.uniform(1, 3, size=(4, 90)))
    loss = tiny.loss(w.batch(), torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    n = torch.randint(0, 100, (4,), generator=g)
    eps = torch.randn(w.x.shape, generator=g)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.1, 100, dtype=torch.float64), 0)[n]
    xt = abar.sqrt().float()[:, None, None] * w.x + (1 - abar).sqrt().float()[:, None, None] * eps
    with torch.no_grad():
        want = (tiny(xt, n.float(), lags=w.lags) - eps).square().mean()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)
    per = tiny.loss(w.batch(), torch.Generator().manual_seed(7), reduction="none")
    assert per.shape == (4,)


def test_loss_counts_observed_points_only(tiny):
    """Missing points (filled for the input) are masked out of the error: the loss is the
    mean over observed points of the same closed form."""
    rng = np.random.default_rng(2)
    series = rng.uniform(1, 3, size=(4, 90))
    series[0, -10:-4] = np.nan
    series[2, -30:-25] = np.nan
    w = tiny.make_window(series, fill="interpolate")
    obs = w.observed.to(w.x.dtype)
    assert obs.sum() < obs.numel()
    loss = tiny.loss(w.batch(), torch.Generator().manual_seed(7), reduction="none")
    g = torch.Generator().manual_seed(7)
    n = torch.randint(0, 100, (4,), generator=g)
    eps = torch.randn(w.x.shape, generator=g)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.1, 100, dtype=torch.float64), 0)[n]
    xt = abar.sqrt().float()[:, None, None] * w.x + (1 - abar).sqrt().float()[:, None, None] * eps
    with torch.no_grad():
        sq = (tiny(xt, n.float(), lags=w.lags) - eps).square() * obs
    want = sq.sum((1, 2)) / obs.sum((1, 2))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)
    unmasked = {k: v for k, v in w.batch().items() if k != "observed"}
    full = tiny.loss(unmasked, torch.Generator().manual_seed(7), reduction="none")
    assert not torch.allclose(full[0], loss[0]) and torch.allclose(full[1], loss[1])


def test_lag_dropout_drops_whole_lag_conditions_in_training_only():
    torch.manual_seed(5)
    model = TSDiffModel(TSDiffConfig.tiny(lag_dropout=1.0))
    w = model.make_window(np.random.default_rng(2).uniform(1, 3, size=(4, 90)))
    g = torch.Generator().manual_seed(9)
    n = torch.randint(0, 100, (4,), generator=g)
    torch.rand(4, generator=g)  # the dropout draws
    eps = torch.randn(w.x.shape, generator=g)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.1, 100, dtype=torch.float64), 0)[n]
    xt = abar.sqrt().float()[:, None, None] * w.x + (1 - abar).sqrt().float()[:, None, None] * eps
    with torch.no_grad():
        want = (model(xt, n.float(), lags=torch.zeros_like(w.lags)) - eps).square().mean()
        loss = model.train().loss(w.batch(), torch.Generator().manual_seed(9))
        kept = model.eval().loss(w.batch(), torch.Generator().manual_seed(9))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert abs(float(kept) - float(loss)) > 1e-4  # eval mode keeps the lags


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(3)
    model = TSDiffModel(TSDiffConfig.tiny(s4_init="inv", dropout=0.1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = model.save_pretrained(tmp_path / "m")
    back = TSDiffModel.from_pretrained(path)
    assert isinstance(from_pretrained(path), TSDiffModel)
    assert back.config == model.config and isinstance(back.config.lags, tuple)
    ref = model.state_dict()
    for k, v in back.state_dict().items():
        assert torch.equal(v, ref[k]), k
    model.eval()
    x, lags = torch.randn(2, 1, 60), torch.randn(2, 4, 60)
    t = torch.tensor([3.0, 80.0])
    assert torch.equal(model(x, t, lags=lags), back(x, t, lags=lags))


def test_float64_model():
    torch.manual_seed(4)
    m = TSDiffModel(TSDiffConfig.tiny()).double()
    w = m.make_window(np.linspace(1, 3, 100))
    assert w.x.dtype == torch.float64
    loss = m.loss(w.batch(), torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dtype == torch.float64
    assert all(p.grad is not None for p in m.parameters())


def test_forecaster_prepares_windows_and_descales(tiny):
    from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster, rescale_spread
    from polydiff.timeseries.tsdiff.guidance import forecast

    cfg = tiny.config
    rng = np.random.default_rng(2)
    series = [rng.uniform(5, 9, size=n) for n in (100, 30, 72)]  # one shorter than the context
    fc = TSDiffForecaster(tiny, num_samples=3, batch_size=2, steps=4, seed=1)
    out = fc.predict(series)
    assert out.shape == (3, 3, cfg.prediction_length) and np.isfinite(out).all()
    past = fc.past_matrix(series)
    assert past.shape == (3, cfg.max_lag + cfg.context_length)
    assert np.isnan(past[1, :-30]).all() and np.array_equal(past[1, -30:], series[1])
    w = tiny.forecast_window(past[:2])  # the first batch, by hand
    ctx = torch.where(w.observed, w.x, torch.full_like(w.x, float("nan")))[:, 0, :48]
    from polydiff.timeseries.tsdiff.defaults import defaults_for

    table = defaults_for("h")  # settings not given come from the defaults table
    assert {k: fc.forecast_kwargs[k] for k in ("guidance", "scale", "sampler")} == {
        "guidance": table.guidance, "scale": table.scale, "sampler": table.sampler}
    assert fc.spread == table.spread
    want = forecast(tiny.denoiser(), ctx, cfg.prediction_length, num_samples=3, steps=4,
                    cond=w.cond, channel_dim=True, seed=1, scale=table.scale,
                    sampler=table.sampler) * w.scale[:, :, None]
    # the table's spread recalibration is applied to the descaled samples
    want_np = rescale_spread(want.double().numpy(), table.spread)
    np.testing.assert_allclose(out[:2], want_np, rtol=1e-6)


def test_rescale_spread_keeps_median_and_order():
    from polydiff.timeseries.tsdiff.forecaster import TSDiffForecaster, rescale_spread

    x = np.sort(np.random.default_rng(0).normal(size=(3, 9, 5)), axis=1)
    y = rescale_spread(x, 0.5)
    np.testing.assert_allclose(np.median(y, axis=1), np.median(x, axis=1))
    np.testing.assert_allclose(y - np.median(y, axis=1, keepdims=True),
                               0.5 * (x - np.median(x, axis=1, keepdims=True)))
    assert (np.diff(y, axis=1) >= 0).all() and rescale_spread(x, 1.0) is x
    with pytest.raises(ValueError, match="spread"):
        rescale_spread(x, 0.0)
    model = TSDiffModel(TSDiffConfig.tiny())
    with pytest.raises(ValueError, match="spread"):
        TSDiffForecaster(model, spread=-1.0)
