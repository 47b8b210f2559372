"""Preflight: every rule meets a model, a loss or a data set built to break it, and a run with
preflight ends with exactly the weights of a run without it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_csv


@pytest.fixture
def folder(usercode: Path) -> Path:
    """The run's folder, holding the toy user code (tests/toys.py as usercode.py)."""
    return usercode


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
