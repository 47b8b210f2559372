"""``lr_find=true|apply``: a learning-rate range test before training, the way Lightning's
``Tuner.lr_find`` does it.

From the run's initial weights, ``lr_finder.steps`` optimizer steps (100) are taken with a
learning rate that grows exponentially from ``min_lr`` (1e-8) to ``max_lr`` (1): step ``i`` uses
``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. The steps are the run's own loop,
:func:`trainrun.engine.loop.train_epoch` (autocast, accumulation, clipping, DDP as configured),
driven from outside through the two objects it already calls: the progress object (each batch's
loss) and the stop object (after each optimizer step: record, set the next learning rate, stop
at the last step or once the loss diverges). Nothing in the loop knows it is a range test.

The rules, and why they differ from Lightning's in two places. Each step's loss is smoothed
by a bias-corrected moving average (``avg = b avg + (1 - b) loss``, divided by
``1 - b ** (i + 1)``), as Lightning and fastai do; the test stops once the smoothed loss exceeds
``early_stop_threshold`` (4) times its best. But with their ``b = 0.98`` the average spans about
50 of the 100 steps, that is four decades of learning rate: the smoothed curve lags the raw one
so far that its steepest descent lies where the raw loss has already turned up (0.475 on
digits with SGD, which diverged). Here the average spans a tenth of the test (``b = 0.9`` at 100
steps, :func:`smoothing`), under one decade. And the suggestion is taken *well before the
minimum*, as fastai's ``minimum`` rule (a tenth of the rate at the smoothed minimum) and
Lightning's steepest descent both mean to: the steepest descent of the smoothed loss (its slope
against ``log(lr)``, the axis the rates are spaced on) within the decade that ends a tenth below
the rate of the smoothed minimum (:func:`suggestion`; the first tenth of the steps and the last
step are never the minimum). Batch noise at the tiniest rates cannot win (it is four decades
below any minimum worth the name), and neither can the edge of divergence. Measured on every
bundled data set with every optimizer preset: docs/recipes.md ("lr_find"). Under DDP each
step's loss is the mean over all ranks, so every rank takes the same decisions.

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
from trainrun.engine.loop import train_epoch
from trainrun.engine.resume import find
from trainrun.engine.state import TrainState
from trainrun.errors import TrainrunError
from trainrun.files import LR_FIND_CSV, LR_FIND_PNG, atomic_write_text
from trainrun.preflight.run import preserved
from trainrun.report.plots import write_lr_find

MODES = ("false", "true", "apply")
WINDOW = 0.1  # the smoothing average spans this fraction of the test's steps
MARGIN = 10.0  # "well before the minimum": at most the minimum's rate divided by this
SPAN = 10.0  # the steepest descent is searched over this factor of rates below that


def mode(cfg: DictConfig) -> str:
    """``lr_find`` as a word: false, true or apply (``lr_find=true`` arrives as ``True``)."""
    return str(cfg.get("lr_find", "false")).strip().lower()


def schedule(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """The learning rate of each step: exponentially spaced from ``min_lr`` to ``max_lr``."""
    if steps == 1:
        return [min_lr]
    return [min_lr * (max_lr / min_lr) ** (i / (steps - 1)) for i in range(steps)]


def smoothing(steps: int) -> float:
    """The factor ``b`` of the moving average: its window (``1 / (1 - b)`` steps) is a tenth of
    the test, whatever its length (0.9 at 100 steps)."""
    return 1.0 - 1.0 / max(1.0, WINDOW * steps)


def minimum(smoothed: list[float]) -> int | None:
    """The index of the smoothed minimum, never in the first tenth of the steps (the average
    is still the first few raw losses there) nor the last step; None if none is finite."""
    begin = len(smoothed) // 10
    kept = [i for i in range(begin, len(smoothed) - 1) if math.isfinite(smoothed[i])]
    return min(kept, key=lambda i: smoothed[i]) if kept else None


def suggestion(lrs: list[float], smoothed: list[float]) -> int | None:
    """The index of the suggested learning rate: the steepest descent of the smoothed loss
    against ``log(lr)`` among the rates from ``1/(MARGIN*SPAN)`` to ``1/MARGIN`` of the rate at
    the smoothed minimum; None when fewer than two finite points lie there (the loss did not
    fall during the test, or the test was too short)."""
    low = minimum(smoothed)
    if low is None:
        return None
    top = lrs[low] / MARGIN
    kept = [i for i in range(len(smoothed) // 10, low)
            if top / SPAN <= lrs[i] <= top and math.isfinite(smoothed[i])]
    if len(kept) < 2:
        return None
    losses = torch.tensor([smoothed[i] for i in kept], dtype=torch.float64)
    rates = torch.tensor([lrs[i] for i in kept], dtype=torch.float64)
    gradients = torch.gradient(losses, spacing=[rates.log()])[0]
    return kept[int(torch.argmin(gradients))]


class RangeTest:
    """The progress and stop objects ``train_epoch`` calls: records each step's loss at its
    learning rate and sets the next one."""

    def __init__(self, setup: Setup, lrs: list[float], threshold: float | None) -> None:
        self.setup, self.planned, self.threshold = setup, lrs, threshold
        self.beta = smoothing(len(lrs))
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
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta ** (i + 1))  # bias-corrected: no pull towards 0
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
    # The test sets the rates itself: the run's scheduler sits out (a per-step OneCycleLR would
    # also refuse to step past its planned total).
    run_scheduler, setup.scheduler = setup.scheduler, None
    with preserved(setup):  # weights, buffers, .grad, train/eval flags, random streams, the optimizer
        # made inside: preserved() puts back the optimizer as it found it, before the test's first rate
        test = RangeTest(setup, schedule(min_lr, max_lr, steps), threshold)
        try:
            state, epoch = TrainState(), 0
            while train_epoch(setup, state, epoch, test, test):
                epoch, state.batch, state.step_losses = epoch + 1, 0, EpochLosses()  # more steps than batches
        finally:
            setup.scheduler = run_scheduler
            setup.optimizer.load_state_dict(optimizer)
            if run_scheduler is not None and scheduler is not None:
                run_scheduler.load_state_dict(scheduler)
            setup.scaler.load_state_dict(scaler)
    return test


def no_suggestion(test: RangeTest, lowest: float | None) -> str:
    """Why :func:`suggestion` found none, in words."""
    if lowest is None:
        return "no finite smoothed loss after its first tenth"
    return (f"its smoothed loss was lowest at lr {lowest:.3g}, with fewer than two rates a decade or "
            f"more below it from {test.lrs[len(test.lrs) // 10]:.3g} on: the loss did not fall during the "
            "test, or the test was too short")


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
    chosen, low = suggestion(test.lrs, test.smoothed), minimum(test.smoothed)
    suggested = test.lrs[chosen] if chosen is not None else None
    lowest = test.lrs[low] if low is not None else None
    written = []
    if rank == 0:
        atomic_write_text(run_dir / LR_FIND_CSV, results_csv(test, chosen))
        written.append(LR_FIND_CSV)
        if cfg.plot:
            note = write_lr_find(test.lrs, test.losses, test.smoothed, chosen, run_dir / LR_FIND_PNG,
                                 minimum=low)
            if note is None:
                written.append(LR_FIND_PNG)
            else:
                say(note)
    ended = (f"stopped at step {test.diverged_at + 1}: the smoothed loss passed "
             f"{finder.early_stop_threshold:g}x its best" if test.diverged_at is not None
             else f"{len(test.lrs)} steps")
    say(f"lr_find: {ended}, lr {test.lrs[0]:.3g} to {test.lrs[-1]:.3g}; "
        + (f"suggested lr {suggested:.4g} (the smoothed loss's steepest descent, a decade or more below "
           f"its minimum at lr {lowest:.3g})" if suggested is not None and lowest is not None
           else "no suggestion: " + no_suggestion(test, lowest))
        + (f"; wrote {', '.join(str(run_dir / w) for w in written)}" if written else ""))
    record: dict[str, Any] = {"mode": asked, "suggestion": suggested, "minimum_lr": lowest,
                              "steps": len(test.lrs), "smoothing": test.beta,
                              "stopped_early": test.diverged_at is not None,
                              "configured_lr": float(cfg.optim.lr)}
    if asked != "apply":
        return setup, record
    if suggested is None:
        raise TrainrunError(
            f"lr_find=apply found no learning rate to apply: the range test ({ended}) gave "
            + no_suggestion(test, lowest),
            key="lr_finder.steps",
            fix="raise lr_finder.steps, lower lr_finder.max_lr, or look at lr_find.csv and set optim.lr",
        )
    say(f"lr_find=apply: training with optim.lr={suggested:.4g} (configured: {cfg.optim.lr:g})")
    cfg.optim.lr = suggested
    return build(cfg, rank=rank, world_size=world_size, batch_size=setup.batch_size), record
