"""The run's epoch rows, kept once: appended to ``checkpoints/history.jsonl``, and referred to
by each checkpoint (how many rows, and the SHA-256 of those rows) instead of copied into it.

A checkpoint that held the whole history made each save pickle every row again: at 3,000 epochs
the bookkeeping grew with the square of the epochs (``scripts/bench_bookkeeping.py``). Now a
save appends the rows since the last one (a few hundred bytes) and the checkpoint stays the same
size whatever the epoch. The order on disk keeps it whole: rows are appended and fsynced before
the checkpoint that counts them is written, so a kill leaves at most rows beyond the last
checkpoint's count, which a resume drops (each process's first save writes the file anew from
the rows it holds). A checkpoint written by older versions holds its rows itself; both load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trainrun.errors import TrainrunError

HISTORY = "history.jsonl"


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row) + "\n").encode()


class HistoryStore:
    """The rows of ``path`` this process has handed to the writer, and their running digest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: int | None = None  # None until this process's first save
        self._digest = hashlib.sha256()

    def reference(self, history: list[dict[str, Any]]) -> tuple[dict[str, Any], bytes, bool]:
        """For a save of ``history``: what the checkpoint holds (``rows``, ``sha256``), the bytes
        to write first, and whether they replace the file (the first save) or are appended."""
        whole = self.rows is None
        data = b"".join(_line(row) for row in history[0 if whole else self.rows:])
        if whole:
            self._digest = hashlib.sha256()
        self._digest.update(data)
        self.rows = len(history)
        return {"rows": self.rows, "sha256": self._digest.hexdigest()}, data, whole


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and make it durable before anything written after it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def rows_of(checkpoint: Path, reference: Any, key: str = "resume") -> list[dict[str, Any]]:
    """The rows a checkpoint refers to (``reference``: its ``state.history``), read from the
    ``history.jsonl`` beside it and checked against its digest; a list is an older checkpoint's
    own rows."""
    if isinstance(reference, list):
        return reference
    path = checkpoint.parent / HISTORY  # beside last.pt, or beside a sharded checkpoint's folder
    count = int(reference["rows"])
    lines: list[bytes] = []
    if count:
        try:
            lines = path.read_bytes().splitlines(keepends=True)[:count]
        except OSError:
            lines = []
    whole = len(lines) == count and all(line.endswith(b"\n") for line in lines)
    if not whole or hashlib.sha256(b"".join(lines)).hexdigest() != reference["sha256"]:
        raise TrainrunError(
            f"the checkpoint {str(checkpoint)!r} refers to the first {count} epoch rows of {str(path)!r}, "
            "which " + ("holds fewer" if not whole else "holds other rows (changed or replaced since)"),
            key=key,
            fix="keep a checkpoint with the history.jsonl of its run folder (copy the checkpoints/ folder "
            "whole), or start a new run")
    rows = [json.loads(line) for line in lines]
    if not all(isinstance(row, dict) and isinstance(row.get("epoch"), int) for row in rows):
        raise TrainrunError(f"{str(path)!r} is not a list of epoch rows", key=key,
                            fix="keep the history.jsonl trainrun wrote beside the checkpoint")
    return rows
