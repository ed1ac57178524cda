"""Distributed helpers: single-process no-ops and a real 2-process Gloo run under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from polydiff.gpu import (
    all_reduce_mean,
    barrier,
    destroy,
    init_distributed,
    is_distributed,
    is_main,
    rank,
    rank_zero_only,
    rank_zero_print,
    world_size,
)

_TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POLYDIFF_DEVICE", "cpu")


def test_single_process_is_a_no_op(single_process: None, capsys: pytest.CaptureFixture) -> None:
    info = init_distributed()
    assert (info.rank, info.local_rank, info.world_size) == (0, 0, 1) and info.is_main
    assert info.device == torch.device("cpu")
    assert not is_distributed() and rank() == 0 and world_size() == 1 and is_main()
    t = torch.tensor([1.0, 3.0])
    assert all_reduce_mean(t) is t and t.tolist() == [1.0, 3.0]
    barrier()
    rank_zero_print("hello", 1)
    assert capsys.readouterr().out == "hello 1\n"
    assert rank_zero_only(lambda x: x + 1)(1) == 2
    destroy()


def test_incomplete_environment_is_an_error(
    single_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed()


def test_integer_tensors_are_rejected() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        all_reduce_mean(torch.tensor([1, 2]))


_WORKER = textwrap.dedent(
    """
    import os
    import sys

    # one stdout file per rank: the two processes' prints would interleave on a shared pipe
    sys.stdout = open(os.path.join(os.environ["WORKER_OUT"], f"rank{os.environ['RANK']}.txt"),
                      "w", buffering=1)
    import torch
    from polydiff.gpu import (all_reduce_mean, barrier, destroy, init_distributed, is_main,
                              rank_zero_only, rank_zero_print)

    info = init_distributed()
    assert info.world_size == 2 and info.device.type == "cpu", info
    assert torch.distributed.get_backend() == "gloo"
    t = torch.tensor([float(info.rank + 1), 10.0 * info.rank])
    assert all_reduce_mean(t) is t
    assert t.tolist() == [1.5, 5.0], t
    barrier()
    rank_zero_print("HELLO from", info.rank)
    print("DONE", info.rank, is_main(), flush=True)

    @rank_zero_only
    def answer():
        return 42

    assert answer() == (42 if info.rank == 0 else None)
    barrier()
    destroy()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_gloo_under_torchrun(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV}
    env.update(POLYDIFF_DEVICE="cpu", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               WORKER_OUT=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    r0 = (tmp_path / "rank0.txt").read_text().splitlines()
    r1 = (tmp_path / "rank1.txt").read_text().splitlines()
    assert r0 == ["HELLO from 0", "DONE 0 True"], r0
    assert r1 == ["DONE 1 False"], r1
