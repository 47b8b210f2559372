"""CSV files (``data=csv``) read into ``(X, y)``.

CSV is parsed by ``numpy.loadtxt`` (numpy's C parser): measured on a 200,000 x 20 file it is as
fast as pyarrow's streaming reader and holds about one copy of the result at its peak, where
pyarrow's whole-file reader is a little faster but peaks at seven times the array's size (its
memory pool keeps the parsed blocks); see docs/performance.md. One pass reads the feature columns
straight into float32 and the target as float64 (a structured dtype), so no float64 copy of the
features is ever made. Text class labels, and every cell numpy refuses, take a second, slower
path whose only job is to read the labels or to name the exact line and column at fault.

When some columns are left out (``data.features``, or the target is not the last column),
``usecols`` makes numpy skip its own check that every row has as many fields as the header, so
the delimiters of the file are counted once (numpy, 1 MB at a time): a row with a stray
delimiter would otherwise shift its values into the wrong columns without a word.

The columns are chosen by name in ``tables.select_columns`` (shared with Parquet).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from trainrun.data.csv_cells import TEXT as _TEXT
from trainrun.data.csv_cells import check_field_counts as _check_field_counts
from trainrun.data.csv_cells import diagnose as _diagnose
from trainrun.data.csv_cells import loadtxt as _loadtxt
from trainrun.data.csv_chunks import chunks as _chunks
from trainrun.data.csv_chunks import predict_chunks as _predict_chunks
from trainrun.data.csv_chunks import text_columns as _text_columns
from trainrun.data.encode import Columns
from trainrun.data.identity import cache_dir, file_digest
from trainrun.data.rows import MemmapRows, RowChunks
from trainrun.data.table_stream import cached_rows, refuse_categorical, should_stream, stream_reason
from trainrun.data.tables import DELIMITERS, existing_file, id_column, select_columns
from trainrun.errors import TrainrunError

_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def read_csv(
    path: str, target: str, features: list[str] | None = None, delimiter: str = "auto",
    require_target: bool = True, stream: bool | None = None, stream_above_mb: int = 1024,
    id: str | None = None, categorical: list[str] | None = None,
) -> tuple[np.ndarray | Columns, np.ndarray | None] | MemmapRows | RowChunks:
    """A CSV file with a header row. Feature columns must be numeric; the target may be text
    (class labels) or numbers. ``delimiter``: one character, or ``auto`` (the first of
    ``, ; tab |`` the header line holds). ``require_target=False`` (``predict``): a file without
    the target column gives ``y = None``. ``stream`` (null: above ``stream_above_mb``): read in
    chunks into a memory-mapped copy (``table_stream.py``) instead of into memory."""
    file, first, sep, header = _header(path, delimiter)
    where = f"CSV file {str(file)!r}"
    i = id_column(header, id, target, where)
    if i is not None and features is None:  # every column but the target and the id
        features = [h for h in header if h not in (target, id)]
    columns, t = select_columns(header, target, features, where, first=first, sep=sep,
                                require_target=require_target)
    if not require_target and should_stream([file], stream, stream_above_mb):  # predict: chunk by chunk
        return RowChunks(lambda: _predict_chunks(file, sep, header, columns, t, i, categorical or ()),
                         header[i] if i is not None else None)
    if t is not None and should_stream([file], stream, stream_above_mb):
        refuse_categorical(categorical, stream_reason(stream, stream_above_mb))
        names = [header[i] for i in columns]
        copy = cached_rows("csv", file_digest(file, cache_dir()), names, target, {"sep": sep},
                           lambda: _chunks(file, sep, header, columns, t), cache_dir())
        copy.id_name = header[i] if i is not None else None  # predict writes the same column
        return copy
    table = None
    try:
        if categorical:
            raise _AsText
        if t is None:
            x = _parse_features(file, sep, header, columns)
            rows: tuple[np.ndarray, np.ndarray | None] = (x, None)
        else:
            rows = _parse(file, sep, header, columns, t)
    except (TrainrunError, _AsText) as err:
        if isinstance(err, TrainrunError) and err.key != "data.features":  # a ragged row, an empty target ...
            raise
        table, y = _text_columns(file, sep, header, columns, t, categorical or ())  # encode.py's
        rows = (np.empty(len(table)), y)
    if [*columns, *([] if t is None else [t]), *([] if i is None else [i])] != list(range(len(header))):
        _check_field_counts(file, sep, first, rows, header, columns, t)  # usecols: numpy did not count
    if table is None and i is None:
        return rows
    if table is None:
        table = Columns([header[j] for j in columns], [rows[0][:, k] for k in range(len(columns))])
    if i is not None:
        table.ids, table.id_name = np.char.strip(_loadtxt(file, sep, [i], _TEXT).astype(str)), header[i]
    table.categorical = list(categorical) if categorical else None
    table.where = where
    return table, rows[1]


class _AsText(Exception):
    pass


def header_names(path: str, delimiter: str = "auto") -> list[str] | None:
    """A CSV file's column names (None if it cannot be read)."""
    try:
        return _header(path, delimiter)[3]
    except TrainrunError:
        return None


def csv_feature_names(path: str, target: str, features: list[str] | None = None,
                      delimiter: str = "auto") -> list[str] | None:
    """The feature columns ``read_csv`` uses, by name, from the header line alone (kept in the
    checkpoint, so ``predict`` picks the same columns by name in a new file); None if unreadable."""
    try:
        file, first, sep, header = _header(path, delimiter)
        columns, _ = select_columns(header, target, features, str(file), first=first, sep=sep)
    except TrainrunError:
        return None
    return [header[i] for i in columns]


def _header(path: str, delimiter: str) -> tuple[Path, str, str, list[str]]:
    """The file, its first line, its delimiter and its column names."""
    file = existing_file(path, "data.path", (".csv", ".tsv", ".txt"))
    first = _first_line(file)
    sep = _delimiter(delimiter, first, file)
    return file, first, sep, [h.strip() for h in next(csv.reader([first], delimiter=sep))]


def _parse_features(file: Path, sep: str, header: list[str], columns: list[int]) -> np.ndarray:
    """The feature columns alone (a file for ``predict`` without targets), as float32."""
    every = columns == list(range(len(header)))
    try:
        x = _loadtxt(file, sep, None if every else columns, np.float32)
    except UnicodeDecodeError as err:
        raise _not_utf8(file, err) from None
    except ValueError as err:
        raise _diagnose(file, sep, header, columns, None, err) from None
    if len(x) == 0:
        raise _no_rows(file)
    return x.reshape(len(x), len(columns))


def _first_line(file: Path) -> str:
    try:
        with file.open(encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not a name
            first = f.readline()
    except UnicodeDecodeError as err:
        raise _not_utf8(file, err) from None
    except OSError as err:
        raise TrainrunError(f"cannot read CSV file {str(file)!r}: {err}", key="data.path") from None
    if not first.strip():
        raise _no_rows(file)
    return first.rstrip("\r\n")


def _no_rows(file: Path) -> TrainrunError:
    return TrainrunError(f"CSV file {str(file)!r} has no data rows", key="data.path",
                         fix="a header row naming the columns, then one row per sample")


def _not_utf8(file: Path, err: UnicodeDecodeError) -> TrainrunError:
    return TrainrunError(
        f"CSV file {str(file)!r} is not UTF-8 text ({err.reason}: byte {err.object[err.start:err.end]!r})",
        key="data.path",
        fix="save it as UTF-8 (in a spreadsheet: 'CSV UTF-8'; or iconv -f latin1 -t utf-8 in.csv > out.csv)",
    )


def _delimiter(setting: str, first: str, file: Path) -> str:
    sep = _WORDS.get(setting, setting)
    if sep == "auto":
        return next((d for d in DELIMITERS if d in first), ",")
    if len(sep) != 1 or sep in "\"\r\n":
        raise TrainrunError(
            f"data.delimiter={setting!r} is not one character",
            key="data.delimiter",
            fix="auto, or one character: ',' ';' '|' or tab",
        )
    return sep


def _parse(file: Path, sep: str, header: list[str], columns: list[int], t: int) -> tuple[np.ndarray, np.ndarray]:
    """One C pass: the features as float32 and the target as float64 side by side; text labels
    or a bad cell make a second pass that reads the labels or finds the cell."""
    both = np.dtype([("x", np.float32, (len(columns),)), ("y", np.float64)])
    try:
        # Every column, in the file's order (the usual case: the features, then the target):
        # no usecols, so numpy itself refuses a row with another number of fields.
        every = [*columns, t] == list(range(len(header)))
        table = _loadtxt(file, sep, None if every else [*columns, t], both)
        x, y = table["x"], table["y"]  # views of one buffer: no copy of the features
    except UnicodeDecodeError as err:
        raise _not_utf8(file, err) from None
    except ValueError as err:
        x, y = _parse_text_target(file, sep, header, columns, t, err)
    if len(x) == 0:
        raise _no_rows(file)
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0) and np.all(np.abs(y) < 2**53):
        y = y.astype(np.int64)  # whole numbers: class labels (data.task=regression says otherwise)
    return x, y


def _parse_text_target(file: Path, sep: str, header: list[str], columns: list[int], t: int,
                       err: ValueError) -> tuple[np.ndarray, np.ndarray]:
    try:
        labels = _loadtxt(file, sep, [t], _TEXT)
    except ValueError:
        raise _diagnose(file, sep, header, columns, t, err) from None
    labels = np.char.strip(labels.astype(str))
    empty = np.flatnonzero(labels == "")
    if len(empty):
        raise _diagnose(file, sep, header, columns, t, err)  # says which line, as the file counts
    try:
        y: np.ndarray = labels.astype(np.float64)
    except ValueError:
        y = labels  # text: class labels
    else:
        raise _diagnose(file, sep, header, columns, t, err)  # numbers: the fault is in a feature
    try:
        x = _loadtxt(file, sep, columns, np.float32)
    except ValueError as fault:
        raise _diagnose(file, sep, header, columns, t, fault) from None
    return x.reshape(len(x), len(columns)), y
