"""Output vs loss: the data's values, the model's first output against what the loss needs
(type, shape, class count, value range), the head the loss adds (a double sigmoid, a softmax
before a log-softmax), and the first loss itself."""

from __future__ import annotations

import torch

from trainrun.build import contracts
from trainrun.build.setup import Setup
from trainrun.preflight.common import (
    MODEL_KEY,
    Report,
    criterion_name,
    dtype_text,
    refuse,
    shape_text,
)
from trainrun.preflight.observe import check_composition, whole_split


def check_data(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> None:
    xs, ys, where = whole_split(setup, x, y)
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
    elif setup.loss.contract.targets == contracts.PROBABILITY and len(ys):
        lo, hi = float(ys.min()), float(ys.max())
        if lo < 0 or hi > 1:
            task = f" (the data is a {setup.info.task} task)" if setup.info.task == "regression" else ""
            raise refuse(f"{name} needs targets in [0, 1], but {where}'s targets range from "
                        f"{lo:.4g} to {hi:.4g}{task}", key="loss",
                        fix="use loss=mse for regression targets, or scale the targets to [0, 1]")


def check_output(
    setup: Setup, x: torch.Tensor, y: torch.Tensor, inner: torch.Tensor | None, out: object,
    report: Report, compose: bool = True,
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
    if out.ndim == 0 or out.shape[0] != len(x):
        raise refuse(f"the model's output has shape {shape_text(out)} for a batch of {len(x)} samples: it "
                     "must hold one row per sample (a .squeeze() or a reshape that drops or merges the "
                     "batch dimension?)", key=key,
                     fix="keep the batch dimension: return [N, k] (x.view(len(x), -1), not a fixed size; "
                     ".squeeze(-1), not .squeeze())")
    if setup.loss.targets == "index":
        _check_index_output(setup, y, out, name, key)
    else:
        _check_float_output(setup, y, out, name, key)
    if compose:  # on the full first batch only: a kind is observed with enough samples to tell
        check_composition(setup, x, y, out, inner)


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


