"""``loss.class_weights``: weights per class for an imbalanced target, checked against the classes.

``balanced`` weighs each class by ``n / (classes * count)`` over the training split (scikit-learn's
``compute_class_weight("balanced")``); a list gives one weight per class in the order of the
data's labels (``train`` prints it; the labels sorted, as ``predictions.csv`` names them); a
mapping names each label (``{cat: 1, dog: 4}``). The length, the labels, and the values (finite,
positive) are checked before training, with the labels in the message.

The loss is then the weighted mean ``sum(w[y_i] * l_i) / sum(w[y_i])``, as
``torch.nn.CrossEntropyLoss(weight=...)`` defines it: for index targets (cross_entropy, nll) the
criterion's own ``weight``; for a binary float target (bce, bce_logits) the criterion's per-sample
losses weighted the same way (:class:`BinaryClassWeights`). The numbers replace the word in the
run's config (``balanced`` -> ``[0.6, 2.8]``), so the checkpoint, ``evaluate`` and a resume use the
training split's weights, whatever data they see.

``loss.weight`` / ``loss.pos_weight`` as lists (torch wants tensors, and says so with a
TypeError) are refused with this key as the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from trainrun.build.losses import LossPlan
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError

KEY = "loss.class_weights"


class _ClassWeighted(nn.Module):
    """A binary float-target loss as a class-weighted mean (built with ``reduction="none"``);
    still an instance of its torch class, so every check that knows BCELoss knows it."""

    class_weights: torch.Tensor

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_sample = super().forward(out, y)  # the torch loss, per sample
        w = self.class_weights[(y > 0.5).long()]
        return (per_sample * w).sum() / w.sum()


class WeightedBCELoss(_ClassWeighted, nn.BCELoss):
    """``BCELoss`` with ``loss.class_weights``."""


class WeightedBCEWithLogitsLoss(_ClassWeighted, nn.BCEWithLogitsLoss):
    """``BCEWithLogitsLoss`` with ``loss.class_weights``."""


def weighted_binary(criterion: nn.BCELoss | nn.BCEWithLogitsLoss, weights: list[float]) -> nn.Module:
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        weighted: nn.Module = WeightedBCEWithLogitsLoss(reduction="none", pos_weight=criterion.pos_weight)
    else:
        weighted = WeightedBCELoss(reduction="none")
    weighted.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32))
    return weighted


def refuse_tensor_lists(loss_cfg: DictConfig) -> None:
    """``+loss.weight=[...]``: torch's TypeError names no key; say which one does the job."""
    for name in ("weight", "pos_weight"):
        value = loss_cfg.get(name)
        if isinstance(value, ListConfig | list):
            raise TrainrunError(
                f"loss.{name}={OmegaConf.to_container(value) if isinstance(value, ListConfig) else value} "
                f"is a list; {loss_cfg._target_} takes a tensor there",
                key=f"loss.{name}",
                fix=f"drop loss.{name} and set loss.class_weights=[...] (one weight per class, checked against "
                "the classes) or loss.class_weights=balanced")


def labels_of(info: DataInfo) -> list[Any]:
    return list(info.classes) if info.classes else list(range(info.num_classes or 2))


def weights_from(spec: Any, info: DataInfo, train_targets: np.ndarray | None) -> list[float]:
    """The weight of each class (in class-id order) that ``spec`` means."""
    labels = labels_of(info)
    shown = ", ".join(str(label) for label in labels)
    if isinstance(spec, str):
        if spec != "balanced":
            raise TrainrunError(f"{KEY}={spec!r} is not a known word", key=KEY,
                                fix=f"{KEY}=balanced, a list of {len(labels)} weights, or {{label: weight}}")
        if train_targets is None:
            raise TrainrunError(f"{KEY}=balanced needs the training labels, which a Dataset source does not "
                                "hand over whole", key=KEY, fix=f"give the weights: {KEY}=[...] for {shown}")
        ids = np.asarray(train_targets).reshape(len(train_targets), -1)[:, 0]
        counts = np.bincount((ids > 0.5).astype(int) if info.task == "binary" else ids.astype(int),
                             minlength=len(labels))[: len(labels)]
        missing = [str(labels[i]) for i, c in enumerate(counts) if c == 0]
        if missing:
            raise TrainrunError(f"{KEY}=balanced: class {', '.join(missing)} has no sample in the training "
                                "split, so it has no weight", key=KEY,
                                fix="give the weights as a list, or check data.target / the split")
        return [float(counts.sum() / (len(labels) * c)) for c in counts]
    if isinstance(spec, Mapping):
        named = {str(k): v for k, v in spec.items()}
        unknown = [k for k in named if k not in {str(label) for label in labels}]
        absent = [str(label) for label in labels if str(label) not in named]
        if unknown or absent:
            raise TrainrunError(
                f"{KEY} names " + (f"labels the data does not have ({', '.join(unknown)})" if unknown else "")
                + (" and " if unknown and absent else "") + (f"not every label (missing: {', '.join(absent)})"
                                                               if absent else "") + f"; the labels are {shown}",
                key=KEY, fix=f"name each of {shown} once")
        values = [named[str(label)] for label in labels]
    elif isinstance(spec, Sequence):
        values = list(spec)
        if len(values) != len(labels):
            raise TrainrunError(f"{KEY} has {len(values)} weight(s), but the data has {len(labels)} classes "
                                f"({shown}, in this order)", key=KEY, fix=f"give {len(labels)} weights, one per class")
    else:
        raise TrainrunError(f"{KEY}={spec!r} is not balanced, a list or a mapping", key=KEY,
                            fix=f"{KEY}=balanced or {KEY}=[...] with one weight for each of {shown}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)
           or not math.isfinite(v) or v <= 0]
    if bad:
        raise TrainrunError(f"{KEY}: {bad[0]!r} is not a positive finite number", key=KEY,
                            fix="every class weight must be a number > 0")
    return [float(v) for v in values]


def apply_class_weights(loss_cfg: DictConfig, plan: LossPlan, info: DataInfo,
                        train_targets: np.ndarray | None) -> None:
    """Weigh ``plan``'s criterion by class as ``loss.class_weights`` says, and write the numbers
    into the config (``train`` prints them from there)."""
    spec = loss_cfg.get("class_weights")
    if spec is None:
        return
    if info.task == "regression":
        raise TrainrunError(f"{KEY} weighs classes, but the data is a regression task", key=KEY,
                            fix=f"leave {KEY}=null for regression")
    plain = OmegaConf.to_container(spec) if isinstance(spec, DictConfig | ListConfig) else spec
    weights = weights_from(plain, info, train_targets)
    criterion = plan.criterion
    if plan.targets == "index":
        if not hasattr(criterion, "weight") or getattr(criterion, "weight", None) is not None:
            raise TrainrunError(f"{KEY}: {type(criterion).__name__} takes no class weights (no weight "
                                "argument, or it is set already)", key=KEY,
                                fix=f"use loss=cross_entropy or loss=nll, or leave {KEY}=null")
        criterion.weight = torch.tensor(weights, dtype=torch.float32)
    elif isinstance(criterion, nn.BCELoss | nn.BCEWithLogitsLoss) and info.task == "binary" \
            and type(criterion) in (nn.BCELoss, nn.BCEWithLogitsLoss):  # not already weighted
        if getattr(criterion, "weight", None) is not None:
            raise TrainrunError(f"{KEY} and loss.weight both weigh the samples", key=KEY, fix="keep one")
        plan.criterion = weighted_binary(criterion, weights)
    else:
        raise TrainrunError(f"{KEY} is not supported with {type(criterion).__name__}", key=KEY,
                            fix="use loss=cross_entropy, nll, bce or bce_logits")
    loss_cfg.class_weights = weights  # the numbers, for the checkpoint, evaluate and resume
