"""Preflight: every rule meets a model, a loss or a data set built to break it, and a run with
preflight ends with exactly the weights of a run without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_csv

QUIET = ("print_config=false", "trainer.epochs=1", "checkpoint.enabled=false")


@pytest.fixture
def folder(usercode: Path) -> Path:
    """The run's folder, holding the toy user code (tests/toys.py as usercode.py)."""
    return usercode


def assert_refused(result, *needles: str) -> None:
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert "preflight:" in result.output, result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"


def test_refusal_end_to_end(train, folder: Path) -> None:
    """Through the command: exit status 2, the message, no traceback, no training."""
    data = write_csv(folder, "regression").split()
    result = train(*QUIET, *data, "loss=mse", "model._target_=usercode.Squeezed", check=False)
    assert_refused(result, "broadcast them to [16,16]", "key: model._target_")
    assert not (result.run_dir / "metrics.jsonl").exists()


def test_fix_suggested_for_double_sigmoid_works(train, folder: Path) -> None:
    """The fix the double-sigmoid message gives (loss.head=none) makes the same model train."""
    data = write_csv(folder, "binary").split()
    result = train(*QUIET, *data, "loss=bce", "loss.head=none", "model._target_=usercode.EndsIn")
    assert "preflight ok" in result.output


def test_frozen_layer_is_a_warning(train, folder: Path) -> None:
    data = write_csv(folder, "multiclass").split()
    result = train(*QUIET, *data, "model._target_=usercode.Frozen")
    assert "preflight warning: 2 parameter tensor(s) are frozen" in result.output
    assert "first.weight, first.bias" in result.output
    assert result.metrics[-1]["epoch"] == 1


def test_all_is_well_prints_one_line(train, folder: Path) -> None:
    data = write_csv(folder, "multiclass").split()
    result = train(*QUIET, *data)
    lines = [line for line in result.output.splitlines() if "preflight" in line]
    assert len(lines) == 1 and lines[0].startswith("preflight ok:"), result.output
    assert "batch [16,4] -> output [16,3] float32, targets [16] int64" in lines[0]
    assert "holds all 4 trainable tensors" in lines[0]
    off = train(*QUIET, *data, "preflight=false", run_dir=folder / "off")
    assert not any(line.startswith("preflight") for line in off.output.splitlines())  # (the overrides line names it)


def test_preflight_changes_nothing(train, folder: Path) -> None:
    """Same weights, optimizer state and random streams with and without preflight, on a model
    whose forward pass moves BatchNorm statistics and draws dropout masks."""
    data = write_csv(folder, "multiclass", n=96).split()
    common = (*data, "print_config=false", "trainer.epochs=2", "optim=sgd",
              "model._target_=usercode.Noisy")
    with_ = train(*common, "preflight=true", run_dir=folder / "with")
    without = train(*common, "preflight=false", run_dir=folder / "without")
    a, b = (torch.load(folder / d / "checkpoints" / "last.pt", weights_only=True)
            for d in ("with", "without"))
    assert a["model"].keys() == b["model"].keys()
    assert "net.1.running_mean" in a["model"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, sa in a["optimizer"]["state"].items():
        for name, value in sa.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][key][name]))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert with_.metrics[-1]["train_loss"] == without.metrics[-1]["train_loss"]  # the rows: metrics.jsonl


