"""Preparation of rows that stay on disk (:class:`~trainrun.data.rows.MemmapRows`): the seeded
split, and the task, labels and standardization statistics of the train split computed in
**one streaming pass** (64k rows at a time, float64 sums merged by Chan's parallel formula), so
a data set larger than memory is prepared with the memory of one chunk. The statistics are the
same quantities ``prepare_arrays`` computes in memory (equal up to float rounding: another
summation order), saved in the checkpoint as theirs are, and applied per batch by the loader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from trainrun.data.datasets import DatasetSplits
from trainrun.data.prepare import DataInfo, split_indices
from trainrun.data.rows import MemmapRows, RowTransform
from trainrun.errors import TrainrunError

MAX_CLASSES = 100_000


@dataclass
class Moments:
    """Count, mean and sum of squared deviations per column, merged chunk by chunk (Chan et al.)."""

    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        v = values.reshape(len(values), -1).astype(np.float64)
        n, mean = len(v), v.mean(axis=0)
        m2 = ((v - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    def std(self) -> np.ndarray:
        assert self.m2 is not None
        return np.sqrt(self.m2 / max(self.n, 1))


@dataclass
class Labels:
    """What the targets are, seen chunk by chunk: whole numbers or not, and their distinct values."""

    integral: bool = True
    width: int = 1
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, y: np.ndarray) -> None:
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)):
                raise TrainrunError("the targets hold NaN or infinite values", key="data.target_path",
                                    fix="drop or fix the rows whose target is missing")
            self.integral = self.integral and bool(np.all(np.mod(y, 1) == 0))
        self.width = 1 if y.ndim == 1 else y.shape[1]
        if self.integral and self.width == 1 and len(self.values) <= MAX_CLASSES:
            self.values = np.union1d(self.values, np.unique(y)) if len(self.values) else np.unique(y)


def prepare_rows(rows: MemmapRows, *, task: str, val_fraction: float, test_fraction: float, standardize: bool,
                 seed: int, image_shape: list[int] | None, fitted: DataInfo | None = None
                 ) -> tuple[DatasetSplits, DataInfo]:
    """Split rows on disk, and learn (or, with ``fitted``, reuse) what the train split teaches."""
    if not rows.has_targets:
        raise TrainrunError("training needs targets: data.target_path is not set", key="data.target_path",
                            fix="data.target_path=y.npy (one target per row of data.path)")
    n = rows.n
    train_idx, val_idx, test_idx = split_indices(n, val_fraction, test_fraction, seed)
    in_shape = tuple(image_shape) if image_shape else rows.sample_shape
    width = int(np.prod(rows.sample_shape))
    if image_shape and int(np.prod(image_shape)) != width:
        raise TrainrunError(f"data.image_shape={list(image_shape)} holds {int(np.prod(image_shape))} values, "
                            f"but each sample has {width}", key="data.image_shape",
                            fix="give [channels, height, width] whose product is the number of values per sample, "
                            "or data.image_shape=null for the samples' own shape")
    if fitted is not None:
        info = dataclasses.replace(fitted, sizes=_sizes(train_idx, val_idx, test_idx),
                                   rows={"train": train_idx, "val": val_idx, "test": test_idx})
        transform = transform_for(info, rows)
    else:
        info, transform = _learn(rows, train_idx, task=task, standardize=standardize, in_shape=in_shape)
        info.sizes = _sizes(train_idx, val_idx, test_idx)
        info.rows = {"train": train_idx, "val": val_idx, "test": test_idx}

    def split(idx: np.ndarray) -> RowsDataset | None:
        return RowsDataset(rows, idx, transform) if len(idx) else None

    train = RowsDataset(rows, train_idx, transform)  # never empty (split_indices)
    return DatasetSplits(train=train, val=split(val_idx), test=split(test_idx)), info


def _sizes(*splits: np.ndarray) -> dict[str, int]:
    return dict(zip(("train", "val", "test"), (len(s) for s in splits), strict=True))


def transform_for(info: DataInfo, rows: MemmapRows) -> RowTransform:
    """The batch transform of a trained run's statistics (a checkpoint's ``DataInfo``)."""
    classes = None if info.task == "regression" else np.asarray(info.classes or list(range(info.num_classes or 2)))
    return RowTransform(
        in_shape=info.in_shape, x_mean=info.x_mean, x_std=info.x_std, classes=classes,
        label_names=None if rows.label_names is None else np.asarray(rows.label_names),
        y_mean=None if info.y_mean is None else np.asarray(info.y_mean, dtype=np.float32),
        y_std=None if info.y_std is None else np.asarray(info.y_std, dtype=np.float32))


def _learn(rows: MemmapRows, train_idx: np.ndarray, *, task: str, standardize: bool,
           in_shape: tuple[int, ...]) -> tuple[DataInfo, RowTransform]:
    """The one streaming pass: features' and targets' moments over the train rows, the labels."""
    is_train = np.zeros(rows.n, dtype=bool)
    is_train[train_idx] = True
    x_moments, y_moments, labels = Moments(), Moments(), Labels()
    for first, x, y in rows.chunks():
        flat = x.reshape(len(x), -1)
        if not np.all(np.isfinite(flat)):
            bad = (first + np.unique(np.nonzero(~np.isfinite(flat))[0])[:5]).tolist()
            raise TrainrunError(f"the features hold NaN or infinite values (rows {bad}...)", key="data.path",
                                fix="clean or impute the missing values before training")
        mask = is_train[first:first + len(x)]
        x_moments.add(flat[mask])
        assert y is not None
        labels.add(y)
        y_moments.add(y[mask].astype(np.float64))
    text = rows.label_names is not None
    if task == "auto":
        regression = not text and (not labels.integral or labels.width > 1)
        task = "regression" if regression else ("binary" if len(labels.values) <= 2 else "multiclass")
    x_stats: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    if standardize and x_moments.mean is not None:
        std = x_moments.std()
        x_stats = (x_moments.mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))
    if task == "regression":
        if text:
            raise TrainrunError("data.task=regression needs numeric targets; these are text labels", key="data.task",
                                fix="use data.task=multiclass (or binary) for labels")
        y_mean = y_std = None
        if standardize:
            y_mean = y_moments.mean.astype(np.float32)  # type: ignore[union-attr]
            y_std = np.where(y_moments.std() > 0, y_moments.std(), 1.0).astype(np.float32)
        info = DataInfo(task=task, in_shape=in_shape, num_classes=None, target_width=labels.width,
                        y_scale=float(np.mean(y_std)) if y_std is not None else 1.0,
                        y_mean=None if y_mean is None else y_mean.tolist(),
                        y_std=None if y_std is None else y_std.tolist(),
                        x_mean=x_stats[0], x_std=x_stats[1], features=rows.columns, id_name=rows.id_name)
        return info, transform_for(info, rows)
    if not labels.integral or labels.width > 1:
        raise TrainrunError(f"data.task={task} needs one whole-number label per sample", key="data.task",
                            fix="use data.task=regression for numeric targets")
    if len(labels.values) > MAX_CLASSES:
        raise TrainrunError(f"the targets hold more than {MAX_CLASSES:,} distinct labels", key="data.task",
                            fix="use data.task=regression for numeric targets")
    values = labels.values
    if len(values) < 2:
        raise TrainrunError(f"the targets hold a single class ({values.tolist()}): there is nothing to tell apart",
                            key="data.target_path",
                            fix="check the targets; for numeric targets use data.task=regression")
    if task == "binary" and len(values) > 2:
        raise TrainrunError(f"data.task=binary but the targets hold {len(values)} classes", key="data.task",
                            fix="use data.task=multiclass")
    classes = [rows.label_names[int(v)] for v in values] if rows.label_names is not None else \
        [int(v) if float(v).is_integer() else float(v) for v in values.tolist()]
    info = DataInfo(task=task, in_shape=in_shape, num_classes=max(len(values), 2), target_width=1,
                    classes=classes, x_mean=x_stats[0], x_std=x_stats[1], features=rows.columns, id_name=rows.id_name)
    return info, transform_for(info, rows)


class RowsDataset(Dataset):
    """One split of rows on disk (``positions`` in the data set), fetched a batch at a time:
    ``__getitems__`` reads the batch's rows and returns ``(features, targets)`` tensors."""

    fetches_batches = True  # LoaderBatches: no per-sample collation

    def __init__(self, rows: MemmapRows, positions: np.ndarray, transform: RowTransform) -> None:
        self.rows, self.positions, self.transform = rows, positions, transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, batch: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.rows.take(self.positions[np.asarray(batch, dtype=np.int64)])
        targets = self.transform.targets(y) if y is not None else np.zeros(len(x), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.transform.features(x))), torch.from_numpy(targets)
