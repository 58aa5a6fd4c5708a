"""Checkpoints load with ``weights_only=True``: a crafted file is refused by name and runs nothing."""

import argparse
import builtins
from pathlib import Path

import pytest
import torch

from dali_ipmix._scripts import checkpoints, robustness, training
from dali_ipmix._scripts.models import WideResNet


class _Planted:
    """Unpickled unsafely, creates the file ``path`` (what a malicious checkpoint could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def _model():
    return WideResNet(10, 1, 3)


def _crafted(tmp_path):
    planted = tmp_path / "planted.txt"
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 1, "step": 2, "best_acc1": 0.0, "model": _model().state_dict(),
                "args": {"arch": "wrn-10-1", "payload": _Planted(planted)}}, path)
    assert not planted.exists()
    return path, planted


def test_crafted_checkpoint_is_refused_by_the_evaluation_and_runs_nothing(tmp_path):
    path, planted = _crafted(tmp_path)
    with pytest.raises(SystemExit) as err:
        robustness.load_model(path)
    text = str(err.value)
    assert str(path) in text and "refused" in text and "plain values" in text, text
    assert not planted.exists()


def test_crafted_checkpoint_is_refused_by_the_training_resume_and_runs_nothing(tmp_path):
    path, planted = _crafted(tmp_path)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"model": model, "optimizer": opt, "scaler": torch.amp.GradScaler("cuda", enabled=False),
             "epoch": 0, "step": 0, "best_acc1": 0.0}
    with pytest.raises(SystemExit, match="refused") as err:
        training.load_checkpoint(path, state, training.Dist())
    assert str(path) in str(err.value) and not planted.exists()
    assert state["epoch"] == 0


def test_saved_checkpoint_holds_plain_values_and_loads_weights_only(tmp_path):
    """Arguments are stored as plain values (a Path becomes a string), so weights_only loads them."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {"model": model, "optimizer": opt, "scaler": torch.amp.GradScaler("cuda", enabled=False),
             "epoch": 3, "step": 7, "best_acc1": 12.5}
    args = argparse.Namespace(arch="wrn-10-1", data=Path("/data/cifar"), lr=0.1, sizes=(1, 2), seed=None)
    training.save_checkpoint(tmp_path, state, args, is_best=True)
    ckpt = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["args"] == {"arch": "wrn-10-1", "data": "/data/cifar", "lr": 0.1, "sizes": [1, 2], "seed": None}
    assert checkpoints.load(tmp_path / "model_best.pth")["epoch"] == 3
    fresh = {"model": _model(), "optimizer": torch.optim.SGD(_model().parameters(), lr=0.1, momentum=0.9),
             "scaler": torch.amp.GradScaler("cuda", enabled=False), "epoch": 0, "step": 0, "best_acc1": 0}
    training.load_checkpoint(tmp_path / "checkpoint.pth", fresh, training.Dist())
    assert (fresh["epoch"], fresh["step"], fresh["best_acc1"]) == (3, 7, 12.5)
    model2, info = robustness.load_model(tmp_path / "checkpoint.pth")
    assert info["arch"] == "wrn-10-1" and info["args"]["data"] == "/data/cifar"
