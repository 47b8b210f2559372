"""Rows on disk, read by row: memory-mapped ``.npy`` shards (``data=npy``, and the float32 copy a
streamed CSV or Parquet file is read through), and what a batch's rows become (``RowTransform``).
No torch here (reading a table imports none); the map-style data set over these rows is
``data/streamed.py``'s ``RowsDataset``.

``numpy.load(mmap_mode="r", allow_pickle=False)``: the file's pages belong to the page cache, not
to the process (a 4 GB array costs the training process the rows of one batch), and a file
cannot run code. Workers open the files again by name (the memmaps are never pickled: numpy
would copy the whole array into the pickle). Chosen by measurement: see docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainrun.errors import TrainrunError

CHUNK_ROWS = 1 << 16  # rows per step of a streaming pass


def open_npy(file: Path, key: str) -> np.ndarray:
    """One ``.npy`` file memory-mapped, numeric, at least one row."""
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # object arrays (pickles), not an .npy file, a damaged header
        raise TrainrunError(f"cannot read {str(file)!r} as a NumPy .npy array: {type(err).__name__}: {err}",
                            key=key, fix="save a numeric array with numpy.save (object arrays are refused)") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise TrainrunError(f"{str(file)!r} is not a numeric .npy array (dtype {getattr(array, 'dtype', '?')})",
                            key=key, fix="save numbers with numpy.save; an .npz archive is data=npz")
    if array.ndim == 0:
        raise TrainrunError(f"{str(file)!r} holds a single number, not one row per sample", key=key,
                            fix="save an array shaped [samples, features...]")
    return array


@dataclass
class MemmapRows:
    """Features (and targets) as ``.npy`` shards on disk, one data set: shard ``i`` of the
    features goes with shard ``i`` of the targets. ``label_names``: text labels stored as
    codes (a streamed CSV's). ``columns``: the feature columns by name, when known."""

    x_files: list[Path]
    y_files: list[Path] | None
    label_names: list[str] | None = None
    columns: list[str] | None = None
    ids: Any = None  # an id per row (a streamed table's data.id column), memory-mapped, or None
    id_name: str | None = None

    def __post_init__(self) -> None:
        self._x: list[np.ndarray] | None = None
        self._y: list[np.ndarray] | None = None
        xs, ys = self.arrays()
        if ys is not None and len(ys) != len(xs):
            raise TrainrunError(f"data.path names {len(xs)} feature shards but data.target_path {len(ys)} "
                                "target shards", key="data.target_path",
                                fix="give one target file per feature file (sorted by name, they are paired)")
        shape = xs[0].shape[1:]
        for i, x in enumerate(xs):
            if x.shape[1:] != shape:
                raise TrainrunError(f"feature shard {str(self.x_files[i])!r} has samples of shape {list(x.shape[1:])}, "
                                    f"the first shard {list(shape)}", key="data.path",
                                    fix="every shard holds samples of one shape")
            if ys is not None and len(ys[i]) != len(x):
                raise TrainrunError(f"{str(self.x_files[i])!r} holds {len(x)} samples but "
                                    f"{str(self.y_files[i])!r} {len(ys[i])} targets",  # type: ignore[index]
                                    key="data.target_path", fix="save one target per sample, shard by shard")
            if ys is not None and ys[i].ndim > 2:
                raise TrainrunError(f"target shard {str(self.y_files[i])!r} has shape {list(ys[i].shape)}: "  # type: ignore[index]
                                    "targets are [samples] or [samples, k]", key="data.target_path")
        self.sample_shape = tuple(int(d) for d in shape)
        self.offsets = np.cumsum([0, *(len(x) for x in xs)])
        self.n = int(self.offsets[-1])
        if self.n == 0:
            raise TrainrunError(f"{str(self.x_files[0])!r} holds no rows", key="data.path",
                                fix="name data with samples")

    def __getstate__(self) -> dict[str, Any]:  # a worker opens the files itself
        return {**self.__dict__, "_x": None, "_y": None}

    def arrays(self) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        if self._x is None:
            self._x = [open_npy(f, "data.path") for f in self.x_files]
            self._y = None if self.y_files is None else [open_npy(f, "data.target_path") for f in self.y_files]
        return self._x, self._y

    @property
    def has_targets(self) -> bool:
        return self.y_files is not None

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The samples at ``rows`` (positions in the whole data set), in that order; read in
        increasing order (the disk's), then put back in the order asked."""
        xs, ys = self.arrays()
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        shard = np.searchsorted(self.offsets, wanted, side="right") - 1
        x = np.empty((len(rows), *self.sample_shape), dtype=np.float32)
        y = None if ys is None else np.empty((len(rows), *ys[0].shape[1:]), dtype=ys[0].dtype)
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            local = wanted[at] - self.offsets[s]
            x[order[at]] = xs[s][local]
            if y is not None and ys is not None:
                y[order[at]] = ys[s][local]
        return x, y

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(first row, features, targets)`` in file order, ``size`` rows at a time."""
        xs, ys = self.arrays()
        for s, x in enumerate(xs):
            for lo in range(0, len(x), size):
                hi = min(lo + size, len(x))
                yield (int(self.offsets[s]) + lo, np.asarray(x[lo:hi], dtype=np.float32),
                       None if ys is None else np.asarray(ys[s][lo:hi]))


@dataclass
class RowTransform:
    """What the training split taught, applied to a batch of raw rows: standardization, the label
    encoding (``classes`` sorted, as ``numpy.unique`` gives them), the regression targets' scale
    and the sample shape."""

    in_shape: tuple[int, ...]
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    classes: np.ndarray | None = None  # classification: the raw labels; id = position
    y_mean: np.ndarray | None = None
    y_std: np.ndarray | None = None
    label_names: np.ndarray | None = None  # text labels stored as codes: code i is label_names[i]

    def features(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        if not np.all(np.isfinite(flat)):
            bad = np.unique(np.nonzero(~np.isfinite(flat))[0])[:5].tolist()
            raise TrainrunError(f"the features hold NaN or infinite values (rows {bad} of a batch)", key="data",
                                fix="clean or impute the missing values before training")
        if self.x_mean is not None and self.x_std is not None:
            flat = (flat - self.x_mean) / self.x_std
        return flat.reshape(len(x), *self.in_shape)

    def targets(self, y: np.ndarray) -> np.ndarray:
        if self.classes is not None:
            flat = y.reshape(len(y), -1)[:, 0]
            if self.label_names is not None:
                flat = self.label_names[flat.astype(np.int64)]
            ids = np.searchsorted(self.classes, flat)
            ids = np.minimum(ids, len(self.classes) - 1)
            unknown = self.classes[ids] != flat
            if np.any(unknown):
                raise TrainrunError(f"the targets hold the label {flat[unknown][0]!r}, which the model was not "
                                    f"trained on; its classes are {self.classes.tolist()}", key="data",
                                    fix="score data whose labels are among the training classes")
            return ids.astype(np.int64)
        y = y.astype(np.float32)
        if self.y_mean is not None and self.y_std is not None:
            y = (y - self.y_mean.reshape(y.shape[1:])) / self.y_std.reshape(y.shape[1:])
        return y


@dataclass
class RowChunks:
    """A file read a chunk at a time for ``predict``: ``read()`` yields ``(features float32 or a
    table, targets or None, ids or None)``."""

    read: Callable[[], Iterator[tuple[Any, np.ndarray | None, np.ndarray | None]]]
    id_name: str | None = None
