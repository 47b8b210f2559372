"""``logger=tensorboard``: event files under the run folder (the ``tensorboard`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainrun.report.loggers.base import NOT_METRICS, TIMINGS, charted, is_scalar, missing_extra, test_values


class TensorBoardLogger:
    """Scalars per epoch (x = epoch; the timings under ``time/``), the config as text, and an
    hparams entry at the end (the config's scalar values against the summary's best metrics).
    View with ``tensorboard --logdir outputs``."""

    def __init__(self, run_dir: str | Path, log_dir: str = "tensorboard",
                 tags: list[str] | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise missing_extra("tensorboard", "tensorboard", err) from None
        path = Path(log_dir)
        self.log_dir = path if path.is_absolute() else Path(run_dir) / path
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.params: dict[str, Any] = {}
        self.tags = [str(t) for t in tags or []]

    def log_params(self, params: dict[str, Any]) -> None:
        self.params = params
        lines = [f"    {k}: {v}" for k, v in params.items()]  # indented: markdown code block
        self.writer.add_text("config", "\n".join(lines), 0)
        if self.tags:  # also in the hparams entry, as the ``tags`` column
            self.writer.add_text("tags", ", ".join(self.tags), 0)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        epoch = int(row["epoch"])
        for name, value in charted(row).items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def log_summary(self, summary: dict[str, Any]) -> None:
        hparams = {
            k: (v if is_scalar(v) or isinstance(v, str | bool) else str(v))
            for k, v in self.params.items()
            if not k.startswith("hydra.")
        }
        if "tags" in hparams:
            hparams["tags"] = ",".join(self.tags)
        best = summary.get("best") or summary.get("final") or {}
        results = {f"best/{k}": v for k, v in best.items()
                   if k not in (*NOT_METRICS, *TIMINGS) and is_scalar(v)}
        results.update(test_values(summary))
        objective = summary.get("objective") or {}
        if is_scalar(objective.get("value")):
            results["objective"] = objective["value"]
        if hparams and results:
            self.writer.add_hparams(hparams, results, run_name="hparams")

    def close(self) -> None:
        self.writer.close()
