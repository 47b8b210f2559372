"""Losses: the criterion, the head it needs on the model, its target rule and its metric.

The loss decides the head: built-in models output raw scores, ``loss=bce`` appends a sigmoid,
``loss=nll`` a log-softmax, the others take the raw scores. Targets are prepared once, per loss:
class indices (int64, ``[N]``) for CrossEntropy/NLL, floats shaped ``[N, k]`` like the output for
BCE and MSE, so an ``[N, 1]`` output never silently broadcasts against an ``[N]`` target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from trainrun.build import contracts
from trainrun.build.instantiate import build_from_config
from trainrun.config.choices import text
from trainrun.data.prepare import DataInfo

HEADS: dict[str, Callable[[], nn.Module] | None] = {
    "none": None,
    "sigmoid": nn.Sigmoid,
    "log_softmax": lambda: nn.LogSoftmax(dim=1),
}


@dataclass
class LossPlan:
    """How one loss is wired into the run."""

    criterion: nn.Module
    head: nn.Module | None
    targets: str  # "index" | "float"
    out_features: int
    task: str
    y_scale: float  # regression: RMSE in the target's own units
    contract: contracts.LossContract  # what the loss takes (build/contracts.py)
    head_name: str = "none"
    output: str = contracts.SCORES  # what the loss receives (and predict reads): the composed kind

    @property
    def threshold(self) -> float:
        """Binary float targets: the predicted class is ``out > threshold`` (probability 0.5)."""
        return contracts.positive_threshold(self.output)

    def fit(self, body: nn.Module, declared: str) -> None:
        """Check the chain model -> head -> loss with what the model declares (``model.output``,
        or raw scores for trainrun's own); an undeclared user model is observed by preflight."""
        self.output = contracts.compose(contracts.model_kind(body, declared), self.head_name, self.contract,
                                        task=self.task, model_name=type(body).__name__,
                                        model_key="model.output" if declared != "auto" else "model._target_")

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
        if self.task == "regression":  # soft labels under BCE: compared as probabilities
            return (contracts.as_values(out.float(), self.output, self.contract.targets) - y).pow(2).mean(dim=1).sum()
        if self.targets == "index":
            return (out.argmax(dim=1) == y).sum()
        return ((out > self.threshold) == (y > 0.5)).sum()

    def finish_metric(self, total: float, count: int) -> float:
        if self.task == "regression":
            return (total / count) ** 0.5 * self.y_scale
        return total / count


def plan_loss(cfg: DictConfig, info: DataInfo, *, task_guessed: bool = False) -> LossPlan:
    """Check that the loss fits the data's task and its head (``build/contracts.py``), then
    build the criterion and head. ``task_guessed``: data.task=auto decided the task."""
    targets, head_name = text(cfg.targets), text(cfg.head)
    # class_weights: build applies them
    criterion = build_from_config(cfg, "loss", what="building the loss", expect=nn.Module,
                                  expect_text="a loss module (torch.nn.Module)",
                                  consumed=("head", "targets", "input", "class_weights"))
    contract = contracts.loss_contract(criterion, text(cfg.get("input", "auto")), targets)
    contracts.check_targets(contract, info.task, targets, guessed=task_guessed)
    if targets == "index":
        out_features = info.num_classes or 2
    elif info.task == "regression":
        out_features = info.target_width
    else:
        out_features = 1
    head_factory = HEADS[head_name]
    return LossPlan(
        criterion=criterion,
        head=head_factory() if head_factory else None,
        targets=targets,
        out_features=out_features,
        task=info.task,
        y_scale=info.y_scale,
        contract=contract,
        head_name=head_name,
        output=contracts.composed_kind(None, head_name, contract),
    )
