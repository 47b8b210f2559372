"""``logger=csv`` (the default): ``metrics.csv``, ``metrics.jsonl`` and ``params.csv`` in the run folder."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from trainrun.files import METRICS_CSV, METRICS_JSONL, PARAMS_CSV, BackgroundWrites


def metrics_csv(history: list[dict[str, Any]]) -> str:
    """The history as CSV text; the columns are every key seen, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


class CsvLogger:
    """``metrics.csv`` and ``metrics.jsonl``, rewritten atomically from the whole history every
    epoch, so a resumed run never duplicates or loses a row. Essential: the run folder is the
    record of the run, so a failed write ends the run (the checkpoints stay intact) instead of
    dropping the logger like a remote one."""

    essential = True

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        # Written on a background thread: two fsynced files per epoch cost the training thread
        # ~0.3-0.7 s over the 30 short epochs of the digits workload. A failed write is raised by
        # the next log_epoch or close (the file keeps its previous content).
        self._background = BackgroundWrites("trainrun-metrics")

    def log_params(self, params: dict[str, Any]) -> None:
        """``params.csv``: the flat config, one ``name,value`` row each (lists such as ``tags``
        as JSON), for grepping or joining runs without a YAML reader."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "value"])
        for name, value in params.items():
            writer.writerow([name, value if isinstance(value, str | int | float) and not isinstance(value, bool)
                             else json.dumps(value)])
        self._background.put(self.run_dir / PARAMS_CSV, out.getvalue().encode())

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._background.wait()  # the last epoch's files are written (or their failure raised)
        self._background.put(self.run_dir / METRICS_CSV, metrics_csv(history).encode())
        self._background.put(self.run_dir / METRICS_JSONL,
                             "".join(json.dumps(r) + "\n" for r in history).encode())

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass  # summary.json is written by the reporter for every run

    def close(self) -> None:
        self._background.close()
