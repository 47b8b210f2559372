"""Checkpoint files: atomic writes survive a SIGKILL at the worst moment, only trainrun's own
plain-value checkpoints load (pickled code is refused and never runs), and the resume config
check sorts differences into refused and allowed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from trainrun.engine import checkpoint, resume
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.errors import TrainrunError


def test_pickled_code_is_refused_and_never_runs(evil):
    path, sentinel = evil
    with pytest.raises(TrainrunError) as caught:
        checkpoint.load(path)
    message = str(caught.value)
    assert "refusing to load" in message and "pickled Python objects" in message
    assert "posix.system" in message  # what it tried to call
    assert "will likely succeed" not in message  # torch's advice to use weights_only=False
    assert not sentinel.exists()


def test_files_that_are_not_trainrun_checkpoints(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, plain)  # a bare state_dict
    with pytest.raises(TrainrunError, match="is not a trainrun checkpoint"):
        checkpoint.load(plain)
    torn = tmp_path / "torn.pt"
    checkpoint.save(torn, {"format": 1, "w": torch.zeros(10_000)})
    torn.write_bytes(torn.read_bytes()[:5000])  # e.g. a copy cut short
    with pytest.raises(TrainrunError, match=r"is not a trainrun checkpoint: it is not a torch\.save archive"):
        checkpoint.load(torn)
    with pytest.raises(TrainrunError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")
    with pytest.raises(TrainrunError, match="no checkpoint at"):
        resume.find(str(tmp_path), tmp_path)  # a folder without checkpoints/last.pt
    assert resume.find("auto", tmp_path) is None  # resume=auto: start fresh


@pytest.mark.parametrize("done", [0, 3, 4, 9])
def test_epoch_losses_fold_without_losing_order(monkeypatch, done) -> None:
    """The batch losses, folded every FOLD batches to keep a long epoch's memory small, come back
    in order and complete, also when a resumed epoch starts from the checkpoint's first ``done``."""
    monkeypatch.setattr(EpochLosses, "FOLD", 4)
    values = torch.arange(11, dtype=torch.float32)
    losses = EpochLosses(values[:done])
    for v in values[done:]:
        losses.append(v.clone())
    assert len(losses) == 11
    assert torch.equal(losses.stacked(), values)
    half = EpochLosses()
    for v in values[:6]:
        half.append(v.clone())
    padded = checkpoint.open_epoch_losses(type("State", (), {"step_losses": half})(), 8)
    assert padded.tolist() == [0, 1, 2, 3, 4, 5, 0, 0]


def test_random_streams_round_trip(tmp_path):
    """Every stream a checkpoint saves comes back: the draws after restoring are the draws
    that followed the save (and the state survives the weights_only file format)."""
    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    checkpoint.save(tmp_path / "rng.pt", {"format": 1, "rng": state})
    loaded = checkpoint.read(tmp_path / "rng.pt")
    checkpoint.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_config_differences(compose):
    saved = OmegaConf.to_container(compose("data=synthetic"), resolve=True, enum_to_str=True)
    blocking, harmless = resume.config_differences(saved, compose(
        "data=synthetic", "model.hidden=[64]", "loss=nll", "checkpoint.monitor=val_acc",
        "trainer.epochs=50", "optim.lr=0.01", "data.num_workers=2", "resume=auto",
    ))
    assert blocking == [
        "checkpoint.monitor: 'val_loss' -> 'val_acc'",
        "loss._target_: 'torch.nn.CrossEntropyLoss' -> 'torch.nn.NLLLoss'",
        "loss.head: 'none' -> 'log_softmax'",
        "loss.label_smoothing: 0.0 -> None",
        "model.hidden: [128] -> [64]",
    ]
    assert harmless == [
        "data.num_workers: 0 -> 2",
        "optim.lr: 0.001 -> 0.01",
        "trainer.epochs: 20 -> 50",
    ]
    assert [d for d in harmless if resume.under(d, resume.RESTORED)] == ["optim.lr: 0.001 -> 0.01"]
    assert resume.config_differences(saved, compose("data=synthetic")) == ([], [])
    # Adversarial pass: a plateau's monitor is read from the config at each step, not restored with
    # its state (whose best value is of the old monitor): it was reported "NOT applied" and applied.
    plateau = OmegaConf.to_container(compose("data=synthetic", "scheduler=plateau"), resolve=True, enum_to_str=True)
    blocking, _ = resume.config_differences(plateau, compose("data=synthetic", "scheduler=plateau",
                                                             "scheduler.monitor=train_loss"))
    assert blocking == ["scheduler.monitor: 'val_loss' -> 'train_loss'"]


@pytest.mark.parametrize("trust", [False, ()])
def test_trust_false_trusts_nothing(compose, tmp_path, trust):
    """``load(trust=False)`` trusts no code, like ``trust=()``: a stored config naming code of
    its own is refused in words. (It passed ``False`` on as the names to trust, and
    ``name in False`` ended the load with a TypeError; mypy found it.)"""
    from trainrun.build.setup import build
    from trainrun.engine.state import TrainState

    setup = build(compose("data=synthetic", "trainer.epochs=1", "preflight=false"))
    saved = checkpoint.payload(setup, TrainState())
    saved["config"]["model"]["_target_"] = "mynet.Net"
    path = checkpoint.save(tmp_path / "last.pt", saved)
    with pytest.raises(TrainrunError, match=r"refusing to build .* names: model\._target_=mynet\.Net"):
        checkpoint.load(path, trust=trust)
    assert checkpoint.load(path, trust=True)["config"]["model"]["_target_"] == "mynet.Net"
