"""Tabular files: CSV (``data=csv``) and Parquet (``data=parquet``), each read into ``(X, y)``.

CSV is parsed by ``numpy.loadtxt`` (numpy's C parser): measured on a 200,000 x 20 file it is as
fast as pyarrow's streaming reader and holds about one copy of the result at its peak, where
pyarrow's whole-file reader is a little faster but peaks at seven times the array's size (its
memory pool keeps the parsed blocks); see docs/performance.md. One pass reads the feature columns
straight into float32 and the target as float64 (a structured dtype), so no float64 copy of the
features is ever made. Text class labels, and every cell numpy refuses, take a second, slower
path whose only job is to read the labels or to name the exact line and column at fault.

``usecols`` makes numpy skip its own check that every row has as many fields as the header, so
the delimiters of the file are counted once (bytes, in C): a row with a stray delimiter would
otherwise shift its values into the wrong columns without a word.

Parquet goes through pyarrow (an optional extra), reading only the columns asked for.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainrun.errors import TrainrunError

DELIMITERS = (",", ";", "\t", "|")  # what delimiter=auto looks for in the header, in this order
_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
# Text labels: numpy's variable-width strings where they exist (numpy >= 2), fixed-width before.
_TEXT = getattr(getattr(np, "dtypes", None), "StringDType", str)


def existing_file(path: str, key: str, kinds: Sequence[str] = ()) -> Path:
    """``path`` as a file that exists; a folder or a missing file is one paragraph."""
    file = Path(path).expanduser()
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.suffix.lower() in kinds)
        shown = f"; it holds {', '.join(inside[:5])}" + (" ..." if len(inside) > 5 else "") if inside else ""
        raise TrainrunError(
            f"{key}={path!r} is a folder, not a file{shown}",
            key=key,
            fix=f"name the file itself, e.g. {key}={file / inside[0]}" if inside
            else f"name a {'/'.join(kinds) or 'data'} file inside it",
        )
    if not file.is_file():
        raise TrainrunError(
            f"file not found: {str(file)!r} (looked in {Path.cwd()})",
            key=key,
            fix="give an absolute path, or a path relative to the folder you run train from",
        )
    return file


def read_csv(
    path: str, target: str, features: list[str] | None = None, delimiter: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """A CSV file with a header row. Feature columns must be numeric; the target may be text
    (class labels) or numbers. ``delimiter``: one character, or ``auto`` (the first of
    ``, ; tab |`` the header line holds)."""
    file = existing_file(path, "data.path", (".csv", ".tsv", ".txt"))
    first = _first_line(file)
    sep = _delimiter(delimiter, first, file)
    header = [h.strip() for h in next(csv.reader([first], delimiter=sep))]
    columns, t = select_columns(header, target, features, f"CSV file {str(file)!r}", first=first, sep=sep)
    rows = _parse(file, sep, header, columns, t)
    _check_field_counts(file, sep, first, rows, header, columns, t)
    return rows


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


def select_columns(
    header: list[str], target: str, features: Sequence[str] | None, where: str, *,
    first: str | None = None, sep: str = ",",
) -> tuple[list[int], int]:
    """Which columns are the features and which is the target, by name; every way the names
    can be ambiguous or wrong is refused (duplicates, the target among the features, unnamed
    or missing columns). ``first``/``sep``: the CSV header line as read, to say what went wrong."""
    if target not in header or (first is not None and _looks_like_data(header)):
        raise _missing_target(header, target, where, first, sep)
    names = list(features) if features else [h for h in header if h != target]
    if features:
        for name in names:
            if name not in header:
                raise TrainrunError(f"{where} has no feature column {name!r}; its columns are {header}",
                                    key="data.features", fix="list columns of the file in data.features")
        if target in names:
            raise TrainrunError(
                f"data.features lists the target column {target!r}: the model would be given the "
                "answer it is trained to predict",
                key="data.features", fix=f"remove {target!r} from data.features",
            )
        twice = [n for n, c in Counter(names).items() if c > 1]
        if twice:
            raise TrainrunError(f"data.features lists {twice[0]!r} {Counter(names)[twice[0]]} times",
                                key="data.features", fix="list each feature column once")
    elif "" in names:
        number = header.index("") + 1
        raise TrainrunError(
            f"{where}: column {number} has no name in the header (an index column, as pandas' "
            "to_csv writes?); it would be used as a feature",
            key="data.features",
            fix="name it in the header, write the file without it (pandas: to_csv(path, index=False)), "
            "or list the features: data.features=[...]",
        )
    if not names:
        raise TrainrunError(f"{where} has no column besides the target {target!r}: there are no features",
                            key="data.path", fix="a header row naming the feature columns and the target")
    counts = Counter(header)
    for name in [target, *names]:
        if counts[name] > 1:
            where_ = [str(i + 1) for i, h in enumerate(header) if h == name]
            raise TrainrunError(
                f"{where} has {counts[name]} columns named {name!r} (columns {', '.join(where_)}): "
                "which one is meant cannot be told",
                key="data.path",
                fix=f"give each column its own name in the header (e.g. {name}_2)",
            )
    return [header.index(n) for n in names], header.index(target)


def _missing_target(header: list[str], target: str, where: str, first: str | None, sep: str) -> TrainrunError:
    if first is not None and _looks_like_data(header):
        return TrainrunError(
            f"{where} has no header row: its first line holds numbers ({first[:60]!r}), not the "
            "column names (trainrun would take that line for names and lose it as a sample)",
            key="data.path",
            fix=f"add a first line naming the {len(header)} columns, e.g. "
            f"{sep.join([*(f'x{i}' for i in range(1, len(header))), 'label'])!r} with data.target=label",
        )
    if first is not None and len(header) == 1:
        other = next((d for d in DELIMITERS if d != sep and d in first), None)
        if other is not None:
            return TrainrunError(
                f"{where} is not separated by {sep!r}: its header {first[:60]!r} is one column "
                f"when split at {sep!r}; it holds {other!r} between the names",
                key="data.delimiter", fix=f"add \"data.delimiter='{other}'\" (quoted so: for the shell and "
                "for Hydra)" if other != "\t" else "add data.delimiter=tab",
            )
    return TrainrunError(f"{where} has no column {target!r}; its columns are {header}",
                         key="data.target", fix="set data.target to one of the columns above")


def _loadtxt(file: Path, sep: str, usecols: list[int], dtype: object) -> np.ndarray:
    with warnings.catch_warnings():  # "input contained no data": said below, in our words
        warnings.simplefilter("ignore", UserWarning)
        return np.loadtxt(file, delimiter=sep, skiprows=1, usecols=usecols, dtype=dtype, comments=None,
                          quotechar='"', encoding="utf-8-sig", ndmin=1)


def _parse(file: Path, sep: str, header: list[str], columns: list[int], t: int) -> tuple[np.ndarray, np.ndarray]:
    """One C pass: the features as float32 and the target as float64 side by side; text labels
    or a bad cell make a second pass that reads the labels or finds the cell."""
    both = np.dtype([("x", np.float32, (len(columns),)), ("y", np.float64)])
    try:
        table = _loadtxt(file, sep, [*columns, t], both)
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


def _diagnose(file: Path, sep: str, header: list[str], columns: list[int], t: int,
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
                if not _is_number(value):
                    comma = sep != "," and _is_number(value.replace(",", "."))
                    return TrainrunError(
                        f"CSV column {header[j]!r} is not numeric (value {value!r}), line {line}"
                        + (": a decimal comma" if comma else ""),
                        key="data.features",
                        fix="write decimal points (1.5, not 1,5)" if comma else
                        f"encode {header[j]!r} as numbers, or leave it out with data.features=[...]",
                    )
            if not row[t].strip():
                return TrainrunError(
                    f"CSV file {str(file)!r}, line {line}: the target column {header[t]!r} is empty",
                    key="data.target", fix="drop the rows without a target, or fill them in",
                )
    return TrainrunError(f"cannot read CSV file {str(file)!r}: {err}", key="data.path")


def _check_field_counts(file: Path, sep: str, first: str, rows: tuple[np.ndarray, np.ndarray],
                        header: list[str], columns: list[int], t: int) -> None:
    """Every data row has the header's number of fields (``usecols`` keeps numpy from checking).
    Counted as bytes: the file holds exactly ``header's + rows x (columns - 1)`` delimiters. A
    mismatch (a ragged row, or a delimiter inside a quoted cell) is settled by the csv module."""
    mark = sep.encode()
    found = 0
    with file.open("rb") as f:
        while block := f.read(1 << 22):
            found += block.count(mark)
    if found == first.count(sep) + len(rows[0]) * (len(header) - 1):
        return
    fault = _diagnose(file, sep, header, columns, t, ValueError("delimiters do not add up"))
    if "fields, the header has" in fault.message:
        raise fault


def read_parquet(path: str, target: str, features: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A Parquet file (pyarrow, ``pip install 'trainrun[parquet]'``): numeric feature columns;
    the target may be text (class labels) or numbers. Only the columns used are read."""
    file = existing_file(path, "data.path", (".parquet", ".pq"))
    try:
        import pyarrow as pa  # only for data=parquet
        import pyarrow.parquet as pq
    except ImportError:
        raise TrainrunError("data=parquet reads files with pyarrow, which is not installed", key="data",
                            fix="pip install 'trainrun[parquet]' (or pip install pyarrow)") from None
    where = f"Parquet file {str(file)!r}"
    try:
        header = list(pq.read_schema(file).names)
    except Exception as err:
        raise TrainrunError(f"cannot read {where}: {type(err).__name__}: {err}", key="data.path",
                            fix="name a Parquet file (pandas: df.to_parquet(path)); data=csv reads CSV") from None
    columns, t = select_columns(header, target, features, where)
    table = pq.read_table(file, columns=[header[i] for i in [*columns, t]])
    n = table.num_rows
    if n == 0:
        raise TrainrunError(f"{where} has no rows", key="data.path", fix="name a file holding samples")
    x = np.empty((n, len(columns)), dtype=np.float32)
    for j, name in enumerate(table.column_names[:-1]):
        column = table.column(j)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                or pa.types.is_decimal(kind)):
            raise TrainrunError(f"Parquet column {name!r} is not numeric (type {kind})", key="data.features",
                                fix=f"encode {name!r} as numbers, or leave it out with data.features=[...]")
        if column.null_count:
            raise TrainrunError(f"Parquet column {name!r} has {column.null_count} missing values (null)",
                                key="data.features",
                                fix=f"fill in or drop the rows with missing values, or leave {name!r} out "
                                "with data.features=[...]")
        x[:, j] = column.to_numpy().astype(np.float32, copy=False)
        table = table.set_column(j, name, pa.nulls(n, pa.null()))  # give its memory back
    labels = table.column(len(columns))
    if labels.null_count:
        raise TrainrunError(f"{where}: the target column {target!r} has {labels.null_count} missing values",
                            key="data.target", fix="drop the rows without a target, or fill them in")
    kind = labels.type
    if pa.types.is_dictionary(kind):
        labels, kind = labels.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        y = labels.to_numpy().astype(np.int64)
    elif pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        y = labels.to_numpy().astype(np.float64)
        if np.all(np.mod(y, 1) == 0) and np.all(np.abs(y) < 2**53):
            y = y.astype(np.int64)
    else:
        y = np.asarray([str(v) for v in labels.to_pylist()])
    return x, y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_data(header: list[str]) -> bool:
    """A first line of numbers that are not plain column numbers (pandas names columns 0, 1, ...
    when it has no names): values like 0.25 or -3 are a data row, not a header."""
    return all(_is_number(h) for h in header) and not all(h.isdigit() for h in header)
