"""metrics.csv / metrics.jsonl grow by one appended line per row (CsvLogger), O(1) an epoch; the
first row of a process rewrites them whole from the history (a resumed run drops the rows
written after its checkpoint), and a new column rewrites them once more."""

from __future__ import annotations

import csv
import json

from trainrun.report.loggers import csv_logs as loggers
from trainrun.report.loggers.csv_logs import CsvLogger


def row(epoch: int, **extra: float) -> dict:
    return {"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, **extra}


def read(folder):
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return rows, lines


def test_rows_are_appended_without_rewriting_the_history(tmp_path, monkeypatch):
    logger, history = CsvLogger(tmp_path), []
    rewrites = []
    real = loggers.metrics_csv
    monkeypatch.setattr(loggers, "metrics_csv", lambda h: rewrites.append(len(h)) or real(h))
    for epoch in range(1, 51):
        history.append(row(epoch))
        logger.log_epoch(history[-1], history)
    logger.close()
    assert rewrites == [1]  # the first row only: every later one is appended
    rows, lines = read(tmp_path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 51)) and lines == history


def test_a_resumed_process_drops_rows_written_after_its_checkpoint(tmp_path):
    first, history = CsvLogger(tmp_path), []
    for epoch in range(1, 6):
        history.append(row(epoch))
        first.log_epoch(history[-1], history)
    first.close()  # killed after epoch 5; its checkpoint holds 3 epochs
    resumed, history = CsvLogger(tmp_path), history[:3]
    for epoch in range(4, 7):
        history.append(row(epoch, train_loss=0.5))
        resumed.log_epoch(history[-1], history)
    resumed.close()
    rows, lines = read(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6] and lines == history


def test_a_new_column_rewrites_the_files_once(tmp_path):
    logger, history = CsvLogger(tmp_path), [row(1)]
    logger.log_epoch(history[-1], history)
    history.append(row(2, weight_norm=3.0))  # a callback added a value
    logger.log_epoch(history[-1], history)
    history.append(row(3, weight_norm=4.0))
    logger.log_epoch(history[-1], history)
    logger.close()
    rows, _ = read(tmp_path)
    assert list(rows[0]) == ["epoch", "step", "train_loss", "val_loss", "weight_norm"]
    assert [r["weight_norm"] for r in rows] == ["", "3.0", "4.0"]
