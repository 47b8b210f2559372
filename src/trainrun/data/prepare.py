"""Preparation: check what a source returned, infer the task, encode labels, split with a
seeded permutation and standardize with statistics of the train split only.

:class:`DataInfo` is what the data tells the rest of the build (task, sample shape, classes,
scaling); it is decided here, once, so the model and the loss are built to fit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainrun.data import guesses
from trainrun.data.encode import Columns, Encoding, fit
from trainrun.data.identity import DataIdentity
from trainrun.errors import TrainrunError


@dataclass
class DataInfo:
    """What the data tells the rest of the build: task and sizes."""

    task: str  # regression | binary | multiclass
    in_shape: tuple[int, ...]
    num_classes: int | None  # classification only
    target_width: int  # columns of y for regression, 1 otherwise
    classes: list[Any] | None = None  # original labels, index = class id
    y_scale: float = 1.0  # regression: RMSE is reported in the target's own units
    sizes: dict[str, int] = field(default_factory=dict)
    # Regression with standardize: per target column, so predictions map back to the target's
    # units (prediction * y_std + y_mean). ``None`` when targets were not standardized.
    y_mean: list[float] | None = None
    y_std: list[float] | None = None
    # Array data: each split's sample positions in the source's rows (evaluate's predictions.csv).
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    # standardize: the train split's per-feature mean and divisor (std, 0 replaced by 1) of the
    # flattened samples, float32; kept in checkpoints and applied to new data (data/fitted.py).
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    features: list[str] | None = None  # the feature columns by name (CSV), in the model's order
    # A user Dataset's task and class count, when guessed from a few samples: what was guessed
    # (preflight says it; a batch whose labels do not fit stops the run with this).
    guessed: str | None = None
    # The global random streams a user Dataset's __getitem__ draws from (data/order.py seeds
    # them per sample); not saved.
    streams: tuple[str, ...] = ()
    identity: DataIdentity | None = None  # what the data is, by content (data/identity.py)
    encoding: Encoding | None = None  # text columns one-hot, empty cells filled (data/encode.py)
    ids: np.ndarray | None = None  # the data.id column, one per source row (not saved)
    id_name: str | None = None  # data.id: predict writes the same column
    unseen: dict[str, int] = field(default_factory=dict)  # new data: rows with a category training never saw

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)


@dataclass
class Splits:
    """Arrays (``X`` float32, ``y`` class ids or float32) per split; ``val``/``test`` may be None."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None


def infer_task(y: np.ndarray) -> str:
    """Non-integer numbers are a regression target; two labels binary; more multiclass."""
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return "regression"
    if y.ndim > 1 and y.shape[1] > 1:
        return "regression"
    return "binary" if len(np.unique(y)) <= 2 else "multiclass"


def split_sizes_asked(n: int, val_fraction: float, n_val: int, test_fraction: float, n_test: int) -> None:
    """A split asked for (a fraction above 0) must hold at least one sample: rounding
    ``0.2 * 2`` down to none would silently train without the validation the config asks for."""
    for key, fraction, size in (("data.val_fraction", val_fraction, n_val),
                                ("data.test_fraction", test_fraction, n_test)):
        if fraction > 0 and size == 0:
            raise TrainrunError(
                f"{key}={fraction} of {n} samples is {fraction * n:.2g} sample(s), which rounds to none",
                key=key, fix=f"use more data, a larger {key}, or {key}=0 to go without that split",
            )


def prepare_arrays(
    x: Any,
    y: Any,
    *,
    task: str,
    val_fraction: float,
    test_fraction: float,
    standardize: bool,
    seed: int,
    image_shape: list[int] | None,
    missing: str = "refuse",
    fill_value: float = 0.0,
) -> tuple[Splits, DataInfo]:
    """Check, encode, split and standardize ``(X, y)``; the statistics come from train only.
    ``X`` may be a table as read (:class:`~trainrun.data.encode.Columns`: text columns, empty
    cells, ids), encoded by what its train split teaches (``data.missing``, ``data.fill_value``)."""
    table = x if isinstance(x, Columns) else None
    x = x if table is not None else np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    if table is None and missing != "refuse" and x.dtype.kind == "f" and x.ndim >= 2 and np.isnan(x).any():
        table = Columns.of_matrix(x)  # NaN features under a fill policy: numeric columns with empty cells
    encoding = None
    if table is not None:
        train_rows = split_indices(len(table), val_fraction, test_fraction, seed)[0]
        encoding = fit(table, train_rows, missing=missing, fill_value=fill_value, categorical=table.categorical,
                       where=table.where)
        shape = None if isinstance(x, Columns) else x.shape[1:]
        x = encoding.apply(table, table.where)[0]
        if shape is not None and len(shape) > 1:
            x = x.reshape(len(x), *shape)
    y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    if x.ndim < 2 or y.ndim not in (1, 2) or len(x) != len(y):
        raise TrainrunError(
            f"the data source returned X of shape {list(x.shape)} and y of shape {list(y.shape)}; "
            "X needs one row per sample and y one target per row",
            key="data._target_",
            fix="return X shaped [samples, features...] and y shaped [samples] (or [samples, k])",
        )
    if x.dtype.kind not in "biuf":
        raise TrainrunError(f"the features must be numbers, got dtype {x.dtype} (e.g. {x.flat[0].tolist()!r})",
                            key="data._target_",
                            fix="encode text features as numbers before returning them")
    if len(x) == 0:
        raise TrainrunError("the data source returned no samples (X has 0 rows)", key="data._target_",
                            fix="check what the source reads (path, filters, query)")
    sample_shape = tuple(x.shape[1:])  # kept: a source that returns images gives [C, H, W]
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.all(np.isfinite(x)):
        rows = np.unique(np.nonzero(~np.isfinite(x))[0])[:5].tolist()
        raise TrainrunError(
            f"the features hold NaN or infinite values (rows {rows}...)",
            key="data.missing" if np.isnan(x).any() else "data",
            fix="clean them, or fill NaN features with data.missing=mean (or median, or constant with "
            "data.fill_value=0)" if np.isnan(x).any() else "clean or drop the rows with infinite values",
        )
    guessed = task == "auto"  # the guess's degenerate answers are refused (data/guesses.py)
    task = infer_task(y) if guessed else task

    classes = None
    num_classes = None
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise TrainrunError(
                f"data.task=regression needs numeric targets, got {y.dtype} values like {y[0]!r}",
                key="data.task",
                fix="use data.task=multiclass (or binary) for labels",
            )
        y = y.astype(np.float32)
        if not np.all(np.isfinite(y)):
            bad = np.unique(np.nonzero(~np.isfinite(y))[0])[:5].tolist()
            raise TrainrunError(f"the targets hold NaN or infinite values (rows {bad}...)", key="data._target_",
                                fix="drop or fix the rows whose target is missing")
        guesses.check_not_constant(y, task="auto" if guessed else task)
    else:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:  # np.unique would flatten it: several labels per sample, silently
            raise TrainrunError(
                f"data.task={task} needs one label per sample, but y has shape {list(y.shape)} "
                f"({y.shape[1]} columns)",
                key="data.task",
                fix="return y shaped [samples] for classes, or use data.task=regression for "
                "several numeric targets",
            )
        classes, y = np.unique(y, return_inverse=True)
        num_classes = len(classes)
        if num_classes < 2:
            raise TrainrunError(
                f"the targets hold a single class ({classes[0].tolist()!r} for all {len(y)} samples): there "
                "is nothing to tell apart, and any model would score 100%",
                key="data.task" if task != "auto" else "data._target_",
                fix="check the target column/array (data.target for CSV); for numeric targets "
                "use data.task=regression",
            )
        if guessed:
            guesses.check_guessed_classes(classes, y)
        if task == "binary" and num_classes > 2:
            raise TrainrunError(
                f"data.task=binary but the targets hold {num_classes} classes",
                key="data.task",
                fix="use data.task=multiclass",
            )
        num_classes = max(num_classes, 2)
        y = y.astype(np.int64)

    n = len(x)
    train_idx, val_idx, test_idx = split_indices(n, val_fraction, test_fraction, seed)

    y_scale = 1.0
    y_stats: tuple[list[float], list[float]] | tuple[None, None] = (None, None)
    x_stats: tuple[np.ndarray, np.ndarray] | tuple[None, None] = (None, None)
    if standardize:
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        x_stats = mean, np.where(std > 0, std, 1.0).astype(np.float32)
        if encoding is not None:  # one-hot columns stay 0/1
            x_stats[0][encoding.one_hot], x_stats[1][encoding.one_hot] = 0.0, 1.0
        x = (x - x_stats[0]) / x_stats[1]
        if task == "regression":
            y_mean, y_std = y[train_idx].mean(axis=0), y[train_idx].std(axis=0)
            y_std = np.where(y_std > 0, y_std, 1.0)
            y = (y - y_mean) / y_std
            y_scale = float(np.mean(y_std))
            y_stats = np.atleast_1d(y_mean).tolist(), np.atleast_1d(y_std).tolist()

    in_shape: tuple[int, ...] = sample_shape
    if len(sample_shape) > 1 and not image_shape:
        x = x.reshape(n, *sample_shape)
    if image_shape:
        if math.prod(image_shape) != x.shape[1]:
            raise TrainrunError(
                f"data.image_shape={list(image_shape)} holds {math.prod(image_shape)} values, "
                f"but each sample has {x.shape[1]} features",
                key="data.image_shape",
                fix="give [channels, height, width] whose product is the number of features per sample, "
                "or data.image_shape=null for flat samples",
            )
        in_shape = tuple(image_shape)
        x = x.reshape(n, *in_shape)

    def arrays(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])

    def pick(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return arrays(idx) if len(idx) else None

    splits = Splits(train=arrays(train_idx), val=pick(val_idx), test=pick(test_idx))  # train: never empty
    info = DataInfo(
        task=task,
        in_shape=in_shape,
        num_classes=num_classes,
        target_width=1 if y.ndim == 1 else y.shape[1],
        classes=None if classes is None else classes.tolist(),
        y_scale=y_scale,
        sizes={"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
        y_mean=y_stats[0],
        y_std=y_stats[1],
        rows={"train": train_idx, "val": val_idx, "test": test_idx},
        x_mean=x_stats[0],
        x_std=x_stats[1],
        encoding=encoding,
        features=table.names if isinstance(table, Columns) and table is not None and not _unnamed(table) else None,
        ids=None if table is None else table.ids,
        id_name=None if table is None else table.id_name,
    )
    return splits, info


def _unnamed(table: Columns) -> bool:
    return table.names == [f"x{j}" for j in range(len(table.names))] and table.id_name is None


def split_indices(n: int, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` sample positions: one seeded permutation, test first, then val."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n - n_val - n_test < 1:
        raise TrainrunError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training "
            f"samples out of {n}",
            key="data.val_fraction",
            fix="lower data.val_fraction / data.test_fraction",
        )
    split_sizes_asked(n, val_fraction, n_val, test_fraction, n_test)
    test_idx, val_idx, train_idx = np.split(order, [n_test, n_test + n_val])
    return train_idx, val_idx, test_idx
