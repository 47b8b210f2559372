"""Output vs loss: the data's values, the model's first output against what the loss needs
(type, shape, class count, value range), the head the loss adds (a double sigmoid, a softmax
before a log-softmax), and the first loss itself."""

from __future__ import annotations

import torch
from torch import nn

from trainrun.build.setup import Setup
from trainrun.data.batches import TensorBatches
from trainrun.preflight.common import (
    MODEL_KEY,
    Report,
    criterion_name,
    dtype_text,
    ends_in,
    refuse,
    shape_text,
    split_head,
)


def _whole_split(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    batches = setup.train_batches
    if isinstance(batches, TensorBatches):
        return batches.x, batches.y, "the training split"
    return x, y, "the first batch"


def check_data(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> None:
    xs, ys, where = _whole_split(setup, x, y)
    if xs.is_floating_point() and not bool(torch.isfinite(xs).all()):
        bad = int((~torch.isfinite(xs)).sum())
        raise refuse(f"{where} holds {bad} NaN or infinite feature values", key="data",
                    fix="clean or impute the missing values before training")
    if ys.is_floating_point() and not bool(torch.isfinite(ys).all()):
        raise refuse(f"{where} holds NaN or infinite target values", key="data",
                    fix="drop or fix the rows whose target is missing")
    name = criterion_name(setup)
    if setup.loss.targets == "index":
        if ys.dtype != torch.int64:
            raise refuse(f"{name} needs class indices of dtype int64, but the targets are "
                        f"{dtype_text(ys)}", key="loss.targets",
                        fix="set loss.targets=index, or return integer labels from the data source")
    elif isinstance(setup.criterion, nn.BCELoss | nn.BCEWithLogitsLoss) and len(ys):
        lo, hi = float(ys.min()), float(ys.max())
        if lo < 0 or hi > 1:
            task = f" (the data is a {setup.info.task} task)" if setup.info.task == "regression" else ""
            raise refuse(f"{name} needs targets in [0, 1], but {where}'s targets range from "
                        f"{lo:.4g} to {hi:.4g}{task}", key="loss",
                        fix="use loss=mse for regression targets, or scale the targets to [0, 1]")


def check_output(
    setup: Setup, x: torch.Tensor, y: torch.Tensor, inner: torch.Tensor | None, out: object,
    report: Report,
) -> None:
    name = criterion_name(setup)
    key = MODEL_KEY
    if not isinstance(out, torch.Tensor):
        raise refuse(f"the model returned a {type(out).__name__}, not a tensor", key=key,
                    fix="return the output tensor from forward (not a tuple or dict)")
    if not bool(torch.isfinite(out.detach()).all()):
        raise refuse("the model's first output holds NaN or infinite values (the inputs are "
                    "finite)", key=key, fix="check the model's forward and initialization "
                    "(a division, log or sqrt of zero or a negative number?)")
    if setup.loss.targets == "index":
        _check_index_output(setup, y, out, name, key)
    else:
        _check_float_output(setup, y, out, name, key)
    _check_head(setup, out, inner, name, report)


def _check_index_output(setup: Setup, y: torch.Tensor, out: torch.Tensor, name: str, key: str) -> None:
    if out.ndim < 2:
        return  # the loss itself says what is wrong with that shape
    width, classes = out.shape[1], setup.info.num_classes
    if width == 1:
        raise refuse(f"the model outputs 1 score per sample; {name} over a single class is always "
                    "0 and nothing would learn", key=key,
                    fix="output one score per class (accept an out_features argument), or use "
                    "loss=bce_logits for a single binary output")
    if classes and width != classes:
        raise refuse(f"the model outputs {width} scores per sample but the data has {classes} "
                    f"classes", key=key,
                    fix="let trainrun size the output layer: accept an out_features argument in "
                    "your model's __init__ (trainrun passes the number of classes)")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= width:
        guessed = getattr(setup.info, "guessed", None)  # a user Dataset's classes, from a few samples
        raise refuse(f"{name} needs class indices in [0, {width}), but the targets range from "
                    f"{lo} to {hi}" + (f" (the run was built for {guessed})" if guessed and lo >= 0 else ""),
                    key="data._target_" if guessed and lo >= 0 else "data",
                    fix="give the Dataset a num_classes (or classes) attribute" if guessed and lo >= 0 else
                    "encode the labels as 0..C-1 (trainrun does this for in-memory data)")


def _check_float_output(setup: Setup, y: torch.Tensor, out: torch.Tensor, name: str, key: str) -> None:
    if out.shape == y.shape:
        return
    try:
        broadcast = list(torch.broadcast_shapes(out.shape, y.shape))
        would = f"; {name} would broadcast them to {str(broadcast).replace(' ', '')} and compare " \
                "every prediction with every target instead of failing"
    except RuntimeError:
        would = ""
    width = y.shape[1] if y.ndim == 2 else 1
    raise refuse(
        f"the model's output has shape {shape_text(out)} but the targets have shape {shape_text(y)}"
        f"{would}",
        key=key,
        fix=f"return an output shaped [N, {width}] (don't squeeze the last dimension; accept an "
        "out_features argument so trainrun can size the output layer)",
    )


def _check_head(
    setup: Setup, out: torch.Tensor, inner: torch.Tensor | None, name: str, report: Report
) -> None:
    criterion, body = setup.criterion, split_head(setup)[0]
    head = type(setup.loss.head).__name__ if setup.loss.head is not None else "none"
    o = out.detach().float()
    if isinstance(criterion, nn.BCELoss):
        if inner is not None and isinstance(setup.loss.head, nn.Sigmoid):
            i = inner.detach().float()
            if float(i.min()) >= 0 and float(i.max()) <= 1:  # nn.Sigmoid, torch.sigmoid, a softmax...
                how = "ends in a Sigmoid" if ends_in(body, (nn.Sigmoid,)) else \
                    "already outputs values in [0, 1] (a sigmoid in its forward?)"
                raise refuse(f"the model {how} and loss=bce adds another sigmoid, so every "
                             "prediction is squeezed into [0.5, 0.73] (a double sigmoid)",
                             key="loss.head",
                             fix="set loss.head=none (the model's own sigmoid is enough), or "
                             "return raw scores from the model and keep loss=bce")
    elif isinstance(criterion, nn.BCEWithLogitsLoss) and ends_in(body, (nn.Sigmoid,)):
        if float(o.min()) >= 0 and float(o.max()) <= 1:
            raise refuse("BCEWithLogitsLoss applies the sigmoid itself, but the model already ends "
                        "in a Sigmoid (a double sigmoid)", key="loss",
                        fix="use loss=bce loss.head=none with this model, or remove its Sigmoid")
    elif isinstance(criterion, nn.NLLLoss):
        if ends_in(body, (nn.Softmax,)) and isinstance(setup.loss.head, nn.LogSoftmax):
            raise refuse("the model ends in a Softmax and loss=nll adds a log-softmax on top: "
                        "log_softmax(softmax(x)) squeezes the scores and learns badly",
                        key="loss.head",
                        fix="remove the Softmax from the model (loss=nll adds the log-softmax), "
                        "or use nn.LogSoftmax in the model with loss.head=none")
        logsum = torch.logsumexp(o, dim=1) if o.ndim == 2 else o
        if float(o.max()) > 1e-4 or float(logsum.abs().max()) > 1e-3:
            raise refuse(f"NLLLoss needs log-probabilities (each row's exp sums to 1), but the "
                        f"model's outputs range from {float(o.min()):.4g} to {float(o.max()):.4g} "
                        f"(loss.head={head.lower()})", key="loss.head",
                        fix="set loss.head=log_softmax (loss=nll does this), or use "
                        "loss=cross_entropy on raw scores")
    elif isinstance(criterion, nn.CrossEntropyLoss) and o.ndim == 2:
        if ends_in(body, (nn.Softmax,)) and float(o.min()) >= 0:
            raise refuse("CrossEntropyLoss applies log-softmax itself, but the model ends in a "
                        "Softmax: the scores are squeezed into [0, 1] and it learns badly",
                        key=MODEL_KEY,
                        fix="remove the Softmax from the model (use softmax only to read "
                        "probabilities after training)")
        if ends_in(body, (nn.LogSoftmax,)):
            report.warnings.append("the model ends in a LogSoftmax; CrossEntropyLoss applies one "
                                   "itself (harmless, but loss=nll loss.head=none says it directly)")


def check_loss(setup: Setup, loss: object, out: torch.Tensor) -> None:
    name = criterion_name(setup)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = shape_text(loss) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise refuse(f"{name} returned {shape}, not a single number", key="loss.reduction",
                    fix="use reduction=mean (the default) or sum")
    if not bool(torch.isfinite(loss.detach())):
        raise refuse(f"the first loss is {float(loss.detach())} on finite data and outputs",
                    key="loss", fix="check the loss settings and the target values")
    if not loss.requires_grad:
        raise refuse(
            "the loss does not depend on any trainable parameter: the model's output is cut from "
            "the parameters (a .detach(), .item(), .numpy(), .data or torch.no_grad() in forward)",
            key=MODEL_KEY,
            fix="remove the .detach()/.data/no_grad from the model's forward so backward can "
            "reach the parameters",
        )


