"""What the user sees and what lands in the run folder: the progress bar, one line per epoch,
``metrics.csv`` / ``metrics.jsonl`` (rewritten atomically from the history every epoch, so a
resumed run never duplicates or loses a row), ``summary.json`` and the closing rich table.
Only rank 0 prints or writes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from trainrun.files import CURVES_PNG, SUMMARY_JSON, atomic_write_json
from trainrun.report.drawer import CurvesDrawer
from trainrun.report.loggers import CsvLogger, Loggers, config_dict, config_params

log = logging.getLogger("trainrun")


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


def format_row(row: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    parts = [f"epoch {row['epoch']:>{width}}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "step", "seconds", "samples_per_s", "lr"):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.2f}s")
    parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


class Reporter:
    """Progress, epoch lines and metric files for one run."""

    def __init__(self, run_dir: Path, *, epochs: int, progress: str, rank: int = 0) -> None:
        self.run_dir, self.epochs, self.rank = run_dir, epochs, rank
        self.mode = progress_mode(progress) if rank == 0 else "none"
        self.writes = rank == 0
        # Where epoch values go: metrics.csv/.jsonl unless use_loggers() chooses others.
        self.loggers = Loggers([CsvLogger(run_dir)] if self.writes else [])
        self.drawer = CurvesDrawer()  # curves.png: matplotlib imported by a helper while training

    def show_start(self, cfg: Any) -> None:
        """The config as a rich tree (``print_config``) and the run folder, to copy."""
        if self.writes and cfg.get("plot", True) and self.epochs > 0:
            self.drawer.start()
        if self.mode != "none":
            if cfg.get("print_config", True) and not cfg.get("explain", False):  # explain: one screen
                print_config_tree(cfg)
            log.info(f"run folder: {self.run_dir}")

    def use_loggers(self, loggers: Loggers, cfg: Any) -> None:
        """Send epochs and the summary to ``loggers`` (the ``logger`` group), starting with the
        config as parameters."""
        self.loggers = loggers
        loggers.log_params(config_params(cfg))

    @contextlib.contextmanager
    def progress(self, epoch: int, steps: int) -> Iterator[Any]:
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

    def epoch_end(self, row: dict[str, Any], state: Any) -> None:
        if self.mode != "none":
            log.info(format_row(row, self.epochs))
        self.loggers.log_epoch(row, state.history)

    def info(self, message: str) -> None:
        if self.rank == 0:
            log.info(message)

    def summary(self, summary: dict[str, Any], history: list[dict[str, Any]] | None = None,
                plot: bool = True) -> None:
        if not self.writes:
            return
        atomic_write_json(self.run_dir / SUMMARY_JSON, summary)
        if plot and history:
            note = self.drawer.draw(history, self.run_dir / CURVES_PNG)
            if note and self.mode != "none":
                log.info(note)
        self.loggers.log_summary(summary)
        self.loggers.close()
        if self.mode == "none":
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"trainrun: {summary['status']}", title_justify="left")
        table.add_column("")
        table.add_column("final", justify="right")
        table.add_column(f"best (epoch {summary.get('best_epoch')})", justify="right")
        final, best = summary.get("final") or {}, summary.get("best") or {}
        for key, value in final.items():
            if key in ("epoch", "step", "seconds", "samples_per_s"):
                continue
            shown = best.get(key)
            table.add_row(key, f"{value:.5g}", "" if shown is None else f"{shown:.5g}")
        table.add_row("epochs", str(final.get("epoch", 0)), "")
        table.add_row("time", f"{summary['train_seconds']:.2f}s train, "
                      f"{summary['total_seconds']:.2f}s total", "")
        table.add_row("parameters", f"{summary['num_parameters']:,}", "")
        table.add_row("device", summary["device"], "")
        console = Console(file=sys.stdout, width=100)
        console.print(table)
        console.print(f"run folder: {self.run_dir}")


def print_config_tree(cfg: Any) -> None:
    """The composed config as a rich tree: the groups as branches, then the top-level values."""
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    def add(branch: Tree, node: dict[str, Any]) -> None:
        for key, value in sorted(node.items(), key=lambda kv: isinstance(kv[1], dict) and bool(kv[1])):
            if isinstance(value, dict) and value:
                add(branch.add(Text(str(key), style="bold cyan")), value)
            else:
                branch.add(Text.assemble(f"{key}: ", (repr(value) if isinstance(value, str)
                                                      else str(value), "green")))

    root = Tree(Text("config", style="bold"), guide_style="dim")
    add(root, config_dict(cfg))
    Console(file=sys.stdout, width=100, highlight=False).print(root)
