"""The one answer to "stop now?", which the loop asks after every optimizer step and every
epoch (:class:`Stop`). Everything that can end or pause a run speaks through it:

* **signals** (SIGINT/SIGTERM/SIGUSR1/SIGUSR2, :class:`Signals`): finish the step, save
  ``last.pt``, stop; under DDP the ranks agree on the step first (:class:`AgreedSignals`);
* **step checkpoints** (``checkpoint.every_n_steps``) and the epoch's ``last.pt`` / ``best.pt``;
* **non-finite losses** (``trainer.on_nonfinite=stop``): the run ends naming the batch, and no
  checkpoint holding weights trained on a NaN is ever written;
* **early stopping** (``trainer.early_stopping``), decided from the history alone, so a resumed
  run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainrun.build.settings import EarlyStopping, LoopSettings
from trainrun.build.setup import Setup
from trainrun.engine.collectives import all_reduce_max
from trainrun.engine.signals import AgreedSignals, Signals
from trainrun.engine.state import TrainState
from trainrun.engine.writer import CheckpointWriter
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import BEST, LAST


def better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def early_stopping_reason(history: list[dict[str, Any]], stopping: EarlyStopping | None) -> str | None:
    """Why the run should stop now, or None. Recomputed from the whole history (so a resumed run
    decides exactly as an uninterrupted one, with nothing extra saved): an epoch improves when
    ``monitor`` beats the best so far by more than ``min_delta`` in ``mode``'s direction; the
    run stops once the last ``patience`` epochs (at least one) have not improved."""
    if stopping is None or not history:
        return None
    best, best_epoch, stale = None, 0, 0
    for row in history:
        value = row.get(stopping.monitor, row["train_loss"])
        if better(value, best, stopping.mode, stopping.min_delta):
            best, best_epoch, stale = value, row["epoch"], 0
        else:
            stale += 1
    if stale < max(stopping.patience, 1):
        return None
    best_text = "none (never finite)" if best is None else f"{best:.6g} at epoch {best_epoch}"
    # trainer.val_every_n_steps: several rows per epoch, and patience counts validations
    unit = "validation" if len({row["epoch"] for row in history}) < len(history) else "epoch"
    return (
        f"early stopping after epoch {history[-1]['epoch']}: {stopping.monitor} has not improved "
        f"by more than {stopping.min_delta} for {stale} {unit}{'s' * (stale != 1)} "
        f"(patience {stopping.patience}; best {best_text})"
    )


def nonfinite_error(epoch: int, losses: torch.Tensor, first_bad: int) -> TrainrunError:
    last_finite = losses[:first_bad][-1:].tolist() or [None]
    return TrainrunError(
        f"the loss became non-finite in epoch {epoch + 1}, batch {first_bad + 1} "
        f"(last finite loss: {last_finite[0]}); the learning rate may be too high, or "
        "the data may hold extreme values. Checkpoints written before it are kept; none "
        "holding those weights was written.",
        key="optim.lr",
        fix="lower optim.lr, check the data, clip gradients (trainer.grad_clip.max_norm=1), "
        "or set trainer.on_nonfinite=skip",
        exit_code=TRAINING_ERROR,
    )


class Stop:
    """Asked by the loop after each optimizer step (:meth:`after_step`), when an epoch's losses
    are in (:meth:`check_losses`) and after each epoch (:meth:`after_epoch`); saves what must be
    saved at that moment through ``writer``."""

    def __init__(self, settings: LoopSettings, signals: Signals | AgreedSignals,
                 writer: CheckpointWriter, num_batches: int, world_size: int = 1) -> None:
        self.settings, self.signals, self.writer = settings, signals, writer
        self.num_batches, self.world_size = num_batches, world_size
        self.every_n_steps = settings.every_n_steps
        self.stopped_by_signal = False
        self.requested: str | None = None  # a callback's run.stop(reason)
        self.validation_due = False  # trainer.val_every_n_steps: fit validates, then goes on
        self._requests = False  # whether anything may request (then the ranks agree each epoch)
        # Asked after each epoch with the history, after early stopping: a reason to stop, or None
        # (a sweep's pruner, trainrun.cli.trial). ``judged`` keeps the reason one of them gave.
        self.judges: list[Callable[[list[dict[str, Any]]], str | None]] = []
        self.judged: str | None = None

    @classmethod
    def for_setup(cls, setup: Setup, checkpoints: Path | None,
                  signals: Signals | AgreedSignals | None = None) -> Stop:
        """The stop of ``setup``'s run: checkpoints into the folder ``checkpoints`` (None: no
        files), listening to ``signals`` (None: to nothing)."""
        enabled = checkpoints is not None and setup.settings.save_checkpoints
        writer = CheckpointWriter(setup, checkpoints or Path("."), enabled=enabled)
        return cls(setup.settings, signals or Signals(), writer, len(setup.train_batches),
                   setup.world_size)

    def before_training(self, state: TrainState) -> bool:
        """A run resumed after the epoch (or the validation inside one) that triggered early
        stopping stops again at once. One
        resumed at a validation step whose row it had not recorded yet (saved at that step, by a
        signal or ``checkpoint.every_n_steps``, before the validation) validates first."""
        val_every = self.settings.val_every_n_steps
        recorded = bool(state.history) and (state.history[-1]["epoch"], state.history[-1]["step"]) == \
            (state.epoch + 1, state.step)
        # at an epoch's end, or right after a validation inside one (trainer.val_every_n_steps)
        state.stop_reason = (early_stopping_reason(state.history, self.settings.early_stopping)
                             if not state.batch or recorded else None)
        self.validation_due = bool(val_every and 0 < state.batch < self.num_batches
                                   and state.step % val_every == 0 and not recorded)
        return state.stop_reason is not None

    def after_step(self, state: TrainState, epoch: int) -> bool:
        """True stops the run now (a signal came; last.pt is saved)."""
        if self.signals.requested():
            self._refuse_nonfinite_so_far(state, epoch)
            self.stopped_by_signal = True
            self.writer.save(state)
            return True
        every = self.every_n_steps
        if every and state.step % every == 0 and state.batch < self.num_batches:
            self._refuse_nonfinite_so_far(state, epoch)
            self.writer.save(state)
        val_every = self.settings.val_every_n_steps  # not at an epoch's end: its own row follows
        if val_every and state.step % val_every == 0 and state.batch < self.num_batches:
            self.validation_due = True
            return True
        return False

    def check_losses(self, epoch: int, losses: torch.Tensor, first_bad: int) -> None:
        """Under ``on_nonfinite=stop``, a non-finite batch loss in the epoch ends the run."""
        if first_bad >= 0 and not self.settings.skip_nonfinite:
            raise nonfinite_error(epoch, losses, first_bad)

    def check_validation(self, epoch: int, row: dict[str, Any]) -> None:
        """A non-finite validation loss (or monitored value) ends the run: the model's eval mode
        gave what no checkpoint, early stopping or objective can be judged by. Training losses
        are finite here, so it is the model under ``model.eval()`` (dropout off, BatchNorm's
        running statistics), not the step."""
        bad = [k for k in dict.fromkeys(("val_loss", self.settings.monitor))
               if isinstance(row.get(k), float) and not math.isfinite(row[k])]
        if bad:
            raise TrainrunError(
                f"validation in epoch {epoch + 1} gave {bad[0]}={row[bad[0]]} while the training losses were "
                "finite: the model's outputs in eval mode (model.eval(), under torch.no_grad()) are not finite. "
                "Checkpoints written before it are kept; none holding these weights was written.",
                key="model._target_",
                fix="check what forward does when self.training is False (BatchNorm's running statistics, a "
                "division by a tiny number); data.val_fraction=0 trains without validation",
                exit_code=TRAINING_ERROR,
            )

    def listen_for_requests(self, on: bool) -> None:
        """Callbacks may call :meth:`request` (``run.stop``): read it after each epoch."""
        self._requests = on

    def request(self, reason: str) -> None:
        """Stop after this epoch (a callback's ``run.stop(reason)``)."""
        self.requested = self.requested or reason

    def _agreed_request(self) -> str | None:
        """A stop requested on any rank stops every rank at the same epoch (one small all-reduce
        per epoch, only when callbacks could request)."""
        if not self._requests or self.world_size == 1:
            return self.requested
        flag = torch.tensor([1 if self.requested else 0], device=self.writer.setup.device)
        if int(all_reduce_max(flag, self.world_size).item()) and not self.requested:
            self.requested = "a callback on another process asked to stop"
        return self.requested

    def after_validation(self, state: TrainState, improved: bool) -> bool:
        """After a validation inside an epoch (``trainer.val_every_n_steps``): ``best.pt`` when it
        improved; True ends the run (early stopping, a callback), with ``last.pt`` saved."""
        self.validation_due = False
        state.stop_reason = (self._agreed_request()
                             or early_stopping_reason(state.history, self.settings.early_stopping))
        names = ([BEST] if improved else []) + ([LAST] if state.stop_reason else [])
        if names:
            self._refuse_nonfinite_so_far(state, state.epoch)
            self.writer.save(state, *names)
        return state.stop_reason is not None

    def after_epoch(self, state: TrainState, improved: bool) -> bool:
        """At the end of an epoch whose row is in ``state.history``: True ends the run."""
        state.stop_reason = (self._agreed_request()
                             or early_stopping_reason(state.history, self.settings.early_stopping))
        for judge in self.judges if state.stop_reason is None else ():
            self.judged = state.stop_reason = judge(state.history)
            if self.judged:
                break
        names = [BEST] if improved else []
        if (state.epoch % self.settings.every_n_epochs == 0 or state.epoch == self.settings.epochs
                or state.stop_reason):
            names.append(LAST)  # last.pt records the stop as well
        if names:
            self.writer.save(state, *names)
        return state.stop_reason is not None

    def _refuse_nonfinite_so_far(self, state: TrainState, epoch: int) -> None:
        """Before a mid-epoch save under ``on_nonfinite=stop``: a NaN so far ends the run here,
        so no checkpoint ever holds weights a NaN was trained into (one sync per save)."""
        if self.settings.skip_nonfinite or not state.step_losses:
            return
        done = state.step_losses.stacked()
        finite = torch.isfinite(done)
        bad = all_reduce_max((~finite).any().long().reshape(1), self.world_size)  # DDP: agreed
        if bool(bad.item()):
            local = torch.nonzero(~finite)  # empty when only another rank saw it
            raise nonfinite_error(epoch, done, int(local[0, 0]) if len(local) else state.batch - 1)
