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

* **the step**: one ``optimizer.step()`` on those gradients (an optimizer that fails on this
  model's parameters, a step that leaves a parameter NaN), and **the short last batch** of the
  epoch (a forward that assumes a fixed batch size, BatchNorm on one sample), which otherwise
  fail only at step 1 or at the end of epoch 1.

Real errors raise :class:`TrainrunError` (exit status 2); harmless oddities (frozen layers) are
warnings. Preflight changes nothing: the random streams, every parameter and buffer, the
``.grad`` fields, the train/eval flags and the optimizer's state are restored, so a run with
preflight ends with the same weights as one with ``preflight=false``. Its batches are copies
(``TensorBatches.batch``): a forward that changes its input in place changes no stored data.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from trainrun.build.setup import Setup
from trainrun.data.batches import TensorBatches
from trainrun.engine.collectives import all_reduce_max
from trainrun.errors import TrainrunError, describe, named_key, raised_in
from trainrun.preflight.binding import check_binding, check_gradients, check_step
from trainrun.preflight.common import (
    MODEL_KEY,
    Report,
    criterion_name,
    dtype_text,
    forward_fix,
    refuse,
    shape_text,
    split_head,
)
from trainrun.preflight.output import check_data, check_loss, check_output


@contextlib.contextmanager
def preserved(setup: Setup) -> Iterator[None]:
    """Restore the random streams, parameters, buffers, ``.grad`` fields and train/eval flags of
    ``setup.raw_model`` on exit, so whatever happens inside leaves no trace."""
    module: nn.Module = setup.raw_model
    cuda = setup.device.type == "cuda"
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state(setup.device) if cuda else None,
           np.random.get_state(), random.getstate())
    with torch.no_grad():
        tensors = [(t, t.detach().clone()) for t in (*module.parameters(), *module.buffers())]
    grads = [(p, p.grad) for p in module.parameters()]
    modes = [(m, m.training) for m in module.modules()]
    optimizer = getattr(setup, "optimizer", None)  # preflight steps it once: its state is put back
    state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        yield
    finally:
        if optimizer is not None:
            optimizer.load_state_dict(state)
        with torch.no_grad():
            for t, saved in tensors:
                if t.shape == saved.shape:
                    t.copy_(saved)
        for p, g in grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode
        torch.set_rng_state(rng[0])
        if rng[1] is not None:  # on a GPU
            torch.cuda.set_rng_state(rng[1], setup.device)
        np.random.set_state(rng[2])
        random.setstate(rng[3])


def first_batch(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of the training split (unshuffled for in-memory data)."""
    batches = setup.train_batches
    if isinstance(batches, TensorBatches):  # in memory: the first slice, unshuffled
        if not batches.bounds:
            raise refuse("the training split yields no batch", key="data.batch_size")
        return batches.batch(0)  # a copy: the model may change its input in place
    iterator = batches.epoch(0, check=False)  # a bad label is refused below, in preflight's words
    try:
        return next(iterator)
    except StopIteration:
        raise refuse("the training split yields no batch", key="data.batch_size") from None
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def check(setup: Setup, say: Callable[[str], None] | None = None) -> Report:
    """Run every preflight check on one real batch; raise on the first real error, print one
    line (and any warnings) through ``say`` otherwise."""
    started = time.perf_counter()
    report = Report()
    with preserved(setup):
        x, y = first_batch(setup)
        check_data(setup, x, y)
        check_binding(setup, report)
        out, loss, ran = _forward_backward(setup, x, y, report)
        check_binding(setup, report, after_forward=True)
        check_gradients(setup, ran)
        loss_value = float(loss.detach().float())
        check_step(setup)  # one optimizer.step(); parameters and optimizer state restored after
        _short_batch(setup, x, y, report)
    held = sum(1 for g in setup.optimizer.param_groups for p in g["params"] if p.requires_grad)
    ms = (time.perf_counter() - started) * 1000
    report.line = (
        f"preflight ok: batch {shape_text(x)} -> output {shape_text(out)} {dtype_text(out)}, targets "
        f"{shape_text(y)} {dtype_text(y)}, first loss {loss_value:.4g}; the optimizer holds all "
        f"{held} trainable tensors and each got a gradient ({ms:.0f} ms)"
    )
    if say is not None:
        say(report.line)
        for warning in report.warnings:
            say(f"preflight warning: {warning}")
        if getattr(setup.info, "guessed", None):  # a user Dataset that declares no classes
            say(f"data: {setup.info.guessed}; the first batch agrees, and each batch's labels are checked")
    return report


def where(err: BaseException) -> str:
    """`` (raised in badnet.py:8, in forward)``, as the training phase words it; "" outside user code."""
    found = raised_in(err)
    return f" (raised in {found})" if found else ""


def _short_batch(setup: Setup, x: torch.Tensor, y: torch.Tensor, report: Report) -> None:
    """The epoch's last batch when it is shorter than the first (``N`` not a multiple of the
    batch size): a forward that assumes a fixed batch size, a BatchNorm in training on a batch
    of one, a squeeze that drops the batch dimension of a single sample fail only there, at
    the end of epoch 1. Its size is what matters, so it is the first batch cut to that size."""
    sizes = setup.train_batches.sizes
    short = len(sizes) >= 2 and int(sizes[-1]) != int(sizes[0])
    if setup.strategy == "fsdp" and setup.world_size > 1:  # each forward gathers from every process:
        # all run it or none (a last global batch of 5 on 2 is 3 and 2: only one process's is short)
        short = bool(all_reduce_max(torch.tensor([float(short)], device=x.device), setup.world_size).item())
    if not short:
        return
    n = int(sizes[-1])
    xs, ys = x[:n], y[:n]
    setup.raw_model.train()
    try:
        with setup.autocast():
            out = setup.raw_model(xs)
            check_output(setup, xs, ys, None, out, report, compose=False)  # shapes, values
            loss = setup.criterion(out, ys)
    except TrainrunError as err:
        raise refuse(f"on the epoch's last batch, of {n} samples (the first has {int(sizes[0])}): "
                     f"{err.message.removeprefix('preflight: ')}", key=err.key, fix=err.fix) from None
    except Exception as err:
        raise refuse(
            f"the epoch's last batch, x of shape {shape_text(xs)} (the first, of {int(sizes[0])}, "
            f"passed), failed: {describe(err)}", key=MODEL_KEY,
            fix="make forward work for any batch size (x.view(len(x), -1), not a fixed size; "
            "BatchNorm needs 2 or more samples in training), or choose data.batch_size so that the "
            f"{setup.train_batches.num_samples} training samples split evenly") from None
    check_loss(setup, loss, out)


def _forward_backward(
    setup: Setup, x: torch.Tensor, y: torch.Tensor, report: Report
) -> tuple[torch.Tensor, torch.Tensor, set[str]]:
    """Forward (recording which layers ran), check the output and loss, then backward."""
    module, criterion = setup.raw_model, setup.criterion
    body, head = split_head(setup)
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
        with setup.autocast():
            try:
                inner = body(x)
                out = head(inner) if head is not None and isinstance(inner, torch.Tensor) else inner
            except TrainrunError:
                raise
            except Exception as err:
                raise refuse(
                    f"the model failed on a batch x of shape {shape_text(x)} ({dtype_text(x)}): "
                    f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                    + where(err),
                    key=MODEL_KEY, fix=forward_fix(err, x),
                ) from err  # HYDRA_FULL_ERROR=1 shows the user's frames
            check_output(setup, x, y, inner if head is not None else None, out, report)
            try:
                loss = criterion(out, y)
            except Exception as err:
                raise refuse(
                    f"{criterion_name(setup)} failed on output {shape_text(out)} {dtype_text(out)} and targets "
                    f"{shape_text(y)} {dtype_text(y)}: {describe(err)}{where(err)}",
                    key=named_key(err, "loss", setup.cfg.loss),  # torch's own check names a loss key
                    fix="check that the loss fits the model's output: loss.head (sigmoid for BCELoss, "
                    "log_softmax for NLLLoss, none for raw scores) and loss.targets",
                ) from err
    finally:
        for hook in hooks:
            hook.remove()
    check_loss(setup, loss, out)
    try:
        loss.backward()
    except Exception as err:
        raise refuse(f"loss.backward() failed: {type(err).__name__}: {str(err).strip().splitlines()[0]}"
                     + where(err), key=MODEL_KEY) from err
    return out, loss, ran


