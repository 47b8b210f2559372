"""What the user sees and what lands in the run folder: a short header (the run folder, the
model's size), the progress bar or one line per epoch, ``metrics.csv`` / ``metrics.jsonl``
(one line appended per epoch; rewritten whole by the first row of a resumed run, so it never
duplicates or loses a row), ``summary.json`` and the closing rich table. The full config tree only with
``print_config=true`` (it is always in ``.hydra/config.yaml``). A sweep job keeps the console to
one line (its log file gets the rest, :mod:`trainrun.report.echo`). Only rank 0 prints or writes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from trainrun.files import CURVES_PNG, SUMMARY_JSON, atomic_write_json
from trainrun.report.drawer import CurvesDrawer
from trainrun.report.echo import FILE_ONLY, print_config_tree, rendered
from trainrun.report.loggers.base import Loggers, config_params
from trainrun.report.loggers.csv_logs import CsvLogger

if TYPE_CHECKING:  # rich is imported when something is printed
    from rich.console import RenderableType

log = logging.getLogger("trainrun")


class RunState(Protocol):
    """What the reporter reads of the run's state (``trainrun.engine.state.TrainState``)."""

    history: list[dict[str, Any]]


class LossBar(tqdm):
    """A tqdm bar that shows the latest loss. The loop hands it the loss *tensor*; the value is
    read from the device only when the bar redraws (``mininterval``), never once per step."""

    latest: torch.Tensor | None = None

    def step(self, loss: torch.Tensor) -> None:
        self.latest = loss
        self.update()

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        if self.latest is not None:
            d["postfix"] = f"loss={self.latest.detach().float().item():.4g}"
        return d


class _Quiet:
    def step(self, loss: torch.Tensor) -> None:
        pass


def progress_mode(setting: str) -> str:
    """``auto`` is a bar on a terminal and one line per epoch elsewhere (batch-job logs)."""
    if setting == "auto":
        return "bar" if sys.stderr.isatty() else "epoch"
    return setting


def format_row(row: dict[str, Any], epochs: int, inside: bool = False) -> str:
    """One epoch line; ``inside``: a validation inside the epoch (``trainer.val_every_n_steps``),
    marked with its step."""
    width = len(str(epochs))
    parts = [f"epoch {row['epoch']:>{width}}/{epochs}" + (f" step {row['step']}" if inside else "")]
    for key, value in row.items():
        if key in ("epoch", "step", "seconds", "samples_per_s", "lr"):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.2f}s")
    parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


def job_line(summary: dict[str, Any]) -> str:
    """A sweep job's one console line: how it ended, its objective, test, time, folder."""
    objective = summary.get("objective") or {}
    value = objective.get("value")
    shown = f"{value:.5g}" if isinstance(value, float) else str(value)
    parts = [f"  {summary.get('status')}: {objective.get('name')} {shown}"]
    if summary.get("best_epoch") is not None:
        parts.append(f" (best epoch {summary['best_epoch']} of {summary.get('epochs_run')})")
    test = summary.get("test") or {}
    scores = [f"test_{k} {v:.4g}" for k, v in test.items() if isinstance(v, float)]
    if scores:
        parts.append(", " + ", ".join(scores))
    parts.append(f", {summary.get('total_seconds', 0.0):.1f} s: {summary.get('run_dir')}")
    return "".join(parts)


class Reporter:
    """Progress, epoch lines and metric files for one run. ``sweep_job``: a job of ``train -m``,
    whose console gets one line at the end (with ``trainer.progress=auto``) and whose log file
    gets everything."""

    def __init__(self, run_dir: Path, *, epochs: int, progress: str, rank: int = 0,
                 sweep_job: bool = False) -> None:
        self.run_dir, self.epochs, self.rank = run_dir, epochs, rank
        self.quiet_console = sweep_job and progress == "auto" and rank == 0
        self.mode = ("epoch" if self.quiet_console else progress_mode(progress)) if rank == 0 else "none"
        self.extra = FILE_ONLY if self.quiet_console else None
        self.writes = rank == 0
        # Where epoch values go: metrics.csv/.jsonl unless use_loggers() chooses others.
        self.loggers = Loggers([CsvLogger(run_dir)] if self.writes else [])
        self.drawer = CurvesDrawer()  # curves.png: matplotlib imported by a helper while training

    def _say(self, message: str) -> None:
        log.info(message, extra=self.extra)

    def show_start(self, cfg: DictConfig) -> None:
        """The run folder, to copy; the config as a rich tree only with ``print_config=true``
        (a sweep prints the shared config once, at its start)."""
        if self.writes and cfg.get("plot", True) and self.epochs > 0:
            self.drawer.start()
        if self.mode != "none":
            if cfg.get("print_config", False) and not cfg.get("explain", False) and not self.quiet_console:
                print_config_tree(cfg)
            self._say(f"run folder: {self.run_dir}")

    def table(self, renderable: RenderableType) -> None:
        """A rich table (``model_summary=true``'s), on the console and in the log."""
        if self.writes and self.mode != "none":
            self._say(rendered(renderable))

    def use_loggers(self, loggers: Loggers, cfg: DictConfig) -> None:
        """Send epochs and the summary to ``loggers`` (the ``logger`` group), starting with the
        config as parameters."""
        self.loggers = loggers
        loggers.log_params(config_params(cfg))

    @contextlib.contextmanager
    def progress(self, epoch: int, steps: int) -> Iterator[LossBar | _Quiet]:
        if self.mode != "bar":
            yield _Quiet()
            return
        bar = LossBar(
            total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
            mininterval=0.5, dynamic_ncols=True, file=sys.stderr,
        )
        try:
            yield bar
        finally:
            bar.close()

    def epoch_end(self, row: dict[str, Any], state: RunState) -> None:
        if self.mode != "none":  # state.batch > 0: a row from inside the epoch
            self._say(format_row(row, self.epochs, inside=bool(getattr(state, "batch", 0))))
        self.loggers.log_epoch(row, state.history)

    def info(self, message: str) -> None:
        if self.rank == 0:
            self._say(message)

    def failed(self, summary: dict[str, Any], history: list[dict[str, Any]], plot: bool = True) -> None:
        """A run that failed during training: ``summary.json`` (``status: failed``, the error)
        and ``curves.png`` of the epochs it finished, before the error is reported. Never
        raises: the error that ended the run is the one to report."""
        if not self.writes:
            return
        try:
            atomic_write_json(self.run_dir / SUMMARY_JSON, summary)
            if plot and history:
                self.drawer.draw(history, self.run_dir / CURVES_PNG, best=summary.get("best"))
        except Exception as err:
            log.warning(f"could not write the failed run's summary or curves: {type(err).__name__}: {err}")

    def summary(self, summary: dict[str, Any], history: list[dict[str, Any]] | None = None,
                plot: bool = True) -> None:
        if not self.writes:
            return
        atomic_write_json(self.run_dir / SUMMARY_JSON, summary)
        if plot and history:
            note = self.drawer.draw(history, self.run_dir / CURVES_PNG, best=summary.get("best"))
            if note and self.mode != "none":
                self._say(note)
        self.loggers.log_summary(summary)
        self.loggers.close()
        if self.mode == "none":
            return
        from rich.table import Table

        table = Table(title=f"trainrun: {summary['status']}", title_justify="left")
        table.add_column("")
        table.add_column("final", justify="right")
        table.add_column(f"best (epoch {summary.get('best_epoch')})", justify="right")
        test = summary.get("test")
        if test:  # trainer.test_after_fit: the checkpoint it scored
            table.add_column(f"test ({test['checkpoint'].split(' ')[0]})", justify="right")
        final, best = summary.get("final") or {}, summary.get("best") or {}
        for key, value in final.items():
            if key in ("epoch", "step", "seconds", "samples_per_s"):
                continue
            shown = best.get(key)
            cells = [key, f"{value:.5g}", "" if shown is None else f"{shown:.5g}"]
            if test:
                name = key.removeprefix("val_")
                scored = test.get(name) if key.startswith("val_") else None
                cells.append("" if scored is None else f"{scored:.5g}")
            table.add_row(*cells)
        table.add_row("epochs", str(final.get("epoch", 0)), "")
        table.add_row("time", f"{summary['train_seconds']:.2f}s train, "
                      f"{summary['total_seconds']:.2f}s total", "")
        table.add_row("parameters", f"{summary['num_parameters']:,}", "")
        table.add_row("device", summary["device"], "")
        self._say(rendered(table))  # on the console and in train.log
        self._say(f"run folder: {self.run_dir}")
        if self.quiet_console:  # a sweep job: this one line on the console
            log.info(job_line(summary))
