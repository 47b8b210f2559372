"""``loss.class_weights`` (trainrun.class_weights), in process: the weights each form means,
checked against the classes, and the weighted mean the losses then compute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from trainrun.build import contracts
from trainrun.build.class_weights import (
    WeightedBCELoss,
    WeightedBCEWithLogitsLoss,
    apply_class_weights,
    refuse_tensor_lists,
    weights_from,
)
from trainrun.build.losses import LossPlan
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError

THREE = DataInfo(task="multiclass", in_shape=(4,), num_classes=3, target_width=1, classes=["cat", "dog", "eel"])
TWO = DataInfo(task="binary", in_shape=(4,), num_classes=2, target_width=1, classes=["fraud", "ok"])


def test_balanced_is_scikit_learns_on_the_training_labels():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert weights_from("balanced", THREE, y) == pytest.approx(list(expected))
    binary = np.array([0.0] * 9 + [1.0] * 91).reshape(-1, 1)  # BCE's float targets, [N, 1]
    assert weights_from("balanced", TWO, binary) == pytest.approx([100 / (2 * 9), 100 / (2 * 91)])


def test_a_list_is_in_the_labels_order_and_a_mapping_names_them():
    assert weights_from([1, 2, 3], THREE, None) == [1.0, 2.0, 3.0]
    assert weights_from({"eel": 3, "cat": 1, "dog": 2}, THREE, None) == [1.0, 2.0, 3.0]
    digits = DataInfo(task="multiclass", in_shape=(64,), num_classes=3, target_width=1, classes=[0, 1, 2])
    assert weights_from({0: 1, 1: 1, 2: 4}, digits, None) == [1.0, 1.0, 4.0]  # labels that are numbers


@pytest.mark.parametrize(("spec", "words"), [
    ([1, 2], "has 2 weight(s), but the data has 3 classes (cat, dog, eel, in this order)"),
    ({"cat": 1, "dog": 1}, "not every label (missing: eel)"),
    ({"cat": 1, "dog": 1, "eel": 1, "fox": 2}, "labels the data does not have (fox)"),
    ([1, 0, 1], "0 is not a positive finite number"),
    ([1, math.inf, 1], "inf is not a positive finite number"),
    ([1, True, 1], "True is not a positive finite number"),
    ("balance", "'balance' is not a known word"),
])
def test_weights_that_do_not_fit_the_classes_are_refused(spec, words):
    with pytest.raises(TrainrunError) as refused:
        weights_from(spec, THREE, np.array([0, 1, 2]))
    assert words in refused.value.message and refused.value.key == "loss.class_weights"


def test_balanced_refuses_a_class_missing_from_the_training_split():
    with pytest.raises(TrainrunError, match="class eel has no sample in the training split"):
        weights_from("balanced", THREE, np.array([0, 1, 1, 0]))


def plan(criterion: nn.Module, targets: str, task: str) -> LossPlan:
    return LossPlan(criterion=criterion, head=None, targets=targets, out_features=3 if targets == "index" else 1,
                    task=task, y_scale=1.0, contract=contracts.loss_contract(criterion, "auto", targets))


def test_cross_entropy_gets_the_weights_and_the_config_the_numbers():
    cfg = OmegaConf.create({"_target_": "torch.nn.CrossEntropyLoss", "class_weights": "balanced"})
    p = plan(nn.CrossEntropyLoss(), "index", "multiclass")
    y = np.array([0, 0, 0, 1, 2, 2])
    apply_class_weights(cfg, p, THREE, y)
    assert list(cfg.class_weights) == pytest.approx([6 / 9, 2.0, 1.0])
    out, target = torch.randn(6, 3), torch.as_tensor(y)
    w = torch.tensor(list(cfg.class_weights))[target]
    manual = (nn.functional.cross_entropy(out, target, reduction="none") * w).sum() / w.sum()
    assert torch.allclose(p.criterion(out, target), manual)


@pytest.mark.parametrize("loss", [nn.BCELoss, nn.BCEWithLogitsLoss])
def test_binary_float_losses_become_the_weighted_mean_and_stay_their_class(loss):
    cfg = OmegaConf.create({"_target_": "x", "class_weights": [4.0, 1.0]})
    p = plan(loss(), "float", "binary")
    apply_class_weights(cfg, p, TWO, None)
    assert isinstance(p.criterion, loss) and isinstance(p.criterion, WeightedBCELoss | WeightedBCEWithLogitsLoss)
    out = torch.rand(8, 1) if loss is nn.BCELoss else torch.randn(8, 1)
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [1.0], [1.0], [0.0]])
    w = torch.where(y > 0.5, 1.0, 4.0)
    manual = (loss(reduction="none")(out, y) * w).sum() / w.sum()
    assert torch.allclose(p.criterion(out, y), manual)


def test_regression_and_losses_without_weights_are_refused():
    cfg = OmegaConf.create({"_target_": "torch.nn.MSELoss", "class_weights": "balanced"})
    reg = DataInfo(task="regression", in_shape=(4,), num_classes=None, target_width=1)
    with pytest.raises(TrainrunError, match="regression"):
        apply_class_weights(cfg, plan(nn.MSELoss(), "float", "regression"), reg, None)
    cfg = OmegaConf.create({"_target_": "x", "class_weights": [1, 1, 1]})
    with pytest.raises(TrainrunError, match="MultiMarginLoss takes no class weights"):
        apply_class_weights(cfg, plan(nn.MultiMarginLoss(weight=torch.ones(3)), "index", "multiclass"), THREE, None)


def test_a_list_for_a_tensor_argument_names_class_weights():
    with pytest.raises(TrainrunError) as refused:
        refuse_tensor_lists(OmegaConf.create({"_target_": "torch.nn.CrossEntropyLoss", "weight": [1, 5]}))
    assert refused.value.key == "loss.weight" and "loss.class_weights" in refused.value.fix
