"""CSV and Parquet files streamed: read once in chunks (CSV: 64k lines through ``numpy.loadtxt``;
Parquet: record batches of pyarrow's Parquet reader, only the columns used), written as a float32
copy of the features and a copy of the targets in ``.npy`` files, then trained on through
memory maps (:class:`~trainrun.data.rows.MemmapRows`) like ``data=npy``.

Why a copy rather than reading row groups at each batch: a shuffled batch draws its rows from
all over the file, and a Parquet row group is decoded whole (measured in docs/performance.md:
a memory-mapped row costs a page read, a Parquet row a row group's decode), while a CSV cannot
be read by row at all. The copy lives in the cache folder (``$TRAINRUN_CACHE_DIR``, else
``~/.cache/trainrun``) under the file's content fingerprint and the columns read, so a second
run or a resume of the same file reuses it; it is written into a temporary folder and renamed
whole, so a killed conversion leaves nothing half-written. Memory: one chunk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from trainrun.data.rows import CHUNK_ROWS, MemmapRows
from trainrun.errors import TrainrunError

# What a table reader hands over: a function that reads the table again, as (features, targets) chunks.
Chunks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]

FORMAT = 2  # 2: whole-number labels of numeric shards read as "1", not "1.0", beside text shards
HEADER = 128  # bytes of an .npy header whose shape is written once the rows are counted
MAX_LABELS = 100_000


def should_stream(files: list[Path], stream: bool | None, above_mb: int) -> bool:
    """``data.stream``: true, false, or null (above ``data.stream_above_mb`` of files)."""
    if stream is not None:
        return bool(stream)
    return sum(f.stat().st_size for f in files) > above_mb * 2**20


def refuse_categorical(categorical: list[str] | None, why: str, *, shards: bool = False) -> None:
    """A streamed copy holds numbers only: ``data.categorical`` would be dropped, and a column
    of codes (zip codes, product ids) trained on as a quantity, exit 0. Refused instead. ``why``:
    what made this file stream; ``shards``: several files, which are always streamed.

    ``evaluate`` passes the columns a trained run one-hot encoded as ``data.categorical``: the
    paragraph says so, since that user never wrote the key."""
    if categorical:
        raise TrainrunError(
            f"data.categorical={list(categorical)} (given, or the columns the trained run encoded as "
            f"categories) is applied to a file read whole, but this one is streamed ({why}), and a streamed "
            f"file's columns are read as numbers: {', '.join(categorical)} would be used as quantities, not "
            "categories",
            key="data.categorical",
            fix=("merge the shards into one file and read it whole with data.stream=false, " if shards
                 else "read the file whole with data.stream=false (it must fit in memory), ")
            + "or one-hot encode those columns in the file and drop data.categorical")


def stream_reason(stream: bool | None, above_mb: int) -> str:
    """Why :func:`should_stream` said yes, in the words of the config."""
    return "data.stream=true" if stream else f"it is larger than data.stream_above_mb={above_mb}"


class NpyWriter:
    """An ``.npy`` file written chunk by chunk; its header (the shape) is written last."""

    def __init__(self, path: Path, dtype: np.dtype[Any], sample_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.sample_shape, self.rows = path, np.dtype(dtype), sample_shape, 0
        self.file: BinaryIO = path.open("wb")
        self.file.write(self._header())

    def _header(self) -> bytes:
        shape = (self.rows, *self.sample_shape)
        text = f"{{'descr': {self.dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        body = text.ljust(HEADER - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")

    def add(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.rows += len(values)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class Targets:
    """A chunk's targets into the copy: numbers as float64, or text labels as codes (in sorted
    order of the labels once all are seen: a second pass over the codes file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.codes: dict[str, int] = {}
        self.text: bool | None = None
        self.writer: NpyWriter | None = None

    def add(self, labels: np.ndarray) -> None:
        if self.text is None:
            self.text = labels.dtype.kind not in "biuf"
            self.writer = NpyWriter(self.folder / "y.npy", np.dtype(np.int32 if self.text else np.float64), ())
        assert self.writer is not None
        if not self.text:
            if labels.dtype.kind not in "biuf":
                raise _Restart  # text after numbers: the column is text labels after all
            self.writer.add(labels.astype(np.float64))
            return
        names, inverse = np.unique(np.asarray(labels).astype(str), return_inverse=True)
        for name in names.tolist():
            if name not in self.codes:
                self.codes[name] = len(self.codes)
                if len(self.codes) > MAX_LABELS:
                    raise TrainrunError(f"the target column holds more than {MAX_LABELS:,} distinct text labels",
                                        key="data.target", fix="check data.target: is it an id or free text?")
        lookup = np.asarray([self.codes[n] for n in names.tolist()], dtype=np.int32)
        self.writer.add(lookup[inverse.reshape(-1)])

    def close(self) -> list[str] | None:
        assert self.writer is not None
        self.writer.close()
        if not self.text:
            return None
        names = sorted(self.codes)
        remap = np.empty(len(names), dtype=np.int32)
        for rank, name in enumerate(names):
            remap[self.codes[name]] = rank
        codes = np.load(self.writer.path, mmap_mode="r+")
        for lo in range(0, len(codes), CHUNK_ROWS):
            codes[lo:lo + CHUNK_ROWS] = remap[codes[lo:lo + CHUNK_ROWS]]
        codes.flush()
        del codes
        return names


class _Restart(Exception):
    pass


def cached_rows(kind: str, fingerprint: str, columns: list[str], target: str, options: dict[str, Any],
                chunks: Chunks, cache: Path) -> MemmapRows:
    """The copy of a table's ``columns`` and ``target`` (``chunks()`` yields ``(features float32,
    targets)`` chunks), made once per content and columns, in the cache folder."""
    key = hashlib.blake2b(json.dumps([FORMAT, kind, fingerprint, columns, target, options], default=str).encode(),
                          digest_size=16).hexdigest()
    folder = cache / "tables" / key
    meta = folder / "meta.json"
    if not meta.is_file():
        _convert(folder, chunks, columns, target)
    saved = json.loads(meta.read_text())
    return MemmapRows([folder / "X.npy"], [folder / "y.npy"], label_names=saved["labels"], columns=columns)


def _convert(folder: Path, chunks: Chunks, columns: list[str], target: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a second time when the target column turned out to hold text after numbers
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
        try:
            x_out = NpyWriter(work / "X.npy", np.dtype(np.float32), (len(columns),))
            y_out = Targets(work)
            try:
                for x, y in chunks():
                    x_out.add(x)
                    y_out.add(y)
            finally:
                x_out.close()
            labels = y_out.close()
            if x_out.rows == 0:
                raise TrainrunError("the file has no data rows", key="data.path",
                                    fix="a header row naming the columns, then one row per sample")
            (work / "meta.json").write_text(json.dumps({"labels": labels, "rows": x_out.rows, "target": target}))
            try:
                os.replace(work, folder)  # whole, or not at all
            except OSError:  # another process made it meanwhile
                shutil.rmtree(work, ignore_errors=True)
            return
        except _Restart:
            shutil.rmtree(work, ignore_errors=True)
            chunks = _as_text(chunks)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def _as_text(chunks: Chunks) -> Chunks:
    """The chunks again, their targets as text labels: a number as a text reader would have read
    it (``1.0`` read as a number is the label ``"1"``, as in the shard that holds it as text)."""
    def again() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, y in chunks():
            y = np.asarray(y)
            if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)  # whole numbers: "1", not "1.0"
            yield x, y.astype(str)
    return again


def csv_lines(file: Path, size: int = CHUNK_ROWS) -> Iterator[tuple[int, list[str]]]:
    """``(line number of the first, lines)`` after the header, ``size`` lines at a time."""
    with file.open(encoding="utf-8-sig", newline="") as f:
        next(f)
        line = 2
        while lines := list(itertools.islice(f, size)):
            yield line, lines
            line += len(lines)
