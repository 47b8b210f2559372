"""CSV files read in chunks of 64k lines: into the streamed copy training reads
(``table_stream.py``), for ``predict`` (features as a table, targets, ids), and a whole file's
text or partly empty feature columns as a table for ``encode.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainrun.data.csv_cells import TEXT, diagnose, loadtxt
from trainrun.data.encode import Columns
from trainrun.data.table_stream import csv_lines
from trainrun.errors import TrainrunError


def text_columns(file: Path, sep: str, header: list[str], columns: list[int], t: int | None,
                 categorical: Sequence[str] = ()) -> tuple[Columns, np.ndarray | None]:
    """The feature columns as text where they hold text or are ``categorical``, as float32 with
    NaN for empty cells where they hold numbers (encode.py decides what each becomes), and the
    targets."""
    keep = [header[j] in categorical for j in columns]
    values = _cells(loadtxt(file, sep, columns, TEXT).reshape(-1, len(columns)), keep)
    y = None
    if t is not None:
        labels = np.char.strip(loadtxt(file, sep, [t], TEXT).astype(str))
        if np.any(labels == ""):
            raise diagnose(file, sep, header, [], t, ValueError("empty target"))
        try:
            y = labels.astype(np.float64)
            if np.all(np.mod(y, 1) == 0) and np.all(np.abs(y) < 2**53):
                y = y.astype(np.int64)
        except ValueError:
            y = labels
    return Columns([header[j] for j in columns], values), y


def chunks(file: Path, sep: str, header: list[str], columns: list[int],
            t: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The file's rows 64k lines at a time: features float32, targets float64 or text; the same
    refusals as a whole read (the slow path names the line)."""
    both = np.dtype([("x", np.float32, (len(columns),)), ("y", np.float64)])
    for _, lines in csv_lines(file):
        if sum(line.count(sep) for line in lines) != len(lines) * (len(header) - 1):
            ragged = diagnose(file, sep, header, columns, t, ValueError("delimiters do not add up"))
            if "fields, the header has" in ragged.message:
                raise ragged
        fault: ValueError | None = None
        try:
            table = loadtxt(lines, sep, [*columns, t], both)
        except ValueError as err:
            fault = err
        if fault is None:
            yield table["x"].reshape(len(table), len(columns)), table["y"]
            continue
        try:
            x = loadtxt(lines, sep, columns, np.float32).reshape(len(lines), len(columns))
            labels = np.char.strip(loadtxt(lines, sep, [t], TEXT).astype(str))
        except ValueError:
            wrong = diagnose(file, sep, header, columns, t, fault)
            if wrong.key == "data.features":  # text or empty cells: encoded in memory only
                raise TrainrunError(wrong.message + "; a streamed file needs numeric, complete feature columns",
                                    key="data.stream", fix="data.stream=false reads it in memory, where text columns "
                                    "are one-hot encoded and empty cells follow data.missing") from None
            raise wrong from None
        if np.any(labels == ""):
            raise diagnose(file, sep, header, columns, t, fault)
        yield x, labels


def predict_chunks(file: Path, sep: str, header: list[str], columns: list[int], t: int | None,
                   i: int | None, categorical: Sequence[str] = ()
                   ) -> Iterator[tuple[Any, np.ndarray | None, np.ndarray | None]]:
    """``predict`` on a large file: 64k lines at a time, features (a table where cells are text
    or empty, or the column is ``categorical``), the targets if the file has them, the ids."""
    keep = [header[j] in categorical for j in columns]
    for _, lines in csv_lines(file):
        values = _cells(loadtxt(lines, sep, columns, TEXT).reshape(len(lines), len(columns)), keep)
        table = Columns([header[j] for j in columns], values, where=f"CSV file {str(file)!r}")
        y = None if t is None else np.char.strip(loadtxt(lines, sep, [t], TEXT).astype(str))
        ids = None if i is None else np.char.strip(loadtxt(lines, sep, [i], TEXT).astype(str))
        yield table, y, ids


def _cells(text: np.ndarray, keep: list[bool]) -> list[np.ndarray]:
    """Each column of a block of cells read as text: float32 (empty cells NaN) where every cell is
    a number, else (or where ``keep`` says so: codes, ``data.categorical``) the stripped text, as
    written: ``007``, a 9-digit code that float32 would round (encode.py decides what it becomes)."""
    values: list[np.ndarray] = []
    for j in range(text.shape[1]):
        column = np.char.strip(text[:, j].astype(str))
        if keep[j]:
            values.append(column)
            continue
        try:
            values.append(np.where(column == "", "nan", column).astype(np.float32))
        except ValueError:
            values.append(column)
    return values
