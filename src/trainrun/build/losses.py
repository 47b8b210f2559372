"""Losses: the criterion, the head it needs on the model, its target rule and its metric.

The loss decides the head: built-in models output raw scores, ``loss=bce`` appends a sigmoid,
``loss=nll`` a log-softmax, the others take the raw scores. Targets are prepared once, per loss:
class indices (int64, ``[N]``) for CrossEntropy/NLL, floats shaped ``[N, k]`` like the output for
BCE and MSE, so an ``[N, 1]`` output never silently broadcasts against an ``[N]`` target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from trainrun.build.instantiate import build_from_config
from trainrun.config.choices import text
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError

HEADS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "sigmoid": nn.Sigmoid,
    "log_softmax": lambda: nn.LogSoftmax(dim=1),  # type: ignore[dict-item]
}


@dataclass
class LossPlan:
    """How one loss is wired into the run."""

    criterion: nn.Module
    head: nn.Module | None
    targets: str  # "index" | "float"
    out_features: int
    task: str
    threshold: float  # binary float targets: predicted class is out > threshold
    y_scale: float  # regression: RMSE in the target's own units

    @property
    def metric(self) -> str:
        """The name of the quality metric reported next to the loss."""
        return "rmse" if self.task == "regression" else "acc"

    def prepare_targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.targets == "index":
            return y.long().reshape(-1)
        y = y.float()
        return y.unsqueeze(1) if y.ndim == 1 else y

    def metric_sum(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per batch, a sum whose epoch total over the sample count gives the metric:
        correct predictions (accuracy) or squared errors (RMSE)."""
        if self.task == "regression":
            return (out.float() - y).pow(2).mean(dim=1).sum()
        if self.targets == "index":
            return (out.argmax(dim=1) == y).sum()
        return ((out > self.threshold) == (y > 0.5)).sum()

    def finish_metric(self, total: float, count: int) -> float:
        if self.task == "regression":
            return (total / count) ** 0.5 * self.y_scale
        return total / count


def plan_loss(cfg: DictConfig, info: DataInfo) -> LossPlan:
    """Check that the loss fits the data's task, then build the criterion and head."""
    targets, head_name = text(cfg.targets), text(cfg.head)
    target = cfg._target_
    if targets == "index" and info.task == "regression":
        raise TrainrunError(
            f"loss {target} needs class labels, but the data is a regression task",
            key="loss",
            fix="use loss=mse for regression, or set data.task if the targets are labels",
        )
    if targets == "float" and info.task == "multiclass":
        raise TrainrunError(
            f"loss {target} takes one float target per output, but the data has "
            f"{info.num_classes} classes",
            key="loss",
            fix="use loss=cross_entropy or loss=nll for more than two classes",
        )
    if targets == "index":
        out_features = info.num_classes or 2
    elif info.task == "regression":
        out_features = info.target_width
    else:
        out_features = 1
    criterion = build_from_config(cfg, "loss", what="building the loss", expect=nn.Module,
                                  expect_text="a loss module (torch.nn.Module)", consumed=("head", "targets"))
    head_factory = HEADS[head_name]
    is_logits_loss = isinstance(criterion, nn.BCEWithLogitsLoss)
    return LossPlan(
        criterion=criterion,
        head=head_factory() if head_factory else None,
        targets=targets,
        out_features=out_features,
        task=info.task,
        threshold=0.0 if is_logits_loss else 0.5,
        y_scale=info.y_scale,
    )
