"""Preflight: every rule meets a model, a loss or a data set built to break it, and a run with
preflight ends with exactly the weights of a run without it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
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


# (id, data kind or None for a user Dataset, overrides, what the message must say)
BROKEN = [
    ("mse_output_n_vs_target_n1", "regression", ["loss=mse", "model._target_=usercode.Squeezed"],
     ["shape [16]", "[16,1]", "broadcast them to [16,16]", "model._target_"]),
    ("bce_output_n_vs_target_n1", "binary", ["loss=bce_logits", "model._target_=usercode.Squeezed"],
     ["shape [16]", "[16,1]", "broadcast"]),
    ("ce_width_differs_from_classes", "multiclass", ["model._target_=usercode.FixedWidth"],
     ["outputs 5 scores per sample but the data has 3 classes", "out_features"]),
    ("ce_single_output_column", "multiclass", ["model._target_=usercode.FixedWidth", "+model.width=1"],
     ["1 score per sample", "always 0"]),
    ("bce_targets_outside_0_1", "regression", ["loss=bce"],
     ["needs targets in [0, 1]", "regression", "loss=mse"]),
    # torch's own check, worded with the key that fixes it
    ("bce_gets_raw_scores", "binary", ["loss=bce", "loss.head=none"],
     ["raw scores are not probabilities", "key: loss.head", "loss.head=sigmoid"]),
    ("nll_gets_raw_scores", "multiclass", ["loss=nll", "loss.head=none"],
     ["(NLLLoss) takes log-probabilities", "loss.head=log_softmax"]),
    ("double_sigmoid", "binary", ["loss=bce", "model._target_=usercode.EndsIn"],
     ["(EndsIn) gives probabilities", "applied twice", "loss.head=none"]),
    ("double_sigmoid_functional", "binary", ["loss=bce", "model._target_=usercode.FunctionalSigmoid"],
     ["every value of the first batch lies in [0, 1]", "applied twice", "loss.head=none"]),
    ("bce_logits_after_sigmoid", "binary", ["loss=bce_logits", "model._target_=usercode.EndsIn"],
     ["(BCEWithLogitsLoss) takes raw scores", "applied twice", "loss=bce loss.head=none"]),
    ("cross_entropy_after_softmax", "multiclass", ["model._target_=usercode.EndsIn", "+model.last=softmax"],
     ["sums to 1", "return raw scores from the model's forward"]),
    ("nll_head_after_softmax", "multiclass", ["loss=nll", "model._target_=usercode.EndsIn",
                                              "+model.last=softmax"],
     ["loss.head=log_softmax takes raw scores or log-probabilities", "return raw scores"]),
    ("nonfinite_first_output", "multiclass", ["model._target_=usercode.NaNOutput"],
     ["first output holds NaN"]),
    ("output_not_a_tensor", "multiclass", ["model._target_=usercode.Pair"],
     ["returned a tuple, not a tensor"]),
    ("forward_fails", "multiclass", ["model._target_=usercode.Crash"],
     ["the model failed on a batch x of shape [16,4]", "mat1 and mat2"]),
    ("loss_not_reduced", "multiclass", ["+loss.reduction=none"],
     ["returned [16], not a single number", "loss.reduction"]),
    ("optimizer_leaves_out_parameters", "multiclass", ["optim=sgd", "optim._target_=usercode.first_layer_only"],
     ["does not hold these trainable parameters", "3.weight [3,128]", "3.bias", "optim._target_"]),
    ("unused_layer", "multiclass", ["model._target_=usercode.Unused"],
     ["extra.weight [7,4]", "never ran in forward (an unused layer)"]),
    ("detached_middle", "multiclass", ["model._target_=usercode.DetachedMiddle"],
     ["first.weight [8,4]", "its layer ran, but the output is cut from it"]),
    ("detached_output", "multiclass", ["model._target_=usercode.DetachedOutput"],
     ["does not depend on any trainable parameter", ".detach()"]),
    ("parameters_replaced_after_optimizer", "multiclass", ["model._target_=usercode.Recreates"],
     ["no longer parameters of the model", "replaced after the optimizer was built"]),
    ("nonfinite_features_in_dataset", None, ["data._target_=usercode.NaNFeatures"],
     ["NaN or infinite feature values"]),
    ("class_index_outside_range", None, ["data._target_=usercode.NegativeLabels"],
     ["class indices in [0, 2)", "from -1 to 1"]),
]


def refused(compose, folder: Path, *overrides: str) -> str:
    """Build the run in-process from ``folder`` and run preflight; the error either raises."""
    from trainrun.build.setup import build
    from trainrun.errors import TrainrunError
    from trainrun.preflight import run as preflight

    with pytest.raises(TrainrunError) as caught:  # a composition that fits no model: while building
        preflight.check(build(compose(*overrides)))
    err = caught.value
    assert err.exit_code == 2 and err.key, str(err)
    return str(err)


@pytest.mark.parametrize("kind, overrides, needles", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_preflight_refuses(compose, folder: Path, monkeypatch, kind, overrides, needles) -> None:
    monkeypatch.chdir(folder)
    data = write_csv(folder, kind).split() if kind else ["data.val_fraction=0.25"]
    message = refused(compose, folder, *data, *overrides)
    for needle in needles:
        assert needle in message, f"{needle!r} not in:\n{message}"


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


@pytest.mark.slow
def test_preflight_changes_nothing(train, folder: Path) -> None:
    """Same weights, optimizer state and random streams with and without preflight, on a model
    whose forward pass moves BatchNorm statistics and draws dropout masks."""
    data = write_csv(folder, "multiclass", n=96).split()
    common = (*data, "print_config=false", "trainer.epochs=2", "optim=sgd",
              "model._target_=usercode.Noisy")
    train(*common, "preflight=true", run_dir=folder / "with")
    train(*common, "preflight=false", run_dir=folder / "without")
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
    assert a["state"]["history"][-1]["train_loss"] == b["state"]["history"][-1]["train_loss"]


def test_preflight_restores_state_in_process(compose, folder: Path, monkeypatch) -> None:
    """Direct check on the built objects: parameters, buffers, .grad, train/eval flags and every
    random stream are as before."""
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    monkeypatch.chdir(folder)
    cfg = compose(*write_csv(folder, "multiclass").split(), "model._target_=usercode.Noisy")
    run = build(cfg)
    run.raw_model.eval()
    before = {k: v.clone() for k, v in run.raw_model.state_dict().items()}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    report = preflight.check(run)
    assert report.line.startswith("preflight ok")
    after = run.raw_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in run.raw_model.parameters())
    assert not any(m.training for m in run.raw_model.modules())
    assert torch.equal(rng[0], torch.get_rng_state())
    assert np.array_equal(rng[1], np.random.get_state()[1])
    assert rng[2] == random.getstate()
    assert run.optimizer.state_dict()["state"] == {}


def test_class_index_targets_must_be_int64(compose, folder: Path, monkeypatch) -> None:
    """Targets that reach a class-index loss as floats are refused (trainrun's own data path
    always gives int64, so the batches are altered here)."""
    from trainrun.build.setup import build
    from trainrun.errors import TrainrunError
    from trainrun.preflight import run as preflight

    monkeypatch.chdir(folder)
    run = build(compose(*write_csv(folder, "multiclass").split()))
    run.train_batches.y = run.train_batches.y.float()
    with pytest.raises(TrainrunError) as caught:
        preflight.check(run)
    assert "int64" in str(caught.value) and "float32" in str(caught.value)
