"""Preflight: one real batch through the built objects before epoch 1.

Catches, in milliseconds, the mistakes that otherwise train silently or fail deep inside torch:

* **output vs loss**: the output's type, shape and dtype against what the loss needs (an
  ``[N]`` output against ``[N, 1]`` targets is refused, not broadcast); class-index losses get
  int64 targets in ``[0, C)`` and ``C`` equals the output width; BCE targets lie in [0, 1];
  ``BCELoss`` gets probabilities and ``NLLLoss`` log-probabilities; a model that already ends in
  a Sigmoid/Softmax under a loss that adds or applies one again;
* **non-finite values** in the data, the first output, the first loss or the first gradients;
* **binding**: every trainable parameter is held by the optimizer, the optimizer holds nothing
  that is no longer a parameter of the model (replaced after the optimizer was built), all on
  the run's device, and after one ``backward`` every held parameter has a gradient (an unused
  layer and a detached output are told apart by which layers ran).

Real errors raise :class:`TrainrunError` (exit status 2); harmless oddities (frozen layers) are
warnings. Preflight changes nothing: the random streams, every parameter and buffer, the
``.grad`` fields and the train/eval flags are restored, and the optimizer never steps, so a run
with preflight ends with the same weights as one with ``preflight=false``.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from trainrun.errors import TrainrunError


@dataclass
class Report:
    """What preflight saw; ``line`` is the one line printed when all is well."""

    line: str = ""
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape)).replace(" ", "")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _names(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _criterion_name(run: Any) -> str:
    return type(run.criterion).__name__


def _model_key(run: Any) -> str:
    return "model._target_"


def _fail(message: str, *, key: str | None, fix: str | None = None) -> TrainrunError:
    return TrainrunError(f"preflight: {message}", key=key, fix=fix)


@contextlib.contextmanager
def preserved(run: Any) -> Iterator[None]:
    """Restore the random streams, parameters, buffers, ``.grad`` fields and train/eval flags of
    ``run.module`` on exit, so whatever happens inside leaves no trace."""
    module: nn.Module = run.module
    cuda = run.device.type == "cuda"
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state(run.device) if cuda else None,
           np.random.get_state(), random.getstate())
    with torch.no_grad():
        tensors = [(t, t.detach().clone()) for t in (*module.parameters(), *module.buffers())]
    grads = [(p, p.grad) for p in module.parameters()]
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, saved in tensors:
                if t.shape == saved.shape:
                    t.copy_(saved)
        for p, g in grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode
        torch.set_rng_state(rng[0])
        if cuda:
            torch.cuda.set_rng_state(rng[1], run.device)
        np.random.set_state(rng[2])
        random.setstate(rng[3])


def first_batch(run: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of the training split (unshuffled for in-memory data)."""
    batches = run.train_batches
    if hasattr(batches, "bounds") and hasattr(batches, "x"):
        if not batches.bounds:
            raise _fail("the training split yields no batch", key="data.batch_size")
        lo, hi = batches.bounds[0]
        return batches.x[lo:hi], batches.y[lo:hi]
    iterator = batches.epoch(0)
    try:
        return next(iterator)
    except StopIteration:
        raise _fail("the training split yields no batch", key="data.batch_size") from None
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _ends_in(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    """Whether the last registered leaf module of ``module`` is one of ``kinds``."""
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    return bool(leaves) and isinstance(leaves[-1], kinds)


def _split_head(run: Any) -> tuple[nn.Module, nn.Module | None]:
    """The user's model (body) and the head the loss added, if any."""
    module = run.module
    if run.loss.head is not None and isinstance(module, nn.Sequential) and hasattr(module, "body"):
        return module.body, module.head
    return module, None


# --------------------------------------------------------------------------- the checks


def check(run: Any, say: Callable[[str], None] | None = None) -> Report:
    """Run every preflight check on one real batch; raise on the first real error, print one
    line (and any warnings) through ``say`` otherwise."""
    started = time.perf_counter()
    report = Report()
    with preserved(run):
        x, y = first_batch(run)
        _check_data(run, x, y)
        _check_binding(run, report)
        out, loss, ran = _forward_backward(run, x, y, report)
        _check_binding(run, report, after_forward=True)
        _check_gradients(run, ran)
        loss_value = float(loss.detach().float())
    held = sum(1 for g in run.optimizer.param_groups for p in g["params"] if p.requires_grad)
    ms = (time.perf_counter() - started) * 1000
    report.line = (
        f"preflight ok: batch {_shape(x)} -> output {_shape(out)} {_dtype(out)}, targets "
        f"{_shape(y)} {_dtype(y)}, first loss {loss_value:.4g}; the optimizer holds all "
        f"{held} trainable tensors and each got a gradient ({ms:.0f} ms)"
    )
    if say is not None:
        say(report.line)
        for warning in report.warnings:
            say(f"preflight warning: {warning}")
    return report


def _whole_split(run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    batches = run.train_batches
    if hasattr(batches, "x") and hasattr(batches, "y"):
        return batches.x, batches.y, "the training split"
    return x, y, "the first batch"


def _check_data(run: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    xs, ys, where = _whole_split(run, x, y)
    if xs.is_floating_point() and not bool(torch.isfinite(xs).all()):
        bad = int((~torch.isfinite(xs)).sum())
        raise _fail(f"{where} holds {bad} NaN or infinite feature values", key="data",
                    fix="clean or impute the missing values before training")
    if ys.is_floating_point() and not bool(torch.isfinite(ys).all()):
        raise _fail(f"{where} holds NaN or infinite target values", key="data",
                    fix="drop or fix the rows whose target is missing")
    name = _criterion_name(run)
    if run.loss.targets == "index":
        if ys.dtype != torch.int64:
            raise _fail(f"{name} needs class indices of dtype int64, but the targets are "
                        f"{_dtype(ys)}", key="loss.targets",
                        fix="set loss.targets=index, or return integer labels from the data source")
    elif isinstance(run.criterion, nn.BCELoss | nn.BCEWithLogitsLoss) and len(ys):
        lo, hi = float(ys.min()), float(ys.max())
        if lo < 0 or hi > 1:
            task = f" (the data is a {run.info.task} task)" if run.info.task == "regression" else ""
            raise _fail(f"{name} needs targets in [0, 1], but {where}'s targets range from "
                        f"{lo:.4g} to {hi:.4g}{task}", key="loss",
                        fix="use loss=mse for regression targets, or scale the targets to [0, 1]")


def _check_binding(run: Any, report: Report, after_forward: bool = False) -> None:
    module, optimizer = run.module, run.optimizer
    named = list(module.named_parameters())
    in_model = {id(p) for _, p in named}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    held_ids = {id(p) for p in held}
    when = " during the first forward pass" if after_forward else ""
    strays = [p for p in held if id(p) not in in_model]
    if strays:
        raise _fail(
            f"the optimizer holds {len(strays)} tensor(s) that are no longer parameters of the "
            f"model (shapes {_names([_shape(p) for p in strays])}){when}: the model's parameters "
            "were replaced after the optimizer was built, so optimizer.step() would update copies "
            "the model no longer uses",
            key=_model_key(run),
            fix="don't move the model to another device/dtype or re-create layers after it is "
            "built (in forward or in a callback); create every layer in __init__",
        )
    missing = [f"{n} {_shape(p)}" for n, p in named if p.requires_grad and id(p) not in held_ids]
    if missing:
        created = " (created during the first forward pass)" if after_forward else ""
        raise _fail(
            f"the optimizer does not hold these trainable parameters{created}, so "
            f"optimizer.step() would never change them: {_names(missing)}",
            key="optim._target_" if not after_forward else _model_key(run),
            fix="create every layer in the model's __init__ and build the optimizer from all of "
            "model.parameters(); if leaving them out is on purpose, freeze them "
            "(requires_grad=False)",
        )
    if after_forward:
        return
    wrong = [f"{n} (on {p.device})" for n, p in named if p.device != run.device]
    if wrong:
        raise _fail(
            f"parameters are not on the run's device {run.device}: {_names(wrong)}",
            key="device",
            fix="let trainrun place the model (don't call .to()/.cuda() in the model's __init__)",
        )
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen and len(frozen) == len(named):
        raise _fail("every parameter of the model is frozen (requires_grad=False): nothing "
                    "would train", key=_model_key(run),
                    fix="unfreeze the layers you want to train")
    if frozen:
        report.warnings.append(
            f"{len(frozen)} parameter tensor(s) are frozen (requires_grad=False) and will not "
            f"train: {_names(frozen)}"
        )


def _forward_backward(
    run: Any, x: torch.Tensor, y: torch.Tensor, report: Report
) -> tuple[torch.Tensor, torch.Tensor, set[str]]:
    """Forward (recording which layers ran), check the output and loss, then backward."""
    module, criterion = run.module, run.criterion
    body, head = _split_head(run)
    ran: set[str] = set()
    hooks = [
        m.register_forward_hook(lambda *_, name=name: ran.add(name))
        for name, m in module.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    module.train()
    for p in module.parameters():
        p.grad = None
    try:
        with run.autocast():
            try:
                inner = body(x)
                out = head(inner) if head is not None and isinstance(inner, torch.Tensor) else inner
            except TrainrunError:
                raise
            except Exception as err:
                raise _fail(
                    f"the model failed on a batch x of shape {_shape(x)} ({_dtype(x)}): "
                    f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
                    key=_model_key(run),
                    fix="check the model's forward and the input size it expects "
                    "(trainrun passes in_features / in_shape / out_features when __init__ accepts them)",
                ) from None
            _check_output(run, x, y, inner if head is not None else None, out, report)
            try:
                loss = criterion(out, y)
            except Exception as err:
                raise _fail(
                    f"{_criterion_name(run)} failed on output {_shape(out)} {_dtype(out)} and targets "
                    f"{_shape(y)} {_dtype(y)}: {type(err).__name__}: {str(err).strip().splitlines()[0]}",
                    key="loss",
                ) from None
    finally:
        for hook in hooks:
            hook.remove()
    _check_loss(run, loss, out)
    try:
        loss.backward()
    except Exception as err:
        raise _fail(f"loss.backward() failed: {type(err).__name__}: {str(err).strip().splitlines()[0]}",
                    key=_model_key(run)) from None
    return out, loss, ran


def _check_output(
    run: Any, x: torch.Tensor, y: torch.Tensor, inner: torch.Tensor | None, out: Any,
    report: Report,
) -> None:
    name = _criterion_name(run)
    key = _model_key(run)
    if not isinstance(out, torch.Tensor):
        raise _fail(f"the model returned a {type(out).__name__}, not a tensor", key=key,
                    fix="return the output tensor from forward (not a tuple or dict)")
    if not out.is_floating_point():
        raise _fail(f"the model's output has dtype {_dtype(out)}; the loss needs floats", key=key)
    if out.ndim == 0 or out.shape[0] != x.shape[0]:
        raise _fail(f"the model returned an output of shape {_shape(out)} for a batch of "
                    f"{x.shape[0]} samples: the first dimension must be the batch",
                    key=key, fix="keep the batch dimension first (flatten with x.flatten(1), "
                    "not x.view(-1))")
    if not bool(torch.isfinite(out.detach()).all()):
        raise _fail("the model's first output holds NaN or infinite values (the inputs are "
                    "finite)", key=key, fix="check the model's forward and initialization "
                    "(a division, log or sqrt of zero or a negative number?)")
    if run.loss.targets == "index":
        _check_index_output(run, y, out, name, key)
    else:
        _check_float_output(run, y, out, name, key)
    _check_head(run, out, inner, name, report)


def _check_index_output(run: Any, y: torch.Tensor, out: torch.Tensor, name: str, key: str) -> None:
    if out.ndim != 2:
        raise _fail(f"{name} needs scores shaped [N, C] (one per class), but the model returned "
                    f"{_shape(out)}", key=key, fix="return one row of class scores per sample")
    width, classes = out.shape[1], run.info.num_classes
    if width == 1:
        raise _fail(f"the model outputs 1 score per sample; {name} over a single class is always "
                    "0 and nothing would learn", key=key,
                    fix="output one score per class (accept an out_features argument), or use "
                    "loss=bce_logits for a single binary output")
    if classes and width != classes:
        raise _fail(f"the model outputs {width} scores per sample but the data has {classes} "
                    f"classes", key=key,
                    fix="let trainrun size the output layer: accept an out_features argument in "
                    "your model's __init__ (trainrun passes the number of classes)")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= width:
        raise _fail(f"{name} needs class indices in [0, {width}), but the targets range from "
                    f"{lo} to {hi}", key="data",
                    fix="encode the labels as 0..C-1 (trainrun does this for in-memory data)")


def _check_float_output(run: Any, y: torch.Tensor, out: torch.Tensor, name: str, key: str) -> None:
    if out.shape == y.shape:
        return
    try:
        broadcast = list(torch.broadcast_shapes(out.shape, y.shape))
        would = f"; {name} would broadcast them to {str(broadcast).replace(' ', '')} and compare " \
                "every prediction with every target instead of failing"
    except RuntimeError:
        would = ""
    width = y.shape[1] if y.ndim == 2 else 1
    raise _fail(
        f"the model's output has shape {_shape(out)} but the targets have shape {_shape(y)}"
        f"{would}",
        key=key,
        fix=f"return an output shaped [N, {width}] (don't squeeze the last dimension; accept an "
        "out_features argument so trainrun can size the output layer)",
    )


def _check_head(
    run: Any, out: torch.Tensor, inner: torch.Tensor | None, name: str, report: Report
) -> None:
    criterion, body = run.criterion, _split_head(run)[0]
    head = type(run.loss.head).__name__ if run.loss.head is not None else "none"
    o = out.detach().float()
    if isinstance(criterion, nn.BCELoss):
        if float(o.min()) < 0 or float(o.max()) > 1:
            raise _fail(f"BCELoss needs probabilities in [0, 1], but the model's outputs range from "
                        f"{float(o.min()):.4g} to {float(o.max()):.4g} (loss.head={head.lower()})",
                        key="loss.head",
                        fix="set loss.head=sigmoid (loss=bce does this), or use loss=bce_logits "
                        "for raw scores")
        if inner is not None and isinstance(run.loss.head, nn.Sigmoid):
            i = inner.detach().float()
            if float(i.min()) >= 0 and float(i.max()) <= 1:
                text = ("the model already ends in a Sigmoid and loss=bce adds another, so every "
                        "prediction is squeezed into [0.5, 0.73] (a double sigmoid)")
                if _ends_in(body, (nn.Sigmoid,)):
                    raise _fail(text, key="loss.head",
                                fix="set loss.head=none (the model's own Sigmoid is enough), or "
                                "remove the Sigmoid from the model and keep loss=bce")
                report.warnings.append(
                    "the model's outputs already lie in [0, 1] before loss=bce adds its sigmoid; "
                    "if the model ends in a sigmoid, set loss.head=none")
    elif isinstance(criterion, nn.BCEWithLogitsLoss) and _ends_in(body, (nn.Sigmoid,)):
        if float(o.min()) >= 0 and float(o.max()) <= 1:
            raise _fail("BCEWithLogitsLoss applies the sigmoid itself, but the model already ends "
                        "in a Sigmoid (a double sigmoid)", key="loss",
                        fix="use loss=bce loss.head=none with this model, or remove its Sigmoid")
    elif isinstance(criterion, nn.NLLLoss):
        if _ends_in(body, (nn.Softmax,)) and isinstance(run.loss.head, nn.LogSoftmax):
            raise _fail("the model ends in a Softmax and loss=nll adds a log-softmax on top: "
                        "log_softmax(softmax(x)) squeezes the scores and learns badly",
                        key="loss.head",
                        fix="remove the Softmax from the model (loss=nll adds the log-softmax), "
                        "or use nn.LogSoftmax in the model with loss.head=none")
        logsum = torch.logsumexp(o, dim=1) if o.ndim == 2 else o
        if float(o.max()) > 1e-4 or float(logsum.abs().max()) > 1e-3:
            raise _fail(f"NLLLoss needs log-probabilities (each row's exp sums to 1), but the "
                        f"model's outputs range from {float(o.min()):.4g} to {float(o.max()):.4g} "
                        f"(loss.head={head.lower()})", key="loss.head",
                        fix="set loss.head=log_softmax (loss=nll does this), or use "
                        "loss=cross_entropy on raw scores")
    elif isinstance(criterion, nn.CrossEntropyLoss) and o.ndim == 2:
        if _ends_in(body, (nn.Softmax,)) and float(o.min()) >= 0:
            raise _fail("CrossEntropyLoss applies log-softmax itself, but the model ends in a "
                        "Softmax: the scores are squeezed into [0, 1] and it learns badly",
                        key=_model_key(run),
                        fix="remove the Softmax from the model (use softmax only to read "
                        "probabilities after training)")
        if _ends_in(body, (nn.LogSoftmax,)):
            report.warnings.append("the model ends in a LogSoftmax; CrossEntropyLoss applies one "
                                   "itself (harmless, but loss=nll loss.head=none says it directly)")


def _check_loss(run: Any, loss: Any, out: torch.Tensor) -> None:
    name = _criterion_name(run)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = _shape(loss) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise _fail(f"{name} returned {shape}, not a single number", key="loss.reduction",
                    fix="use reduction=mean (the default) or sum")
    if not bool(torch.isfinite(loss.detach())):
        raise _fail(f"the first loss is {float(loss.detach())} on finite data and outputs",
                    key="loss", fix="check the loss settings and the target values")
    if not loss.requires_grad:
        raise _fail(
            "the loss does not depend on any trainable parameter: the model's output is cut from "
            "the parameters (a .detach(), .item(), .numpy(), .data or torch.no_grad() in forward)",
            key=_model_key(run),
            fix="remove the .detach()/.data/no_grad from the model's forward so backward can "
            "reach the parameters",
        )


def _check_gradients(run: Any, ran: set[str]) -> None:
    module = run.module
    owner = {id(p): (m, n) for m, sub in module.named_modules()
             for n, p in sub.named_parameters(recurse=False)}
    held = [p for g in run.optimizer.param_groups for p in g["params"] if p.requires_grad]
    names = {id(p): n for n, p in module.named_parameters()}
    unused, cut = [], []
    for p in held:
        if p.grad is None:
            layer = owner.get(id(p), ("?", ""))[0]
            (cut if layer in ran else unused).append(f"{names.get(id(p), '?')} {_shape(p)}")
    if unused or cut:
        parts = []
        if unused:
            parts.append(f"{_names(unused)}: its layer never ran in forward (an unused layer)")
        if cut:
            parts.append(f"{_names(cut)}: its layer ran, but the output is cut from it (a "
                         ".detach(), .data or no_grad between it and the output)")
        raise _fail(
            "after loss.backward() these parameters have no gradient, so optimizer.step() would "
            "never change them: " + "; ".join(parts),
            key=_model_key(run),
            fix="use every layer in forward and remove the .detach(); if a layer is unused on "
            "purpose, freeze it (requires_grad=False) or delete it",
        )
    bad = [names.get(id(p), "?") for p in held
           if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise _fail(f"the first backward gave NaN or infinite gradients for {_names(bad)}",
                    key=_model_key(run),
                    fix="check the model's forward for operations that are not differentiable "
                    "everywhere (sqrt/log at 0, division by a tiny number)")
