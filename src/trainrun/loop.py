"""The loop: ``train_epoch`` (the canonical loop), ``evaluate`` (no_grad) and ``fit`` (epochs).

Read ``train_epoch`` top to bottom: it is ``zero_grad -> out = model(x) -> loss = criterion(out, y)
-> backward -> step``, with the standard levers as visible lines: autocast (``trainer.precision``),
the gradient scaler (fp16), accumulation over ``k`` batches (DDP's ``no_sync`` on all but the
last), clipping, and a per-step scheduler. Loss values stay on the device: each step's loss is
copied into a device tensor, and the epoch's sample-weighted mean is read once, at the end.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from trainrun.build import Run
from trainrun.distributed import all_finite, all_reduce_sum, micro_batch_weights
from trainrun.errors import TRAINING_ERROR, TrainrunError


@dataclass
class TrainState:
    """Where a run stands; everything here goes into the checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the current, unfinished epoch (mid-epoch checkpoints)
    step_losses: torch.Tensor | None = None  # per-batch losses of that unfinished epoch
    best: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None


class _NoProgress:
    def step(self, loss: torch.Tensor) -> None:
        pass


NO_PROGRESS = _NoProgress()


def train_epoch(
    run: Run,
    state: TrainState,
    epoch: int,
    *,
    progress: Any = NO_PROGRESS,
    after_step: Callable[[TrainState], bool] | None = None,
) -> bool:
    """Train one epoch (from ``state.batch`` on). Returns False if ``after_step`` asked to stop
    mid-epoch; ``state.step_losses`` then holds the losses of the batches done so far."""
    model, criterion, optimizer, scaler = run.model, run.criterion, run.optimizer, run.scaler
    trainer = run.cfg.trainer
    k = trainer.accumulate_grad_batches
    max_norm, max_value = trainer.grad_clip.max_norm, trainer.grad_clip.max_value
    skip_nonfinite = str(trainer.on_nonfinite.value) == "skip"
    step_scheduler = run.scheduler if run.scheduler_interval == "step" else None
    no_sync = getattr(model, "no_sync", None)
    n = len(run.train_batches)
    if state.step_losses is None:
        state.step_losses = torch.zeros(n, device=run.device)
    losses = state.step_losses
    # Each batch's share of its optimizer step (1/k when accumulating k equal batches; exact for
    # short last batches and DDP shards), so a step's gradient is the mean over its samples.
    weights = micro_batch_weights(run.train_batches.sizes, k, run)

    model.train()
    for i, (x, y) in enumerate(run.train_batches.epoch(epoch, state.batch), start=state.batch):
        steps_now = (i + 1) % k == 0 or i + 1 == n  # last batch of the window: step after it
        if i % k == 0:
            optimizer.zero_grad(set_to_none=True)
        with no_sync() if no_sync and not steps_now else contextlib.nullcontext(), run.autocast():
            out = model(x)
            loss = criterion(out, y)
        losses[i] = loss.detach()
        if skip_nonfinite and not all_finite(loss, run):  # opt-in: one sync per batch (all ranks)
            pass  # this batch adds no gradient; the rest of its window still steps
        else:
            scaler.scale(loss * weights[i] if weights[i] != 1.0 else loss).backward()
        progress.step(loss)
        state.batch = i + 1
        if steps_now:
            if max_norm or max_value:
                scaler.unscale_(optimizer)  # clip true gradients, not fp16-scaled ones
                if max_norm:
                    torch.nn.utils.clip_grad_norm_(run.module.parameters(), max_norm,
                                                   trainer.grad_clip.norm_type)
                if max_value:
                    torch.nn.utils.clip_grad_value_(run.module.parameters(), max_value)
            scaler.step(optimizer)
            scaler.update()
            if step_scheduler is not None:
                step_scheduler.step()
            state.step += 1
            if after_step is not None and after_step(state):
                return False
    return True


def epoch_mean(run: Run, losses: torch.Tensor) -> tuple[float, int]:
    """The sample-weighted mean of the epoch's batch losses over all ranks (one read), and the
    index of the first non-finite batch loss (-1 if none)."""
    sizes = run.train_batches.sizes
    finite = torch.isfinite(losses)
    totals = torch.stack([
        torch.where(finite, losses * sizes, 0.0).sum(),
        torch.where(finite, sizes, 0.0).sum(),
        (~finite).sum().float(),
    ])
    total, count, bad = all_reduce_sum(totals, run).tolist()
    mean = total / count if count else math.nan
    if not bad:
        return mean, -1
    local = torch.nonzero(~finite)  # empty when only another rank saw it
    return mean, int(local[0, 0]) if len(local) else len(losses) - 1


@torch.no_grad()
def evaluate(run: Run, batches: Any) -> dict[str, float]:
    """Mean loss and metric over ``batches`` with the model in eval mode."""
    model, criterion, loss_plan = run.model, run.criterion, run.loss
    extra = run.metrics  # torchmetrics, only when cfg.metrics asks for more (trainrun.metrics)
    model.eval()
    loss_sum = torch.zeros((), device=run.device)
    metric_sum = torch.zeros((), device=run.device)
    for x, y in batches.epoch():
        with run.autocast():
            out = model(x)
            loss = criterion(out, y)
        loss_sum += loss.float() * len(x)
        metric_sum += loss_plan.metric_sum(out, y)
        if extra is not None:
            extra.update(out, y)
    count = torch.tensor(float(batches.num_samples), device=run.device)
    loss_total, metric_total, n = all_reduce_sum(torch.stack([loss_sum, metric_sum, count]), run).tolist()
    result = {"loss": loss_total / n, loss_plan.metric: loss_plan.finish_metric(metric_total, int(n))}
    if extra is not None:
        result.update(extra.compute())  # torchmetrics gathers every rank's state here
    return result


def current_lr(run: Run) -> float:
    return float(run.optimizer.param_groups[0]["lr"])


def better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def early_stopping_reason(history: list[dict[str, Any]], stopping: Any) -> str | None:
    """Why the run should stop now, or None. Recomputed from the whole history (so a resumed run
    decides exactly as an uninterrupted one, with nothing extra saved): an epoch improves when
    ``monitor`` beats the best so far by more than ``min_delta`` in ``mode``'s direction; the
    run stops once the last ``patience`` epochs (at least one) have not improved."""
    if stopping.patience is None or not history:
        return None
    mode = str(getattr(stopping.mode, "value", stopping.mode))
    best, best_epoch, stale = None, 0, 0
    for row in history:
        value = row.get(stopping.monitor, row["train_loss"])
        if better(value, best, mode, stopping.min_delta):
            best, best_epoch, stale = value, row["epoch"], 0
        else:
            stale += 1
    if stale < max(stopping.patience, 1):
        return None
    best_text = "none (never finite)" if best is None else f"{best:.6g} at epoch {best_epoch}"
    return (
        f"early stopping after epoch {history[-1]['epoch']}: {stopping.monitor} has not improved "
        f"by more than {stopping.min_delta} for {stale} epoch{'s' * (stale != 1)} "
        f"(patience {stopping.patience}; best {best_text})"
    )


def fit(run: Run, state: TrainState, reporter: Any, checkpoints: Any = None) -> TrainState:
    """Epochs of train -> evaluate -> report -> checkpoint, from ``state`` on.

    ``reporter`` shows progress and writes metrics; ``checkpoints`` (optional) saves state and
    may stop the run between steps (signals, ``every_n_steps``).
    """
    trainer = run.cfg.trainer
    monitor = run.cfg.checkpoint.monitor
    mode = str(run.cfg.checkpoint.mode.value)
    stopping = trainer.early_stopping
    after_step = checkpoints.after_step if checkpoints is not None else None
    # A run resumed after the epoch that triggered early stopping stops again, before training.
    state.stop_reason = early_stopping_reason(state.history, stopping) if not state.batch else None
    if state.stop_reason:
        return state
    for epoch in range(state.epoch, trainer.epochs):
        started = time.perf_counter()
        with reporter.progress(epoch, len(run.train_batches)) as progress:
            finished = train_epoch(run, state, epoch, progress=progress, after_step=after_step)
        if not finished:
            return state  # stopped mid-epoch; the checkpoint holds where
        train_loss, first_bad = epoch_mean(run, state.step_losses)
        seconds = time.perf_counter() - started
        if first_bad >= 0 and str(trainer.on_nonfinite.value) == "stop":
            last_finite = state.step_losses[:first_bad][-1:].tolist() or [None]
            raise TrainrunError(
                f"the loss became non-finite in epoch {epoch + 1}, batch {first_bad + 1} "
                f"(last finite loss: {last_finite[0]}); the learning rate may be too high, or "
                "the data may hold extreme values. Files written so far are kept.",
                key="optim.lr",
                fix="lower optim.lr, check the data, clip gradients (trainer.grad_clip.max_norm=1), "
                "or set trainer.on_nonfinite=skip",
                exit_code=TRAINING_ERROR,
            )
        row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": train_loss}
        if run.val_batches is not None:
            row.update({f"val_{k}": v for k, v in evaluate(run, run.val_batches).items()})
        row["lr"] = current_lr(run)
        row["seconds"] = seconds
        row["samples_per_s"] = run.train_batches.num_samples * run.world_size / max(seconds, 1e-9)

        if run.scheduler is not None and run.scheduler_interval == "epoch":
            plateau_on = run.cfg.scheduler.monitor
            if plateau_on:
                run.scheduler.step(row.get(plateau_on, train_loss))
            else:
                run.scheduler.step()

        state.epoch, state.batch, state.step_losses = epoch + 1, 0, None
        state.history.append(row)
        value = row.get(monitor, train_loss)
        improved = better(value, state.best, mode)
        if improved:
            state.best, state.best_epoch = value, epoch + 1
        reporter.epoch_end(row, state)
        state.stop_reason = early_stopping_reason(state.history, stopping)
        if checkpoints is not None:
            checkpoints.epoch_end(state, improved)  # last.pt records the stop as well
        if state.stop_reason:
            break
    return state
