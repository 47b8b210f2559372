"""What the user sees and what lands in the run folder: the progress bar, one line per epoch,
``metrics.csv`` / ``metrics.jsonl`` (rewritten atomically from the history every epoch, so a
resumed run never duplicates or loses a row), ``summary.json`` and the closing rich table.
Only rank 0 prints or writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from trainrun.atomic import atomic_write_json, atomic_write_text

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


def metrics_csv(history: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


class Reporter:
    """Progress, epoch lines and metric files for one run."""

    def __init__(self, run_dir: Path, *, epochs: int, progress: str, rank: int = 0) -> None:
        self.run_dir, self.epochs, self.rank = run_dir, epochs, rank
        self.mode = progress_mode(progress) if rank == 0 else "none"
        self.writes = rank == 0

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
        if self.writes:
            self.write_metrics(state.history)

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self.run_dir / "metrics.csv", metrics_csv(history))
        atomic_write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history)
        )

    def info(self, message: str) -> None:
        if self.rank == 0:
            log.info(message)

    def summary(self, summary: dict[str, Any]) -> None:
        if not self.writes:
            return
        atomic_write_json(self.run_dir / "summary.json", summary)
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
