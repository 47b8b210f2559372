"""The degenerate answers of trainrun's guesses, refused with the key that decides.

trainrun guesses two things about a data set: the task from the targets (``data.task=auto``)
and, for tables, the features from the columns (``data.features`` null: every column but the
target). A guess that lands on an answer no run can use right is refused here, naming the key
that replaces the guess, instead of training something that finishes with exit 0 and means
nothing:

* **no features**: samples of size 0 (an NPZ ``X`` of shape ``[N, 0]``, ``data.features=[]``);
* **classes nobody could learn**: a guessed class task in which a class holds a single sample
  (an id column, a count, a rounded price: every integer value distinct is not a 120-class
  task); with ``data.task`` given, the user has decided and the classes stand;
* **nothing to learn**: a target with one value for every sample (one class is refused by
  :mod:`trainrun.data.prepare`, a constant real value here), whoever chose the task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainrun.errors import TrainrunError


def check_features(x: Any, *, key: str, sample: tuple[int, ...] | None = None) -> None:
    """Refuse samples without a single feature value: ``X`` (``[N, 0, ...]``) or one ``sample``'s
    shape (a Dataset's). ``key``: what chooses the features (``data.features`` for tables,
    ``data.x_key`` for NPZ, the source otherwise)."""
    if sample is None:
        shape = tuple(getattr(x, "shape", ()) or ())
        dims, shown = shape[1:], f"X has shape {list(shape)}"
    else:
        dims, shown = sample, f"each sample has shape {list(sample)}"
    if dims and math.prod(dims) == 0:
        raise TrainrunError(
            f"the data has no features: {shown}, so every sample is empty and there is nothing to "
            "learn from",
            key=key,
            fix={"data.features": "name at least one feature column (data.features=[a,b,...], or null "
                 "for every column but the target)",
                 "data.x_key": "name the archive's array of features (data.x_key), with one column or more"}.get(
                key, "return X with at least one feature per sample"),
        )


def check_guessed_classes(classes: np.ndarray, ids: np.ndarray) -> None:
    """``data.task=auto`` read the targets as labels: refuse when a class holds one sample."""
    counts = np.bincount(ids, minlength=len(classes))
    single = np.flatnonzero(counts == 1)
    if not len(single):
        return
    shown = ", ".join(repr(v) for v in classes[single[:3]].tolist())
    if len(single) == len(ids):
        what = (f"each of the {len(ids)} samples has a value of its own ({shown}, ...): that is not a "
                f"{len(ids)}-class task")
    else:
        what = (f"{len(single)} of its {len(classes)} classes ({shown}"
                + (", ..." if len(single) > 3 else "") + ") hold a single sample, which no model can "
                "both learn and be checked on")
    raise TrainrunError(
        f"data.task=auto took the targets for class labels, but {what}",
        key="data.task",
        fix="data.task=regression loss=mse if the targets are numbers (a count, a price, an id is no "
        "label), or data.task=multiclass (or binary) to keep them as classes anyway",
    )


def check_not_constant(y: np.ndarray, *, task: str) -> None:
    """A real-valued target (or one of its columns) with one value for every sample."""
    if len(y) < 2:
        return
    columns = y.reshape(len(y), -1)
    same = np.flatnonzero(np.all(columns == columns[:1], axis=0))
    if not len(same):
        return
    where = "" if columns.shape[1] == 1 else f" (column {int(same[0])} of {columns.shape[1]})"
    raise TrainrunError(
        f"the target{where} holds one value, {columns[0, same[0]].item()!r}, for all {len(y)} samples: "
        f"there is nothing to learn (data.task={task})",
        key="data._target_" if task == "auto" else "data.task",
        fix="check the target (data.target for CSV/Parquet, the y the source returns)",
    )
