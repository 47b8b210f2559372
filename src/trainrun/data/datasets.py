"""A user's ``torch.utils.data.Dataset``: split with a seeded generator, its task and class
count taken from what it declares (``task``, ``num_classes``, ``classes``, ``targets``) or from
a few samples, never from reading it whole (2,000 samples at 2 ms each cost seconds before the
first step). Arrays are prepared by :mod:`trainrun.data.prepare`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from trainrun.data.order import STREAMS, streams_used
from trainrun.data.prepare import DataInfo, infer_task, split_sizes_asked
from trainrun.errors import TrainrunError


@dataclass
class DatasetSplits:
    """User ``Dataset`` objects per split (the DataLoader path)."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None


# Labels read from a Dataset that declares neither its labels nor its classes: a few samples,
# spread over it. Reading every sample to infer the task cost seconds before the first step
# (2,000 samples at 2 ms each); the preflight batch and a range check on every batch's labels
# (``build.label_guard``) catch a guess that turns out wrong.
SAMPLED = 32
TASKS = ("regression", "binary", "multiclass")


def dataset_labels(dataset: Dataset, n: int, first: Sequence[Any]) -> tuple[np.ndarray, int]:
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
    n = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__; map-style ones define it
    if n == 0:
        raise TrainrunError("the Dataset the data source returned is empty (len 0)", key="data._target_",
                            fix="check what the Dataset reads (its folder, files or filters)")
    # sample 0 and the labels below are read while watching which random streams they draw from
    first, streams = streams_used(lambda: dataset[0])
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
    (labels, seen), more = streams_used(lambda: dataset_labels(dataset, n, first))
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
        whole = labels.dtype.kind in "biu" or (labels.dtype.kind == "f" and bool(np.all(np.mod(labels, 1) == 0)))
        if not whole:  # (negative ids are preflight's: it names the range the loss needs)
            bad = labels.reshape(-1)[np.flatnonzero(~(np.mod(labels, 1) == 0))[:1]].tolist() \
                if labels.dtype.kind == "f" else labels.reshape(-1)[:1].tolist()
            raise TrainrunError(
                f"data.task={task}: the Dataset's labels must be class ids 0, 1, 2, ..., but one is "
                f"{bad[0] if bad else labels.dtype!r} (a class loss would truncate it to a whole number)",
                key="data.task",
                fix="return whole class ids from __getitem__, or use data.task=regression for numeric labels",
            )
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
        streams=tuple(s for s in STREAMS if s in streams or s in more),
    )
    return DatasetSplits(train, val if n_val else None, test if n_test else None), info


def prepare_stream(stream: IterableDataset, *, task: str, val_fraction: float, test_fraction: float,
                   seed: int) -> tuple[DatasetSplits, DataInfo]:
    """A stream (``IterableDataset``) is the training split, as it comes (``data/iterable.py``);
    its task and classes from what it declares or from its first samples."""
    for key, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if value:
            raise TrainrunError(f"{key}={value}: a stream (IterableDataset) cannot be split, it has no index",
                                key=key, fix=f"{key}=0 (and objective=train_loss checkpoint.monitor=train_loss "
                                "without a validation split), or return a map-style Dataset")
    (first_items, streams) = streams_used(lambda: list(itertools.islice(iter(stream), SAMPLED)))
    if not first_items:
        raise TrainrunError("the stream the data source returned yields no sample", key="data._target_",
                            fix="check what the IterableDataset reads")
    first = first_items[0]
    if not (isinstance(first, tuple | list) and len(first) == 2):
        raise TrainrunError(f"the stream's samples must be (x, y) pairs; the first is {type(first).__name__}",
                            key="data._target_", fix="yield (features, target) from __iter__")
    labels = np.asarray([np.asarray(item[1]) for item in first_items])
    declared = getattr(stream, "task", None)
    names = getattr(stream, "classes", None)
    classes = int(getattr(stream, "num_classes", 0) or 0) or (len(names) if names is not None else 0)
    if task == "auto":
        task = declared or (("binary" if classes == 2 else "multiclass") if classes else infer_task(labels))
    num_classes = None if task == "regression" else max(classes or int(labels.max()) + 1, 2)
    note = None if task == "regression" or classes else (
        f"{task}, {num_classes} classes: guessed from the labels of the stream's first {len(labels)} samples "
        "(give it a num_classes or classes attribute to state it)")
    info = DataInfo(task=task, in_shape=tuple(torch.as_tensor(first[0]).shape), num_classes=num_classes,
                    target_width=1 if labels.ndim == 1 else labels.shape[1], guessed=note,
                    sizes={"train": len(stream) if hasattr(stream, "__len__") else 0, "val": 0, "test": 0},
                    streams=streams)
    return DatasetSplits(stream, None, None), info
