"""tools/bench/sgmse.py: the ``sgmse train`` commands it records for an exported pair
configure the same training as the bench's settings."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("polydiff.apps.sgmse")
    spec = importlib.util.spec_from_file_location("bench_sgmse", ROOT / "tools/bench/sgmse.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_sgmse"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("budget", ["cpu", "gpu"])
def test_train_commands_match_the_budget(bench, budget: str) -> None:
    from polydiff.apps.sgmse.config import TrainSettings
    from polydiff.apps.sgmse.main import build_parser
    from polydiff.core.cli import load_config

    s = bench.BUDGETS[budget]
    cmds = bench.train_commands(s, {"predictive": 58, "sgmse": 45})
    for name, steps in (("predictive", 58), ("sgmse", 45)):
        argv = shlex.split(cmds[name])
        assert argv[:2] == ["sgmse", "train"]
        args = build_parser().parse_args(argv[1:])
        flags = {"preset": args.preset, "objective": args.objective, "steps": args.steps,
                 "batch_size": args.batch_size, "lr": args.lr,
                 "segment_frames": args.segment_frames, "seed": args.seed,
                 "center": args.center, "center_on": args.center_on}
        over = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.set)
        if args.predictive:
            over.append("model=predictive")
        t = load_config(TrainSettings, None, over)
        assert t.model == name and t.steps == steps and t.preset == s.preset
        assert (t.batch_size, t.lr, t.segment_frames, t.seed) == \
            (s.batch_size, s.lr, s.segment_frames, s.seed)
        assert t.ema == s.ema and t.network == s.network and t.precision == s.precision
        assert t.compile == s.compile and t.ckpt_every == 0
        if name == "sgmse":
            assert (t.objective, t.center, t.center_on) == (s.objective, s.center, "runs/pred")
