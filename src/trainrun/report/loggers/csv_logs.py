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
    """``metrics.csv`` and ``metrics.jsonl``: one line appended per row (O(1) an epoch, however
    long the run), each line one fsynced ``write``. The first row a process logs rewrites both
    files whole from the history, atomically: a resumed run's files may hold rows written after
    its checkpoint, which go, so a resumed run never duplicates or loses a row. A row with a
    column the header lacks (a value a callback adds later) rewrites them whole once more.
    Essential: the run folder is the record of the run, so a failed write ends the run (the
    checkpoints stay intact) instead of dropping the logger like a remote one."""

    essential = True

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        # Written on a background thread: two fsynced files per epoch cost the training thread
        # ~0.3-0.7 s over the 30 short epochs of the digits workload. A failed write is raised by
        # the next log_epoch or close (the file keeps its previous content).
        self._background = BackgroundWrites("trainrun-metrics")
        self._columns: list[str] | None = None  # metrics.csv's header, once this process wrote it

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
        if self._columns is None or any(key not in self._columns for key in row):  # whole, atomically
            text = metrics_csv(history)
            self._columns = next(csv.reader([text.partition("\n")[0]]))
            self._background.put(self.run_dir / METRICS_CSV, text.encode())
            self._background.put(self.run_dir / METRICS_JSONL,
                                 "".join(json.dumps(r) + "\n" for r in history).encode())
            return
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self._columns, lineterminator="\n").writerow(row)
        self._background.put(self.run_dir / METRICS_CSV, line.getvalue().encode(), append=True)
        self._background.put(self.run_dir / METRICS_JSONL, (json.dumps(row) + "\n").encode(), append=True)

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass  # summary.json is written by the reporter for every run

    def close(self) -> None:
        self._background.close()
