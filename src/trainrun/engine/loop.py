"""The loop: ``train_epoch`` (the canonical loop), ``eval_epoch`` (no_grad) and ``fit`` (epochs).

Read ``train_epoch`` top to bottom: it is ``zero_grad -> out = model(x) -> loss = criterion(out, y)
-> backward -> step``, with the standard levers as visible lines: autocast (``trainer.precision``),
the gradient scaler (fp16), accumulation over ``k`` batches (DDP's ``no_sync``, FSDP2's
``set_requires_gradient_sync(False)``, on all but the last), clipping (FSDP's sharded gradients
too: ``clip_grad_norm_`` reduces their norm over the shards), and a per-step scheduler. Loss
values stay on the device: each step's loss is kept as a 0-d device tensor, and the epoch's
sample-weighted mean is read once, at the end. Under ``trainer.compile=reduce-overhead`` on
CUDA the same step, for every full batch, is one replay of a CUDA graph captured from these
lines (``trainrun.build.step_graph``). Everything it reads comes from ``setup.settings`` (typed,
read once by ``build``), never from the config; everything that may end the run is asked of one
``stop``.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from trainrun.build.parallel import skipping_sync
from trainrun.build.setup import Setup
from trainrun.data.batches import Batches
from trainrun.engine.collectives import all_finite, all_reduce_sum, micro_batch_weights
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.engine.state import NO_PROGRESS, Progress, Reporter, StepStop, TrainState
from trainrun.engine.stop import Stop, better
from trainrun.errors import TRAINING_ERROR, TrainrunError


def train_epoch(setup: Setup, state: TrainState, epoch: int, stop: StepStop,
                progress: Progress = NO_PROGRESS) -> bool:
    """Train one epoch (from ``state.batch`` on). Returns False if ``stop`` ended it after a
    step; ``state.step_losses`` then holds the losses of the batches done so far."""
    model, criterion, optimizer, scaler = setup.model, setup.criterion, setup.optimizer, setup.scaler
    s = setup.settings
    k = s.accumulate
    step_scheduler = setup.scheduler if s.scheduler_interval == "step" else None
    no_sync = skipping_sync(model)  # DDP's no_sync, FSDP2's set_requires_gradient_sync; None alone
    n = len(setup.train_batches)
    losses = state.step_losses
    # Each batch's share of its optimizer step (1/k when accumulating k equal batches; exact for
    # short last batches and DDP shards), so a step's gradient is the mean over its samples.
    weights = micro_batch_weights(setup.train_batches.sizes, k, setup.world_size)

    graph = setup.step_graph  # trainer.compile=reduce-overhead on CUDA; None otherwise

    model.train()
    for i, (x, y) in enumerate(setup.train_batches.epoch(epoch, state.batch), start=state.batch):
        steps_now = (i + 1) % k == 0 or i + 1 == n  # last batch of the window: step after it
        if graph is not None and graph.takes(x, y):  # the lines below, captured once as a CUDA graph
            loss = graph.replay(x, y)
            progress.step(loss)
        else:
            if i % k == 0:
                optimizer.zero_grad(set_to_none=True)
            # DDP: all-reduce gradients only on the batch that steps; autocast: bf16/fp16 forward
            with no_sync() if no_sync and not steps_now else contextlib.nullcontext(), setup.autocast():
                out = model(x)
                loss = criterion(out, y)
            if s.skip_nonfinite and not all_finite(loss, setup.world_size):  # opt-in: one sync per batch
                pass  # this batch adds no gradient; the rest of its window still steps
            else:  # fp16: the scaler scales the loss; accumulation/DDP: the batch's weight
                scaler.scale(loss * weights[i] if weights[i] != 1.0 else loss).backward()
            progress.step(loss)
            if steps_now:
                if s.clip_norm or s.clip_value:
                    scaler.unscale_(optimizer)  # clip true gradients, not fp16-scaled ones
                    if s.clip_norm:
                        torch.nn.utils.clip_grad_norm_(setup.raw_model.parameters(), s.clip_norm, s.clip_norm_type)
                    if s.clip_value:
                        torch.nn.utils.clip_grad_value_(setup.raw_model.parameters(), s.clip_value)
                scaler.step(optimizer)  # optimizer.step(), skipped by fp16's scaler on inf gradients
                scaler.update()
                if step_scheduler is not None:
                    step_scheduler.step()
                    check_rates(optimizer, step_scheduler)
        losses.append(loss.detach())
        if steps_now:
            state.step += 1
        state.batch = i + 1  # after its step: an error in step() is reported at this batch
        if steps_now and stop.after_step(state, epoch):  # signals, step checkpoints
            return False
    return True


def check_rates(optimizer: torch.optim.Optimizer, scheduler: LRScheduler) -> None:
    """After ``scheduler.step()``: a negative rate trains uphill and a NaN/inf one ruins the
    weights, both without an error from torch (a LambdaLR whose linear decay runs past its end
    goes below 0). Plain floats only: a tensor rate is not read (that would sync a device)."""
    for i, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        if isinstance(lr, float | int) and not (lr >= 0 and math.isfinite(lr)):
            raise TrainrunError(
                f"{type(scheduler).__name__} set the learning rate of parameter group {i} to {lr}: "
                "a negative rate climbs the loss instead of descending it, a non-finite one ruins "
                "the weights",
                key="scheduler._target_", exit_code=TRAINING_ERROR,
                fix="make the schedule stay at 0 or above for the whole run (e.g. clamp a linear "
                "decay with max(0, ...), or size it to trainer.epochs)",
            )


def epoch_mean(setup: Setup, losses: torch.Tensor, first: int = 0) -> tuple[float, int]:
    """The sample-weighted mean of the epoch's batch losses (from its batch ``first`` on) over
    all ranks (one read), and the index of the first non-finite batch loss (-1 if none)."""
    sizes = setup.train_batches.sizes[first:first + len(losses)]
    finite = torch.isfinite(losses)
    totals = torch.stack([
        torch.where(finite, losses * sizes, 0.0).sum(),
        torch.where(finite, sizes, 0.0).sum(),
        (~finite).sum().float(),
    ])
    total, count, bad = all_reduce_sum(totals, setup.world_size).tolist()
    mean = total / count if count else math.nan
    if not bad:
        return mean, -1
    local = torch.nonzero(~finite)  # empty when only another rank saw it
    return mean, int(local[0, 0]) if len(local) else len(losses) - 1


@torch.no_grad()
def eval_epoch(setup: Setup, batches: Batches) -> dict[str, float]:
    """Mean loss and metric over ``batches`` with the model in eval mode."""
    model, criterion, plan = setup.model, setup.criterion, setup.loss
    extra = setup.metrics  # torchmetrics, only when cfg.metrics asks for more (trainrun.build.metrics)
    model.eval()
    loss_sum = torch.zeros((), device=setup.device)
    metric_sum = torch.zeros((), device=setup.device)
    for x, y in batches.epoch():
        with setup.autocast():
            out = model(x)
            loss = criterion(out, y)
        loss_sum += loss.float() * len(x)
        metric_sum += plan.metric_sum(out, y)
        if extra is not None:
            extra.update(out, y)
    count = torch.tensor(float(batches.num_samples), device=setup.device)
    totals = all_reduce_sum(torch.stack([loss_sum, metric_sum, count]), setup.world_size)
    loss_total, metric_total, n = totals.tolist()
    result = {"loss": loss_total / n, plan.metric: plan.finish_metric(metric_total, int(n))}
    if extra is not None:
        result.update(extra.compute())  # torchmetrics gathers every rank's state here
    return result


def fit(setup: Setup, state: TrainState, reporter: Reporter, stop: Stop | None = None) -> TrainState:
    """Epochs of train -> evaluate -> report -> checkpoint, from ``state`` on, until the last
    epoch or until ``stop`` says so (by default: only early stopping; no signals, no files).
    With ``trainer.val_every_n_steps`` the stop also ends ``train_epoch`` at each validation
    point: a row is validated and recorded there, and the epoch goes on from that batch."""
    s = setup.settings
    stop = stop or Stop.for_setup(setup, checkpoints=None)
    if stop.before_training(state):
        return state
    for epoch in range(state.epoch, s.epochs):
        started = time.perf_counter()
        with reporter.progress(epoch, len(setup.train_batches)) as progress:
            # (a validation already due: resumed at a step saved before its validation)
            while stop.validation_due or not train_epoch(setup, state, epoch, stop, progress):
                if not stop.validation_due:
                    return state  # stopped mid-epoch; the checkpoint holds where
                row = validation_row(setup, state, epoch, stop, started)  # trainer.val_every_n_steps
                state.row_start, started = state.batch, time.perf_counter()
                if stop.after_validation(state, record(setup, state, row, reporter)):
                    return state  # early stopping or a callback, inside the epoch
        row = validation_row(setup, state, epoch, stop, started)
        if s.scheduler_interval == "epoch" and (scheduler := setup.scheduler) is not None:
            if s.scheduler_monitor:
                scheduler.step(row[s.scheduler_monitor])
            else:
                scheduler.step()
            check_rates(setup.optimizer, scheduler)

        state.epoch, state.batch, state.step_losses, state.row_start = epoch + 1, 0, EpochLosses(), 0
        if stop.after_epoch(state, record(setup, state, row, reporter)):  # early stopping; last.pt / best.pt
            break
    return state


def validation_row(setup: Setup, state: TrainState, epoch: int, stop: Stop, started: float) -> dict[str, Any]:
    """The row of metrics for the batches since the last row (the whole epoch, unless
    ``trainer.val_every_n_steps`` validated inside it): their mean train loss, then validation."""
    first = state.row_start
    losses = state.step_losses.stacked()
    train_loss, first_bad = epoch_mean(setup, losses[first:], first)
    seconds = time.perf_counter() - started
    stop.check_losses(epoch, losses, first_bad + first if first_bad >= 0 else -1)  # on_nonfinite=stop
    row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": train_loss}
    if setup.val_batches is not None:
        row.update({f"val_{k}": v for k, v in eval_epoch(setup, setup.val_batches).items()})
        stop.check_validation(epoch, row)  # a non-finite validation loss ends the run (exit 1)
    samples = setup.train_batches.num_samples if first == 0 and len(losses) == len(setup.train_batches) \
        else float(setup.train_batches.sizes[first:len(losses)].sum())
    row["lr"] = float(setup.optimizer.param_groups[0]["lr"])
    row["seconds"] = seconds
    row["samples_per_s"] = samples * setup.world_size / max(seconds, 1e-9)
    return row


def record(setup: Setup, state: TrainState, row: dict[str, Any], reporter: Reporter) -> bool:
    """Add ``row`` to the history, note whether it is the best so far, report it; returns
    whether it improved on ``checkpoint.monitor``."""
    s = setup.settings
    state.history.append(row)
    improved = better(row[s.monitor], state.best, s.mode)
    if improved:
        state.best, state.best_epoch, state.best_step = row[s.monitor], row["epoch"], row["step"]
    reporter.epoch_end(row, state)
    return improved
