"""The loop: ``train_epoch`` (the canonical loop), ``eval_epoch`` (no_grad) and ``fit`` (epochs).

Read ``train_epoch`` top to bottom: it is ``zero_grad -> out = model(x) -> loss = criterion(out, y)
-> backward -> step``, with the standard levers as visible lines: autocast (``trainer.precision``),
the gradient scaler (fp16), accumulation over ``k`` batches (DDP's ``no_sync``, FSDP2's
``set_requires_gradient_sync(False)``, on all but the last), clipping (FSDP's sharded gradients
too: ``clip_grad_norm_`` reduces their norm over the shards), and a per-step scheduler. Loss
values stay on the device: each step's loss is kept as a 0-d device tensor, and the epoch's
sample-weighted mean is read once, at the end. Everything it reads comes from
``setup.settings`` (typed, read once by ``build``), never from the config; everything that may
end the run is asked of one ``stop``.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from trainrun.build.parallel import skipping_sync
from trainrun.build.setup import Batches, Setup
from trainrun.engine.collectives import all_finite, all_reduce_sum, micro_batch_weights
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.engine.state import NO_PROGRESS, Progress, Reporter, TrainState
from trainrun.engine.stop import Stop, better
from trainrun.errors import TRAINING_ERROR, TrainrunError


def train_epoch(setup: Setup, state: TrainState, epoch: int, stop: Stop,
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

    model.train()
    for i, (x, y) in enumerate(setup.train_batches.epoch(epoch, state.batch), start=state.batch):
        steps_now = (i + 1) % k == 0 or i + 1 == n  # last batch of the window: step after it
        if i % k == 0:
            optimizer.zero_grad(set_to_none=True)
        # DDP: all-reduce gradients only on the batch that steps; autocast: bf16/fp16 forward
        with no_sync() if no_sync and not steps_now else contextlib.nullcontext(), setup.autocast():
            out = model(x)
            loss = criterion(out, y)
        losses.append(loss.detach())
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
            state.step += 1
        state.batch = i + 1  # after its step: an error in step() is reported at this batch
        if steps_now and stop.after_step(state, epoch):  # signals, step checkpoints
            return False
    return True


def check_rates(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
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


def epoch_mean(setup: Setup, losses: torch.Tensor) -> tuple[float, int]:
    """The sample-weighted mean of the epoch's batch losses over all ranks (one read), and the
    index of the first non-finite batch loss (-1 if none)."""
    sizes = setup.train_batches.sizes
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
    epoch or until ``stop`` says so (by default: only early stopping; no signals, no files)."""
    s = setup.settings
    stop = stop or Stop.for_setup(setup, checkpoints=None)
    if stop.before_training(state):
        return state
    for epoch in range(state.epoch, s.epochs):
        started = time.perf_counter()
        with reporter.progress(epoch, len(setup.train_batches)) as progress:
            if not train_epoch(setup, state, epoch, stop, progress):
                return state  # stopped mid-epoch; the checkpoint holds where
        losses = state.step_losses.stacked()
        train_loss, first_bad = epoch_mean(setup, losses)
        seconds = time.perf_counter() - started
        stop.check_losses(epoch, losses, first_bad)  # on_nonfinite=stop ends it here
        row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": train_loss}
        if setup.val_batches is not None:
            row.update({f"val_{k}": v for k, v in eval_epoch(setup, setup.val_batches).items()})
        row["lr"] = float(setup.optimizer.param_groups[0]["lr"])
        row["seconds"] = seconds
        row["samples_per_s"] = setup.train_batches.num_samples * setup.world_size / max(seconds, 1e-9)
        if s.scheduler_interval == "epoch":
            if s.scheduler_monitor:
                setup.scheduler.step(row[s.scheduler_monitor])
            else:
                setup.scheduler.step()
            check_rates(setup.optimizer, setup.scheduler)

        state.epoch, state.batch, state.step_losses = epoch + 1, 0, EpochLosses()
        state.history.append(row)
        value = row[s.monitor]
        improved = better(value, state.best, s.mode)
        if improved:
            state.best, state.best_epoch = value, epoch + 1
        reporter.epoch_end(row, state)
        if stop.after_epoch(state, improved):  # early stopping; last.pt / best.pt
            break
    return state

