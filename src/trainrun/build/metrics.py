"""Extra validation metrics through torchmetrics, chosen in the config: ``metrics=[f1,auroc]``.

The default path needs none of this: every run reports its loss and one built-in metric,
computed as device sums in ``loop.evaluate`` and read once per epoch: ``acc`` (classification)
or ``rmse`` (regression, in the target's units). Ask for more and a :class:`MetricSet` of
torchmetrics objects is updated on every validation batch (on the device, no host sync) and
computed once per epoch; under DDP torchmetrics gathers every rank's state in ``compute()``,
so the values are those of the whole validation set.

Names (each is logged as ``val_<name>``):

==============  ===================================================================
binary          ``f1``, ``auroc``, ``precision``, ``recall``
multiclass      ``f1``, ``auroc``, ``precision``, ``recall`` (macro averages over the classes),
                ``top<k>`` (top-k accuracy, e.g. ``top3``)
regression      ``mae``, ``mse``, ``r2`` (``mae``/``mse`` in the target's units)
==============  ===================================================================

``acc``/``accuracy`` (classification) and ``rmse`` (regression) are the built-in metric and
cost nothing extra. torchmetrics is the ``metrics`` extra: ``pip install 'trainrun[metrics]'``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from trainrun.build import contracts
from trainrun.build.losses import LossPlan
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError

CLASSIFICATION = ("f1", "auroc", "precision", "recall")
REGRESSION = ("mae", "mse", "r2")
BUILT_IN = {"acc": "acc", "accuracy": "acc", "rmse": "rmse"}  # name asked -> built-in key
_TOP_K = re.compile(r"top(\d+)$")


def available(task: str, num_classes: int | None = None) -> list[str]:
    """The metric names a run of this task can ask for."""
    if task == "regression":
        return ["rmse", *REGRESSION]
    names = ["accuracy", *CLASSIFICATION]
    if task == "multiclass":
        names.append(f"top<k> (k < {num_classes})" if num_classes else "top<k>")
    return names


def extra_names(names: list[str], task: str, num_classes: int | None) -> list[str]:
    """Check ``names`` against the task; return those torchmetrics must compute (the built-in
    ones and repeats dropped), in order."""
    wanted: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        top = _TOP_K.match(name)
        valid_built_in = name in BUILT_IN and (BUILT_IN[name] == "rmse") == (task == "regression")
        if valid_built_in or name in wanted:
            continue
        if task == "regression":
            ok = name in REGRESSION
        else:
            ok = name in CLASSIFICATION or (
                top is not None and task == "multiclass" and 1 <= int(top.group(1)) < (num_classes or 0)
            )
        if not ok:
            known = top is not None or name in (*CLASSIFICATION, *REGRESSION, *BUILT_IN)
            why = f"does not apply to this run's task ({task})" if known else "is not a known metric"
            if top is not None and task == "multiclass":
                why = f"needs k between 1 and {(num_classes or 0) - 1} ({num_classes} classes)"
            raise TrainrunError(
                f"metrics: {raw!r} {why}",
                key="metrics",
                fix=f"for a {task} task use any of: {', '.join(available(task, num_classes))}",
            )
        wanted.append(name)
    return wanted


class MetricSet:
    """torchmetrics objects for the extra metrics of one run. ``update`` per validation batch
    (device only), ``compute`` once per epoch (syncs ranks under DDP, then resets)."""

    def __init__(self, names: list[str], *, task: str, num_classes: int | None, output: str,
                 targets: str, y_scale: float, device: torch.device, sync: bool = True) -> None:
        try:
            import torchmetrics  # ~1.5 s to import: only runs that ask for extra metrics pay it
            from torchmetrics import classification as tc
            from torchmetrics import regression as tr
        except ImportError as err:
            raise TrainrunError(
                f"metrics={names} needs torchmetrics, which is not installed ({err})",
                key="metrics",
                fix="pip install 'trainrun[metrics]', or drop the metrics key (val_acc / val_rmse "
                "are always reported)",
            ) from None
        self.names, self.task, self.output = list(names), task, output  # output: build/contracts.py's kind
        self.targets, self.y_scale = targets, y_scale
        # No value checks (they sync the device). sync=False: one process scores alone while
        # others may be running (DDP's test after fit on rank 0): compute() must not gather.
        common: dict[str, Any] = {"validate_args": False, "sync_on_compute": sync}
        made: dict[str, torchmetrics.Metric] = {}
        for name in names:
            top = _TOP_K.match(name)
            if task == "regression":
                made[name] = {"mae": tr.MeanAbsoluteError, "mse": tr.MeanSquaredError,
                              "r2": tr.R2Score}[name](sync_on_compute=sync)
            elif task == "binary":
                made[name] = {
                    "f1": tc.BinaryF1Score, "auroc": tc.BinaryAUROC,
                    "precision": tc.BinaryPrecision, "recall": tc.BinaryRecall,
                }[name](**common)
            elif top is not None:
                made[name] = tc.MulticlassAccuracy(num_classes=num_classes, top_k=int(top.group(1)),
                                                   average="micro", **common)
            else:
                made[name] = {
                    "f1": tc.MulticlassF1Score, "auroc": tc.MulticlassAUROC,
                    "precision": tc.MulticlassPrecision, "recall": tc.MulticlassRecall,
                }[name](num_classes=num_classes, **common)
        self.metrics = {name: m.to(device) for name, m in made.items()}

    def _inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output as probabilities (classification) or target-unit values
        (regression), and the targets in the form torchmetrics wants."""
        out = out.detach().float()
        if self.task == "regression":
            return out * self.y_scale, y.float() * self.y_scale
        probs = contracts.probabilities(out, self.output)  # whatever kind the loss received
        if self.targets == "index":
            return (probs[:, 1], y) if self.task == "binary" else (probs, y)
        return probs[:, 1], (y.reshape(-1) > 0.5).long()  # one float output: the positive class

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        preds, target = self._inputs(out, y)
        for name, metric in self.metrics.items():
            if self.task == "regression" and (name != "r2" or preds.shape[1] == 1):
                metric.update(preds.reshape(-1), target.reshape(-1))  # over every output value
            else:
                metric.update(preds, target)  # r2 of several outputs: their average

    def compute(self) -> dict[str, float]:
        values = {name: float(metric.compute()) for name, metric in self.metrics.items()}
        for metric in self.metrics.values():
            metric.reset()
        return values


def build_metrics(names: list[str], loss: LossPlan, info: DataInfo, device: torch.device,
                  sync: bool = True) -> MetricSet | None:
    """The run's extra metrics, or None when the built-in one is all it asks for (the fast
    path: nothing imported, nothing added to ``evaluate``). ``sync=False``: never gather ranks."""
    wanted = extra_names(list(names or []), info.task, info.num_classes)
    if not wanted:
        return None
    return MetricSet(wanted, task=info.task, num_classes=info.num_classes, output=loss.output,
                     targets=loss.targets, y_scale=loss.y_scale, device=device, sync=sync)
