"""Parquet files (``data=parquet``, pyarrow: ``pip install 'trainrun[parquet]'``): a file read
whole into memory (only the columns used, converted one at a time into the float32 feature
matrix; text columns and nulls as a table for ``encode.py``), or a large file or a folder of
shards streamed by record batches (pyarrow's dataset API) into the memory-mapped copy training
reads, or chunk by chunk for ``predict``. Columns are chosen by name in ``tables.py``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from trainrun.data.encode import Columns
from trainrun.data.identity import cache_dir, data_files, files_fingerprint
from trainrun.data.rows import CHUNK_ROWS, MemmapRows, RowChunks
from trainrun.data.table_stream import cached_rows, refuse_categorical, should_stream, stream_reason
from trainrun.data.tables import DELIMITERS, existing_file, id_column, select_columns
from trainrun.errors import TrainrunError

# pyarrow's Parquet reader pre-buffers by default (``pre_buffer=True``): it reads the column
# chunks of every row group it will need ahead and keeps them until the file is closed, so a
# streamed pass held the whole file in memory (2.9 GB of anonymous memory for a 2 GiB file,
# scripts/bench_data.py memory). Off, a pass holds about a row group.
NO_PRE_BUFFER = {"pre_buffer": False}


def _parquet(file: Path) -> tuple[Any, Any, list[str]]:
    """pyarrow (imported only for data=parquet), its parquet module, and the file's column names."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TrainrunError("data=parquet reads files with pyarrow, which is not installed", key="data",
                            fix="pip install 'trainrun[parquet]' (or pip install pyarrow)") from None
    try:
        header = list(pq.read_schema(file).names)
    except Exception as err:
        raise TrainrunError(f"cannot read Parquet file {str(file)!r}: {type(err).__name__}: {err}", key="data.path",
                            fix="name a Parquet file (pandas: df.to_parquet(path)); data=csv reads CSV") from None
    return pa, pq, header


def parquet_feature_names(path: str, target: str, features: list[str] | None = None) -> list[str] | None:
    """The feature columns ``read_parquet`` uses, by name, from the file's schema alone (kept in
    the checkpoint, so ``predict`` picks the same columns by name in a new file)."""
    try:
        _, _, header = _parquet(existing_file(path, "data.path", (".parquet", ".pq")))
        columns, _ = select_columns(header, target, features, path)
    except TrainrunError:
        return None
    return [header[i] for i in columns]


def read_parquet(path: str, target: str, features: list[str] | None = None, require_target: bool = True,
                 stream: bool | None = None, stream_above_mb: int = 1024, id: str | None = None,
                 categorical: list[str] | None = None,
                 ) -> tuple[np.ndarray | Columns, np.ndarray | None] | MemmapRows | RowChunks:
    """A Parquet file (pyarrow, ``pip install 'trainrun[parquet]'``), or a folder (a glob) of
    Parquet shards read as one data set: numeric feature columns; the target may be text (class
    labels) or numbers. Only the columns used are read. ``require_target=False`` (``predict``): a
    file without the target column gives ``y = None``. A folder of shards, or ``stream`` (null:
    above ``stream_above_mb``), streams record batches into a memory-mapped copy
    (``table_stream.py``)."""
    shards = Path(str(path)).expanduser().is_dir() or any(c in str(path) for c in "*?[")
    if shards or (Path(str(path)).expanduser().is_file() and stream is not False):
        files, _ = data_files(path, "data.path")
        files = [f for f in files if f.suffix.lower() in (".parquet", ".pq")]
        if not files:
            raise TrainrunError(f"data.path={path!r}: no .parquet file there", key="data.path",
                                fix="give a .parquet file, a folder of .parquet shards, or a pattern")
        if shards and stream is False:
            raise TrainrunError(
                f"data.stream=false, but data.path={path!r} names {len(files)} Parquet shard(s) (a folder or "
                "a pattern), and shards are always streamed through a memory-mapped copy",
                key="data.stream",
                fix="drop data.stream=false, or name one .parquet file to read it whole")
        if shards or should_stream(files, stream, stream_above_mb):
            if not require_target:  # predict: record batch by record batch
                return _parquet_chunks(files, target, features, id)
            refuse_categorical(categorical, "a folder or pattern of shards" if shards
                               else stream_reason(stream, stream_above_mb), shards=shards)
            return _parquet_rows(files, target, features, id)
    file = existing_file(path, "data.path", (".parquet", ".pq"))
    pa, pq, header = _parquet(file)
    where = f"Parquet file {str(file)!r}"
    if id and features is None:
        id_column(header, id, target, where)
        features = [h for h in header if h not in (target, id)]
    columns, t = select_columns(header, target, features, where, require_target=require_target)
    table = pq.read_table(file, columns=[header[i] for i in [*columns, *([] if t is None else [t])]])
    n = table.num_rows
    if n == 0:
        raise TrainrunError(f"{where} has no rows", key="data.path", fix="name a file holding samples")
    x = np.empty((n, len(columns)), dtype=np.float32)
    values: list[np.ndarray] = []  # as a table (encode.py), once a column holds text or nulls
    as_table = False
    for j, name in enumerate(table.column_names[:len(columns)]):
        column = table.column(j)
        kind = column.type
        numeric = (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                   or pa.types.is_decimal(kind))
        if numeric and not column.null_count and not categorical:
            x[:, j] = column.to_numpy().astype(np.float32, copy=False)
        elif numeric and name not in (categorical or []):
            x[:, j] = np.asarray([np.nan if v is None else v for v in column.to_pylist()], dtype=np.float32)
            as_table, values = True, values if as_table else [x[:, k] for k in range(j)]
        else:  # text: categories
            as_table, values = True, values if as_table else [x[:, k] for k in range(j)]
        if as_table:
            values.append(x[:, j] if numeric and name not in (categorical or []) else
                          np.asarray(["" if v is None else str(v) for v in column.to_pylist()]))
        table = table.set_column(j, name, pa.nulls(n, pa.null()))  # give its memory back
    names = table.column_names[:len(columns)]
    out: np.ndarray | Columns = x
    if as_table or id:
        out = Columns(names, values if as_table else [x[:, k] for k in range(len(columns))], where=where,
                      categorical=list(categorical) if categorical else None)
        if id:
            out.ids = np.asarray([str(v) for v in pq.read_table(file, columns=[id]).column(0).to_pylist()])
            out.id_name = id
    if t is None:
        return out, None
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
    return out, y


def _parquet_chunks(files: list[Path], target: str, features: list[str] | None, id: str | None) -> RowChunks:
    """``predict`` on large Parquet data: record batches as tables, their targets and ids."""
    pa, pq, header = _parquet(files[0])
    where = f"Parquet file {str(files[0])!r}"
    if id:
        id_column(header, id, target, where)
    features = features or [h for h in header if h not in (target, id)]
    columns, t = select_columns(header, target, features, where, require_target=False)
    names = [header[i] for i in columns]
    wanted = [*names, *([target] if t is not None else []), *([id] if id else [])]
    _check_shards(files, wanted)

    def read() -> Iterator[tuple[Columns, np.ndarray | None, np.ndarray | None]]:
        for file, batch in _record_batches(pq, files, wanted):
            values = [_predict_values(pa, batch.column(k)) for k in range(len(names))]
            y = np.asarray([str(v) for v in batch.column(len(names)).to_pylist()]) if t is not None else None
            ids = np.asarray([str(v) for v in batch.column(len(wanted) - 1).to_pylist()]) if id else None
            yield Columns(names, values, where=f"Parquet file {str(file)!r}"), y, ids

    return RowChunks(read, id)


def _check_shards(files: list[Path], columns: list[str]) -> None:
    """Every shard after the first holds the columns read (before any row is: a shard that lacks
    one would fail in the middle of a pass)."""
    for file in files[1:]:
        header = _parquet(file)[2]
        missing = [c for c in columns if c not in header]
        if missing:
            raise TrainrunError(
                f"Parquet shard {str(file)!r} has no column {', '.join(map(repr, missing))}, which the first "
                f"shard {str(files[0])!r} has", key="data.path",
                fix="shards of one data set share their columns: rewrite that shard, or move it out of the folder")


def _record_batches(pq: Any, files: list[Path], columns: list[str]) -> Iterator[tuple[Path, Any]]:
    """The ``columns`` of ``files``, file by file, in record batches of ``CHUNK_ROWS`` rows, each
    with its file (pyarrow's Parquet reader, not the dataset scanner: the scanner held a whole
    file's decoded columns at once, measured in tests/unit/test_tables.py)."""
    for file in files:
        for batch in pq.ParquetFile(file, **NO_PRE_BUFFER).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            if batch.num_rows:
                yield file, batch


def _predict_values(pa: Any, column: Any) -> np.ndarray:
    """A feature column of a record batch for ``predict``: numbers as float32 (a null as NaN,
    which the training run's missing-value policy then handles), anything else as text."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float32)  # nulls: NaN
    cells = column.to_pylist()
    try:
        return np.asarray([np.nan if v is None else v for v in cells], dtype=np.float32)
    except (TypeError, ValueError):
        return np.asarray(["" if v is None else str(v) for v in cells])


def _parquet_rows(files: list[Path], target: str, features: list[str] | None, id: str | None) -> MemmapRows:
    """Parquet files streamed by record batches (only the columns used) into the memory-mapped
    copy training reads; ``data.id``'s column is never a feature (as in a whole read)."""
    pa, pq, header = _parquet(files[0])
    where = f"Parquet file {str(files[0])!r}" + (f" (and {len(files) - 1} more shards)" if len(files) > 1 else "")
    if id:
        id_column(header, id, target, where)
        features = features if features is not None else [h for h in header if h not in (target, id)]
    columns, _ = select_columns(header, target, features, where)
    names = [header[i] for i in columns]
    _check_shards(files, [*names, target])

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for file, batch in _record_batches(pq, files, [*names, target]):
            yield _parquet_arrays(pa, batch, names, target, f"Parquet file {str(file)!r}")
        pa.default_memory_pool().release_unused()  # before the loader's workers fork: not theirs to copy

    digest = files_fingerprint(files, None, cache_dir())
    rows = cached_rows("parquet", digest, names, target, {}, chunks, cache_dir())
    rows.id_name = id  # predict writes the same column, from the new file (never trained on)
    return rows


def _parquet_arrays(pa: Any, table: Any, names: list[str], target: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A record batch's feature columns as float32 and its targets, refused as ``read_parquet``
    refuses a whole table's."""
    x = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = table.column(j)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                or pa.types.is_decimal(kind)):
            raise TrainrunError(f"{where}: column {name!r} is not numeric (type {kind})", key="data.features",
                                fix=f"encode {name!r} as numbers, or leave it out with data.features=[...]")
        if column.null_count:
            raise TrainrunError(f"{where}: column {name!r} has missing values (null)", key="data.features",
                                fix=f"fill in or drop the rows with missing values, or leave {name!r} out "
                                "with data.features=[...] (data.missing applies to a single file read whole: "
                                "data.stream=false; shards are always streamed)")
        x[:, j] = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    labels = table.column(len(names))
    if labels.null_count:
        raise TrainrunError(f"{where}: the target column {target!r} has missing values", key="data.target",
                            fix="drop the rows without a target, or fill them in")
    kind = labels.type
    if pa.types.is_dictionary(kind):
        labels, kind = labels.cast(kind.value_type), kind.value_type
    numeric = pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_floating(kind) \
        or pa.types.is_decimal(kind)
    y = labels.to_numpy(zero_copy_only=False)
    return x, y.astype(np.float64) if numeric else np.asarray([str(v) for v in labels.to_pylist()])


def file_columns(node: DictConfig) -> list[str] | None:
    """The column names of the CSV or Parquet file a data config names (None if not a table or
    unreadable): ``predict`` keeps the training run's ``data.id`` only where the file has it."""
    target, path = str(node.get("_target_")), node.get("path")
    if not path:
        return None
    try:
        if target.endswith("read_parquet"):
            files, _ = data_files(path, "data.path")
            return _parquet(files[0])[2]
        if target.endswith("read_csv"):
            with Path(str(path)).expanduser().open(encoding="utf-8-sig", newline="") as f:
                first = f.readline().rstrip("\r\n")
            setting = str(node.get("delimiter", "auto"))
            sep = next((d for d in DELIMITERS if d in first), ",") if setting == "auto" else \
                {"tab": "\t", "\\t": "\t"}.get(setting, setting)
            return [h.strip() for h in next(csv.reader([first], delimiter=sep))]
    except (OSError, TrainrunError, StopIteration, UnicodeDecodeError):
        return None
    return None
