"""Extra metrics through torchmetrics: values checked against scikit-learn for every head and
target form, names checked against the task, the default path free of torchmetrics, and the
values under DDP equal to those of one process over the whole set."""

from __future__ import annotations

import pytest
import torch
from helpers import N, fed, metric_set
from sklearn import metrics as sk

from trainrun.build.metrics import extra_names
from trainrun.errors import TrainrunError


@pytest.mark.parametrize("form", ["sigmoid", "logits", "two_class_softmax", "two_class_log_softmax"])
def test_binary_metrics_match_sklearn(torch_gen, form):
    y = torch.randint(0, 2, (N,), generator=torch_gen)
    score = torch.randn(N, generator=torch_gen) + 1.2 * y  # informative but imperfect
    prob = score.sigmoid()
    if form == "sigmoid":  # loss=bce: the model ends in a Sigmoid, one output, float targets
        out, target, kw = prob[:, None], y.float()[:, None], {"output": "probabilities"}
    elif form == "logits":  # loss=bce_logits
        out, target, kw = score[:, None], y.float()[:, None], {}
    else:  # loss=cross_entropy / nll on a binary task: two outputs, class indices
        logits = torch.stack([torch.zeros(N), score], dim=1)
        head = "log_softmax" if form.endswith("log_softmax") else "other"
        out = logits.log_softmax(1) if head == "log_softmax" else logits
        target, kw = y, {"targets": "index", "output": "log_probabilities" if head == "log_softmax" else "scores"}
    got = fed(metric_set(["f1", "auroc", "precision", "recall"], **kw), out, target)
    pred = (prob > 0.5).numpy()
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred), abs=1e-6)
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred), abs=1e-6)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y, prob), abs=1e-5)


@pytest.mark.parametrize("head", ["other", "log_softmax"])
def test_multiclass_metrics_match_sklearn(torch_gen, head):
    classes = 5
    y = torch.randint(0, classes, (N,), generator=torch_gen)
    logits = torch.randn(N, classes, generator=torch_gen) + 1.5 * torch.nn.functional.one_hot(y, classes)
    out = logits.log_softmax(1) if head == "log_softmax" else logits
    got = fed(metric_set(["f1", "auroc", "top2", "top3"], task="multiclass", num_classes=classes,
                         targets="index", output="log_probabilities" if head == "log_softmax" else "scores"),
               out, y)
    prob = logits.softmax(1).numpy()
    assert got["f1"] == pytest.approx(sk.f1_score(y, prob.argmax(1), average="macro"), abs=1e-6)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y, prob, multi_class="ovr", average="macro"), abs=1e-5)
    for k in (2, 3):
        assert got[f"top{k}"] == pytest.approx(sk.top_k_accuracy_score(y, prob, k=k), abs=1e-6)


@pytest.mark.parametrize("width", [1, 3])
def test_regression_metrics_match_sklearn_in_target_units(torch_gen, width):
    scale = 7.5  # data.standardize divides the targets by their spread; metrics undo it
    y = torch.randn(N, width, generator=torch_gen)
    out = y + 0.3 * torch.randn(N, width, generator=torch_gen)
    got = fed(metric_set(["mae", "mse", "r2"], task="regression", num_classes=None, y_scale=scale), out, y)
    yt, pt = (y * scale).numpy(), (out * scale).numpy()
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(yt.ravel(), pt.ravel()), rel=1e-5)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(yt.ravel(), pt.ravel()), rel=1e-5)
    expected_r2 = sk.r2_score(yt.ravel(), pt.ravel()) if width == 1 else sk.r2_score(yt, pt)
    assert got["r2"] == pytest.approx(expected_r2, rel=1e-5)


def test_compute_resets_for_the_next_epoch(torch_gen):
    y = torch.randint(0, 2, (N,), generator=torch_gen).float()[:, None]
    ms = metric_set(["f1"], output="probabilities")
    first = fed(ms, y.clone(), y)  # perfect predictions
    second = fed(ms, 1 - y, y)  # all wrong
    assert first["f1"] == 1.0 and second["f1"] == 0.0


@pytest.mark.parametrize("names, task, classes, message", [
    (["r2"], "multiclass", 10, "does not apply to this run's task (multiclass)"),
    (["f1"], "regression", None, "does not apply to this run's task (regression)"),
    (["top3"], "binary", 2, "does not apply to this run's task (binary)"),
    (["top10"], "multiclass", 10, "needs k between 1 and 9"),
    (["bogus"], "binary", 2, "is not a known metric"),
])
def test_names_are_checked_against_the_task(names, task, classes, message):
    with pytest.raises(TrainrunError) as err:
        extra_names(names, task, classes)
    assert message in str(err.value) and err.value.key == "metrics"


def test_built_in_names_need_no_torchmetrics():
    assert extra_names(["accuracy", "acc", "f1", "F1"], "binary", 2) == ["f1"]
    assert extra_names(["rmse", "r2"], "regression", None) == ["r2"]
