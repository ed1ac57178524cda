"""``polydiff-med train-prior``: the run-folder rule (refuse a non-empty folder, --resume,
--overwrite), resume equals an uninterrupted run, and the outputs a user needs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from polydiff.apps.medical.main import main

TINY = ["--set", "prior.size=32", "--set", "prior.base_channels=8",
        "--set", "prior.channel_mults=[1, 2]", "--set", "prior.num_heads=2",
        "--set", "ckpt_every=1", "--batch-size", "2", "--device", "cpu"]


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_train_prior_runs(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run(["train-prior", "-o", a, "--steps", "2", "--json", *TINY], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["steps"] == 2 and res["held_out_v_mse"] > 0
    for name in ("prior.json", "train.toml", "held-out.json", "stats.jsonl"):
        assert (a / name).is_file(), name
    code, _, err = run(["train-prior", "-o", a, "--steps", "2", *TINY], capsys)
    assert code == 2 and "not empty" in err
    # 1 step, then resume to 2: the same weights as the uninterrupted run
    assert run(["train-prior", "-o", b, "--steps", "1", *TINY], capsys)[0] == 0
    code, _, err = run(["train-prior", "-o", b, "--steps", "2", "--resume", *TINY], capsys)
    assert code == 0, err
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    code, _, err = run(["train-prior", "-o", b, "--steps", "1", "--overwrite", *TINY], capsys)
    assert code == 0, err
    code, _, err = run(["train-prior", "-o", tmp_path / "c", "--steps", "0"], capsys)
    assert code == 2 and "--steps" in err
