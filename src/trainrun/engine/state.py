"""What a run's state is (``TrainState``, everything a checkpoint holds of the loop) and the
roles the loop talks to (``Progress``, ``Reporter``, ``StepStop``): protocols, so the console,
the range test, the profiler and the benchmark can each hand ``fit`` their own."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from trainrun.engine.epoch_losses import EpochLosses


@dataclass
class TrainState:
    """Where a run stands; everything here goes into the checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the current, unfinished epoch (mid-epoch checkpoints)
    step_losses: EpochLosses = field(default_factory=EpochLosses)  # of that unfinished epoch
    best: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None  # with trainer.val_every_n_steps, an epoch holds several rows
    row_start: int = 0  # the batch of this epoch where the next row's train_loss starts
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None


class Progress(Protocol):
    def step(self, loss: torch.Tensor) -> None: ...


class StepStop(Protocol):
    """What ``train_epoch`` asks after each optimizer step: stop now? (``engine.stop.Stop`` is
    one; the learning-rate range test, ``tools.lr_find.RangeTest``, another)."""

    def after_step(self, state: TrainState, epoch: int) -> bool: ...


class Reporter(Protocol):
    """What ``fit`` tells the outside world (``trainrun.report.console.Reporter`` is one)."""

    def progress(self, epoch: int, steps: int) -> contextlib.AbstractContextManager[Progress]: ...

    def epoch_end(self, row: dict[str, Any], state: TrainState) -> None: ...


class _NoProgress:
    def step(self, loss: torch.Tensor) -> None:
        pass


NO_PROGRESS = _NoProgress()
