"""``lr_find=true|apply``: a learning-rate range test before training, the way Lightning's
``Tuner.lr_find`` does it.

From the run's initial weights, ``lr_finder.steps`` optimizer steps (100) are taken with a
learning rate that grows exponentially from ``min_lr`` (1e-8) to ``max_lr`` (1): step ``i`` uses
``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. The steps are the run's own loop,
:func:`trainrun.engine.loop.train_epoch` (autocast, accumulation, clipping, DDP as configured),
driven from outside through the two objects it already calls: the progress object (each batch's
loss) and the stop object (after each optimizer step: record, set the next learning rate, stop
at the last step or once the loss diverges). Nothing in the loop knows it is a range test.

Lightning's rules: the loss of each step is smoothed (``avg = 0.98 avg + 0.02 loss``, divided by
``1 - 0.98 ** (i + 1)``); the test stops once the smoothed loss exceeds
``early_stop_threshold`` (4) times its best; the suggestion is the learning rate at the steepest
descent of the smoothed loss, skipping the first 10 steps and the last one (and non-finite
values). The slope is taken against ``log(lr)``, the axis the rates are spaced and plotted on,
as Lightning up to 2.0 did (``np.gradient(loss)`` over evenly spaced steps); its newer spacing by
``lr`` itself lets batch noise at the tiniest rates win (on digits: 6e-8 instead of 0.02). Under
DDP each step's loss is the mean over all ranks, so every rank takes the same decisions.

Afterwards the model, optimizer, scheduler, gradient scaler, ``.grad`` fields and random streams
are exactly as before (bit-identical weights after training, with or without ``lr_find=true``).
``lr_find=apply`` then builds the run again with ``optim.lr`` set to the suggestion, as if it had
been typed on the command line, so the schedulers, the checkpoint's config, the loggers' params
and ``summary.json`` all carry it. A resumed run skips the test: its checkpoint holds the rate.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from trainrun.build.setup import Setup, build
from trainrun.engine.checkpoint import load
from trainrun.engine.collectives import all_reduce_sum
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.engine.loop import TrainState, train_epoch
from trainrun.engine.resume import find
from trainrun.errors import TrainrunError
from trainrun.files import LR_FIND_CSV, LR_FIND_PNG, atomic_write_text
from trainrun.preflight.run import preserved
from trainrun.report.plots import write_lr_find

MODES = ("false", "true", "apply")
BETA = 0.98  # Lightning's smoothing of the loss
SKIP_BEGIN, SKIP_END = 10, 1  # Lightning's suggestion skips these steps


def mode(cfg: DictConfig) -> str:
    """``lr_find`` as a word: false, true or apply (``lr_find=true`` arrives as ``True``)."""
    return str(cfg.get("lr_find", "false")).strip().lower()


def schedule(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """The learning rate of each step: exponentially spaced from ``min_lr`` to ``max_lr``."""
    if steps == 1:
        return [min_lr]
    return [min_lr * (max_lr / min_lr) ** (i / (steps - 1)) for i in range(steps)]


def suggestion(lrs: list[float], smoothed: list[float]) -> int | None:
    """The index of the suggested learning rate (Lightning's rule), or None with fewer than two
    usable points."""
    losses = torch.tensor(smoothed[SKIP_BEGIN:-SKIP_END], dtype=torch.float64)
    rates = torch.tensor(lrs[SKIP_BEGIN:-SKIP_END], dtype=torch.float64)
    finite = torch.isfinite(losses)
    if int(finite.sum()) < 2:
        return None
    # The slope against log(lr), the axis the rates are spaced on (and plotted): against lr
    # itself, batch noise at 1e-8..1e-7 (where a step moves the rate by 1e-9) has the steepest slope.
    gradients = torch.gradient(losses[finite], spacing=[rates[finite].log()])[0]
    kept = torch.arange(len(smoothed))[SKIP_BEGIN:-SKIP_END][finite]
    return int(kept[int(torch.argmin(gradients))])


class RangeTest:
    """The progress and stop objects ``train_epoch`` calls: records each step's loss at its
    learning rate and sets the next one."""

    def __init__(self, setup: Setup, lrs: list[float], threshold: float | None) -> None:
        self.setup, self.planned, self.threshold = setup, lrs, threshold
        self.window: list[torch.Tensor] = []  # the batch losses of the current optimizer step
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.average, self.best = 0.0, math.inf
        self.diverged_at: int | None = None
        self._set_lr(lrs[0])

    def _set_lr(self, lr: float) -> None:
        for group in self.setup.optimizer.param_groups:
            group["lr"] = lr

    def step(self, loss: torch.Tensor) -> None:  # progress: after each batch's backward
        self.window.append(loss.detach().float())

    def after_step(self, state: TrainState, epoch: int) -> bool:  # stop: after each optimizer step
        i = len(self.lrs)
        total = torch.stack([torch.stack(self.window).sum(), torch.tensor(float(len(self.window)),
                                                                          device=self.window[0].device)])
        self.window = []
        loss_sum, count = all_reduce_sum(total, self.setup.world_size).tolist()  # DDP: every rank's
        loss = loss_sum / count
        self.lrs.append(self.planned[i])
        self.losses.append(loss)
        self.average = BETA * self.average + (1 - BETA) * loss
        smoothed = self.average / (1 - BETA ** (i + 1))
        self.smoothed.append(smoothed)
        if i > 0 and (not math.isfinite(smoothed)
                      or (self.threshold is not None and smoothed > self.threshold * self.best)):
            self.diverged_at = i
            return True
        self.best = min(self.best, smoothed)
        if i + 1 == len(self.planned):
            return True
        self._set_lr(self.planned[i + 1])
        return False


def range_test(setup: Setup, min_lr: float, max_lr: float, steps: int,
               threshold: float | None) -> RangeTest:
    """Run the test; everything it touched is restored on return."""
    optimizer = copy.deepcopy(setup.optimizer.state_dict())
    scheduler = copy.deepcopy(setup.scheduler.state_dict()) if setup.scheduler is not None else None
    scaler = copy.deepcopy(setup.scaler.state_dict())
    test = RangeTest(setup, schedule(min_lr, max_lr, steps), threshold)
    # The test sets the rates itself: the run's scheduler sits out (a per-step OneCycleLR would
    # also refuse to step past its planned total).
    run_scheduler, setup.scheduler = setup.scheduler, None
    with preserved(setup):  # weights, buffers, .grad, train/eval flags, random streams
        try:
            state, epoch = TrainState(), 0
            while train_epoch(setup, state, epoch, test, test):  # type: ignore[arg-type]
                epoch, state.batch, state.step_losses = epoch + 1, 0, EpochLosses()  # more steps than batches
        finally:
            setup.scheduler = run_scheduler
            setup.optimizer.load_state_dict(optimizer)
            if scheduler is not None:
                setup.scheduler.load_state_dict(scheduler)
            setup.scaler.load_state_dict(scaler)
    return test


def results_csv(test: RangeTest, chosen: int | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed_loss", "suggested"])
    for i, (lr, loss, smoothed) in enumerate(zip(test.lrs, test.losses, test.smoothed, strict=True)):
        writer.writerow([i + 1, repr(lr), repr(loss), repr(smoothed), int(i == chosen)])
    return out.getvalue()


def find_if_asked(cfg: DictConfig, setup: Setup, run_dir: Path, *, rank: int, world_size: int,
                  say: Callable[[str], None]) -> tuple[Setup, dict[str, Any] | None]:
    """``lr_find=true|apply``: run the range test, write ``lr_find.csv``/``lr_find.png`` (rank 0)
    and say the suggestion; with ``apply``, return the run built again with it. Returns the
    setup to train and what ``summary.json`` records (None when not asked or resumed)."""
    asked = mode(cfg)
    if asked == "false":
        return setup, None
    checkpoint = find(str(cfg.resume), run_dir) if cfg.resume else None
    if checkpoint is not None:  # the checkpoint's optimizer state holds the learning rate
        if asked == "apply":
            cfg.optim.lr = load(checkpoint, trust=True)["config"]["optim"]["lr"]
        say(f"lr_find={asked}: skipped, the run resumes from {checkpoint} (optim.lr={cfg.optim.lr:g})")
        return setup, None
    finder = cfg.lr_finder
    test = range_test(setup, float(finder.min_lr), float(finder.max_lr), int(finder.steps),
                      finder.early_stop_threshold)
    chosen = suggestion(test.lrs, test.smoothed)
    suggested = test.lrs[chosen] if chosen is not None else None
    written = []
    if rank == 0:
        atomic_write_text(run_dir / LR_FIND_CSV, results_csv(test, chosen))
        written.append(LR_FIND_CSV)
        if cfg.plot:
            note = write_lr_find(test.lrs, test.losses, test.smoothed, chosen, run_dir / LR_FIND_PNG)
            if note is None:
                written.append(LR_FIND_PNG)
            else:
                say(note)
    ended = (f"stopped at step {test.diverged_at + 1}: the smoothed loss passed "
             f"{finder.early_stop_threshold:g}x its best" if test.diverged_at is not None
             else f"{len(test.lrs)} steps")
    say(f"lr_find: {ended}, lr {test.lrs[0]:.3g} to {test.lrs[-1]:.3g}; "
        + (f"suggested lr {suggested:.4g} (steepest descent of the smoothed loss)" if suggested
           else "no suggestion (too few finite points after skipping the first 10 steps)")
        + (f"; wrote {', '.join(str(run_dir / w) for w in written)}" if written else ""))
    record: dict[str, Any] = {"mode": asked, "suggestion": suggested, "steps": len(test.lrs),
                              "stopped_early": test.diverged_at is not None,
                              "configured_lr": float(cfg.optim.lr)}
    if asked != "apply":
        return setup, record
    if suggested is None:
        raise TrainrunError(
            f"lr_find=apply found no learning rate to apply: the range test ({ended}) left fewer "
            "than two finite smoothed losses after its first 10 steps",
            key="lr_finder.steps",
            fix="raise lr_finder.steps, lower lr_finder.max_lr, or look at lr_find.csv and set optim.lr",
        )
    say(f"lr_find=apply: training with optim.lr={suggested:.4g} (configured: {cfg.optim.lr:g})")
    cfg.optim.lr = suggested
    return build(cfg, rank=rank, world_size=world_size, batch_size=setup.batch_size), record
