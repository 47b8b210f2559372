"""New data for a trained model (``predict``), a chunk at a time: whatever the source returned
(arrays, a table with text columns or ids, rows on disk, a file read in chunks, a user Dataset)
as :class:`Chunk` objects holding the samples prepared with the *training's* statistics, the
data's own targets if it has them, and its ids. ``predict`` runs the model on each chunk and
writes its rows of ``predictions.csv`` before reading the next, so neither the input of a
streamed source nor the output is ever held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainrun.data import fitted as fitted_data
from trainrun.data.encode import Columns
from trainrun.data.prepare import DataInfo
from trainrun.data.rows import CHUNK_ROWS, MemmapRows, RowChunks
from trainrun.errors import TrainrunError


@dataclass
class Chunk:
    x: np.ndarray  # prepared as the model takes it
    y: np.ndarray | None  # the data's own targets, as read
    ids: np.ndarray | None  # data.id, as read
    first: int  # the row of the first sample in the new data


def chunks(source: Any, info: DataInfo, size: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """``source`` (what a data source returned with ``require_target=False``) in prepared chunks."""
    if isinstance(source, RowChunks):
        first = 0
        for x, y, ids in source.read():
            yield Chunk(fitted_data.features(x, info), y, ids, first)
            first += len(y) if y is not None else len(ids) if ids is not None else len(x)
        return
    if isinstance(source, MemmapRows):
        for first, x, y in source.chunks(size):
            labels = None if y is None or source.label_names is None else np.asarray(source.label_names)[y]
            yield Chunk(fitted_data.features(x, info), labels if labels is not None else y, None, first)
        return
    if isinstance(source, Dataset):
        yield from _dataset_chunks(source, info, size)
        return
    if isinstance(source, tuple | list):
        if len(source) != 2:
            raise TrainrunError(f"the data source returned {len(source)} items; predict takes X, (X, y) or (X, None)",
                                key="data._target_")
        x, y = source
    else:
        x, y = source, None
    ids = x.ids if isinstance(x, Columns) else None
    x = fitted_data.features(x, info)
    if y is not None:
        y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
        if len(y) != len(x):
            raise TrainrunError(f"the data source returned {len(x)} samples and {len(y)} targets", key="data._target_")
    for lo in range(0, max(len(x), 1), size):
        yield Chunk(x[lo:lo + size], None if y is None else y[lo:lo + size],
                    None if ids is None else ids[lo:lo + size], lo)


def _dataset_chunks(dataset: Dataset, info: DataInfo, size: int) -> Iterator[Chunk]:
    """A user Dataset's samples (``x`` or ``(x, y)`` each), shaped as in training."""
    n = len(dataset)  # type: ignore[arg-type]
    for lo in range(0, n, size):
        xs, ys = [], []
        for i in range(lo, min(n, lo + size)):
            item = dataset[i]
            x, y = item if isinstance(item, tuple | list) and len(item) == 2 else (item, None)
            xs.append(np.asarray(torch.as_tensor(x), dtype=np.float32).reshape(info.in_shape))
            ys.append(y)
        y_out = None if all(y is None for y in ys) else np.asarray([np.asarray(y) for y in ys])
        yield Chunk(np.stack(xs), y_out, None, lo)
