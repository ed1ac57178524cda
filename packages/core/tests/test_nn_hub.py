"""Tests of polydiff.core.nn.hub: the files written, atomic saves (nothing half-written on
failure, other files kept on overwrite), the registry, and one-line errors for missing,
corrupt, unknown or mismatched checkpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import polydiff.core
from polydiff.core.nn import (
    UNet,
    UNetConfig,
    WaveNet,
    WaveNetConfig,
    from_pretrained,
    model_registry,
    register_model,
    save_pretrained,
)
from polydiff.core.nn.hub import PretrainedMixin, config_from_dict, config_to_dict


def _wavenet(**kw: object) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(WaveNetConfig.tiny(**kw))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_files_and_config(tmp_path: Path) -> None:
    net = UNet(UNetConfig.tiny(1, num_classes=2))
    save_pretrained(net, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["_class_name"] == "UNet"
    assert cfg["_polydiff_version"] == polydiff.core.__version__
    assert cfg["channel_mults"] == [1, 2] and cfg["num_classes"] == 2
    assert config_from_dict(UNetConfig, cfg) == net.config
    meta = safetensors.safe_open(str(tmp_path / "m" / "model.safetensors"), "pt").metadata()
    assert json.loads(meta["polydiff_config"]) == cfg
    assert config_to_dict(net.config)["dims"] == 1


def test_registry() -> None:
    reg = model_registry()
    assert {"UNet", "DiffusionTransformer", "WaveNet"} <= set(reg)
    assert reg["UNet"] is UNet

    class NoConfig(nn.Module):
        pass

    with pytest.raises(TypeError):
        register_model(NoConfig)


def test_save_unregistered_model(tmp_path: Path) -> None:
    @dataclass
    class Cfg:
        width: int = 2

    class Unregistered(PretrainedMixin, nn.Module):
        config_class = Cfg

        def __init__(self, config: Cfg):
            super().__init__()
            self.config = config
            self.lin = nn.Linear(config.width, 1)

    with pytest.raises(ValueError, match="not registered"):
        Unregistered(Cfg()).save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_atomic_save_leaves_nothing_on_failure(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_wavenet(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []  # no target, no temporary directory


def test_overwrite_keeps_other_files(tmp_path: Path) -> None:
    d = tmp_path / "m"
    save_pretrained(_wavenet(), d)
    (d / "notes.txt").write_text("mine")
    other = _wavenet(residual_channels=4)
    save_pretrained(other, d)
    assert (d / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors",
                                                   "notes.txt"]
    assert from_pretrained(d).config == other.config
    with pytest.raises(NotADirectoryError):
        save_pretrained(other, d / "notes.txt")


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        from_pretrained(tmp_path / "nope")
    assert "nope" in _one_line(e)
    save_pretrained(_wavenet(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(tmp_path: Path, damage: str) -> None:
    save_pretrained(_wavenet(), tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff" * 64,
                   "empty": b""}[damage])
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "m")
    assert "not a readable safetensors file" in _one_line(e)


def test_bad_config(tmp_path: Path) -> None:
    save_pretrained(_wavenet(), tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text("{not json")
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "m")
    assert "not valid JSON" in _one_line(e)
    cfg_path.write_text(json.dumps({**cfg, "_class_name": "Mystery"}))
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "m")
    assert "unknown model class 'Mystery'" in _one_line(e) and "UNet" in str(e.value)
    cfg_path.write_text(json.dumps({**cfg, "wings": 2}))
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "m")
    assert "wings" in _one_line(e)
    cfg_path.write_text(json.dumps({**cfg, "kernel_size": 4}))
    with pytest.raises(ValueError, match="odd"):
        from_pretrained(tmp_path / "m")


def test_mismatched_pair(tmp_path: Path) -> None:
    save_pretrained(_wavenet(), tmp_path / "a")
    save_pretrained(_wavenet(residual_channels=4), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "a")
    assert "different models" in _one_line(e)


def test_mismatched_weights_without_metadata(tmp_path: Path) -> None:
    save_pretrained(_wavenet(), tmp_path / "m")
    state = {k: v.contiguous() for k, v in _wavenet(residual_channels=4).state_dict().items()}
    state.pop("head.out.bias")
    state["extra"] = torch.zeros(1)
    safetensors.torch.save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        from_pretrained(tmp_path / "m")
    msg = _one_line(e)
    assert "does not match the WaveNet" in msg
    assert "missing 1" in msg and "unexpected 1" in msg and "shape mismatch" in msg


def test_wrong_class_from_mixin(tmp_path: Path) -> None:
    save_pretrained(_wavenet(), tmp_path / "m")
    with pytest.raises(ValueError) as e:
        UNet.from_pretrained(tmp_path / "m")
    assert "holds a WaveNet, not a UNet" in _one_line(e)
    assert isinstance(WaveNet.from_pretrained(tmp_path / "m", map_location="cpu"), WaveNet)
