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
from torch.utils.data import Dataset

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
    # A user Dataset's task and class count, when guessed from a few samples: what was guessed
    # (preflight says it; a batch whose labels do not fit stops the run with this).
    guessed: str | None = None

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)


@dataclass
class Splits:
    """Arrays (``X`` float32, ``y`` class ids or float32) per split; ``val``/``test`` may be None."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None


@dataclass
class DatasetSplits:
    """User ``Dataset`` objects per split (the DataLoader path)."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None


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
) -> tuple[Splits, DataInfo]:
    """Check, encode, split and standardize ``(X, y)``; the statistics come from train only."""
    x = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    if x.ndim < 2 or len(x) != len(y):
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
            key="data",
            fix="clean or impute the missing values before training",
        )
    task = infer_task(y) if task == "auto" else task

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
    else:
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
        if task == "binary" and num_classes > 2:
            raise TrainrunError(
                f"data.task=binary but the targets hold {num_classes} classes",
                key="data.task",
                fix="use data.task=multiclass",
            )
        num_classes = max(num_classes, 2)
        y = y.astype(np.int64)

    n = len(x)
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

    y_scale = 1.0
    y_stats: tuple[list[float], list[float]] | tuple[None, None] = (None, None)
    if standardize:
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
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
            )
        in_shape = tuple(image_shape)
        x = x.reshape(n, *in_shape)

    def pick(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return (np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])) if len(idx) else None

    splits = Splits(train=pick(train_idx), val=pick(val_idx), test=pick(test_idx))  # type: ignore[arg-type]
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
    )
    return splits, info


# Labels read from a Dataset that declares neither its labels nor its classes: a few samples,
# spread over it. Reading every sample to infer the task cost seconds before the first step
# (2,000 samples at 2 ms each); the preflight batch and a range check on every batch's labels
# (``build.label_guard``) catch a guess that turns out wrong.
SAMPLED = 32
TASKS = ("regression", "binary", "multiclass")


def dataset_labels(dataset: Dataset, n: int, first: Any) -> tuple[np.ndarray, int]:
    """The Dataset's labels and how many samples they cover: all of them where the Dataset
    holds them apart from its samples (torchvision's ``targets``, a ``TensorDataset``'s second
    tensor), else those of about ``SAMPLED`` samples drawn over it (``__getitem__`` calls)."""
    held = getattr(dataset, "targets", None)
    if held is None and isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        held = dataset.tensors[1]
    if held is not None:
        labels = np.asarray(held.numpy() if isinstance(held, torch.Tensor) else held)
        if labels.ndim >= 1 and len(labels) == n and labels.dtype.kind in "biuf":
            return labels, n
    # Drawn at random (seeded), not evenly spaced: labels that repeat with a period (i % 3) would
    # alias with a fixed stride and hide a class.
    picks = sorted({0, *np.random.default_rng(0).choice(n, size=min(n, SAMPLED) - 1, replace=False).tolist()})
    return np.asarray([np.asarray((first if i == 0 else dataset[i])[1]) for i in picks]), len(picks)


def prepare_dataset(
    dataset: Dataset, *, task: str, val_fraction: float, test_fraction: float, seed: int
) -> tuple[DatasetSplits, DataInfo]:
    """Split a user Dataset with a seeded generator; its task and class count come from what it
    declares (``task``, ``num_classes``, ``classes``, ``targets``) or from a few samples, never
    from reading it whole."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise TrainrunError("the Dataset the data source returned is empty (len 0)", key="data._target_",
                            fix="check what the Dataset reads (its folder, files or filters)")
    first = dataset[0]
    if not (isinstance(first, tuple | list) and len(first) == 2):
        raise TrainrunError(f"the Dataset's samples must be (x, y) pairs; sample 0 is {type(first).__name__}",
                            key="data._target_", fix="return (features, target) from __getitem__")
    kinds = [type(v).__name__ for v in first]
    if not all(isinstance(v, torch.Tensor | np.ndarray | int | float | np.number) for v in first):
        raise TrainrunError(f"the Dataset's samples must be (x, y) of tensors, arrays or numbers; sample 0 "
                            f"is ({', '.join(kinds)})", key="data._target_",
                            fix="convert text or images to tensors in __getitem__ (e.g. with torchvision transforms)")
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_val - n_test < 1:
        raise TrainrunError("the split fractions leave no training samples", key="data.val_fraction")
    split_sizes_asked(n, val_fraction, n_val, test_fraction, n_test)
    train, val, test = torch.utils.data.random_split(
        dataset, [n - n_val - n_test, n_val, n_test], generator=torch.Generator().manual_seed(seed)
    )
    labels, seen = dataset_labels(dataset, n, first)
    declared_task = getattr(dataset, "task", None)
    if declared_task is not None and declared_task not in TASKS:
        raise TrainrunError(f"the Dataset declares task={declared_task!r}", key="data._target_",
                            fix=f"declare one of {', '.join(TASKS)} (or no task attribute)")
    names = getattr(dataset, "classes", None)
    declared_classes = int(getattr(dataset, "num_classes", 0) or 0) or (len(names) if names is not None else 0)
    if task == "auto":
        task = declared_task or (("binary" if declared_classes == 2 else "multiclass") if declared_classes
                                 else infer_task(labels))
    num_classes = None
    note = None
    if task != "regression":
        num_classes = declared_classes or int(labels.max()) + 1
        if not declared_classes and seen < n:
            note = (f"{task}, {max(num_classes, 2)} classes: guessed from the labels of {seen} of {n} samples "
                    "(give the Dataset a num_classes or classes attribute to state it)")
    info = DataInfo(
        task=task,
        in_shape=tuple(torch.as_tensor(first[0]).shape),
        num_classes=max(num_classes, 2) if num_classes else None,
        target_width=1 if labels.ndim == 1 else labels.shape[1],
        sizes={"train": len(train), "val": n_val, "test": n_test},
        guessed=note,
    )
    return DatasetSplits(train, val if n_val else None, test if n_test else None), info
