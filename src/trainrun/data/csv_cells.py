"""CSV cells read by ``numpy.loadtxt`` (a whole file after its header, or a chunk's lines), and
the slow path that names the line and column at fault once numpy refused something: a ragged
row, an empty or non-numeric feature cell, an empty target (``csv_file.py``, ``csv_chunks.py``).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from trainrun.data.tables import is_number
from trainrun.errors import TrainrunError

# Text labels: numpy's variable-width strings where they exist (numpy >= 2), fixed-width before.
TEXT = getattr(getattr(np, "dtypes", None), "StringDType", str)


def loadtxt(file: Path | list[str], sep: str, usecols: list[int] | None, dtype: DTypeLike) -> np.ndarray:
    """The file after its header row, or lines of it (a chunk)."""
    with warnings.catch_warnings():  # "input contained no data": said below, in our words
        warnings.simplefilter("ignore", UserWarning)
        if isinstance(file, list):
            return np.loadtxt(file, delimiter=sep, usecols=usecols, dtype=dtype, comments=None, quotechar='"',
                              ndmin=1)
        return np.loadtxt(file, delimiter=sep, skiprows=1, usecols=usecols, dtype=dtype, comments=None,
                          quotechar='"', encoding="utf-8-sig", ndmin=1)


def diagnose(file: Path, sep: str, header: list[str], columns: list[int], t: int | None,
              err: ValueError) -> TrainrunError:
    """The first ragged row, empty or non-numeric feature cell, or empty target, by line
    number, read with Python's csv module (slow, but only once something is wrong)."""
    with file.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        next(reader)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                return TrainrunError(
                    f"CSV file {str(file)!r}, line {line}: {len(row)} fields, the header has {len(header)}",
                    key="data.path",
                    fix=f"fix that line (a stray {sep!r}, or a text cell holding {sep!r} that needs \"quotes\")",
                )
            for j in columns:
                value = row[j].strip()
                if not value:
                    return TrainrunError(
                        f"CSV column {header[j]!r} is not numeric (value ''), line {line}: an empty cell",
                        key="data.features",
                        fix=f"fill in or drop the rows with missing values, or leave {header[j]!r} out "
                        "with data.features=[...]",
                    )
                if not is_number(value):
                    comma = sep != "," and is_number(value.replace(",", "."))
                    return TrainrunError(
                        f"CSV column {header[j]!r} is not numeric (value {value!r}), line {line}"
                        + (": a decimal comma" if comma else ""),
                        key="data.features",
                        fix="write decimal points (1.5, not 1,5)" if comma else
                        f"encode {header[j]!r} as numbers, or leave it out with data.features=[...]",
                    )
            if t is not None and not row[t].strip():
                return TrainrunError(
                    f"CSV file {str(file)!r}, line {line}: the target column {header[t]!r} is empty",
                    key="data.target", fix="drop the rows without a target, or fill them in",
                )
    return TrainrunError(f"cannot read CSV file {str(file)!r}: {err}", key="data.path")


def check_field_counts(file: Path, sep: str, first: str, rows: tuple[np.ndarray, np.ndarray | None],
                        header: list[str], columns: list[int], t: int | None) -> None:
    """Every data row has the header's number of fields (``usecols`` keeps numpy from checking).
    Counted as bytes: the file holds exactly ``header's + rows x (columns - 1)`` delimiters. A
    mismatch (a ragged row, or a delimiter inside a quoted cell) is settled by the csv module."""
    mark, found = ord(sep), 0
    buffer = bytearray(1 << 20)
    view, same = np.frombuffer(buffer, np.uint8), np.empty(len(buffer), dtype=bool)
    with file.open("rb", buffering=0) as f:
        while size := f.readinto(buffer):  # numpy counts 1 MB at a time: ~20 ms for 36 MB
            found += int(np.count_nonzero(np.equal(view[:size], mark, out=same[:size])))
    if found == first.count(sep) + len(rows[0]) * (len(header) - 1):
        return
    fault = diagnose(file, sep, header, columns, t, ValueError("delimiters do not add up"))
    if "fields, the header has" in fault.message:
        raise fault
