"""The degenerate answers of trainrun's guesses, refused with the key that decides.

trainrun guesses two things about a data set: the task from the targets (``data.task=auto``)
and, for tables, the features from the columns (``data.features`` null: every column but the
target). A guess that lands on an answer no run can use right is refused here, naming the key
that replaces the guess, instead of training something that finishes with exit 0 and means
nothing:

* **no features**: samples of size 0 (an NPZ ``X`` of shape ``[N, 0]``, a Dataset of empty
  samples), or features that are each one value for every sample;
* **the answer among the features**: a guessed feature column equal to the target on every
  row (a copy of the label under another name);
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

from trainrun.data.encode import Columns
from trainrun.errors import TrainrunError


def check_features(x: Any, *, key: str, sample: tuple[int, ...] | None = None) -> None:
    """Refuse samples without a single feature value: ``X`` (``[N, 0, ...]``) or one ``sample``'s
    shape (a Dataset's). ``key``: what chooses the features (``data.features`` for tables,
    ``data.x_key`` for NPZ, the source otherwise)."""
    dims: tuple[int, ...]
    if isinstance(x, Columns):
        dims, shown = (len(x.names),), f"the table has {len(x.names)} feature columns"
    elif sample is None:
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


def _columns(x: Any) -> list[np.ndarray] | None:
    """The feature columns of a matrix ``[N, ...]`` (flattened) or of a table read as
    :class:`~trainrun.data.encode.Columns` (numbers or text); None when there are none to see."""
    if isinstance(x, Columns):
        return list(x.values)
    cols = np.asarray(x)
    if cols.ndim < 2 or cols.dtype.kind not in "biuf":
        return None
    flat = cols.reshape(len(cols), -1)
    return [flat[:, j] for j in range(flat.shape[1])] if flat.shape[1] <= 4096 else None  # wider: images


def check_constant_features(x: Any, *, key: str) -> None:
    """Features that hold one value each for every sample tell the samples nothing apart."""
    matrix = np.asarray(x) if not isinstance(x, Columns) else None
    if matrix is not None and matrix.ndim >= 2 and matrix.dtype.kind in "biuf" and len(matrix) > 1:
        flat = matrix.reshape(len(matrix), -1)  # one vectorized pass, whatever the width
        constant, width = bool(np.all(np.ptp(flat, axis=0) == 0)), flat.shape[1]
    else:
        cols = _columns(x)
        if not cols or len(cols[0]) < 2:
            return
        constant, width = all(bool(np.all(c == c[0])) for c in cols), len(cols)
    if not constant:
        return
    raise TrainrunError(
        f"every feature holds one value for all {len(x)} samples ({width} column(s)): the samples "
        "cannot be told apart, and the model could only learn the targets' average",
        key=key,
        fix="choose columns that vary (data.features=[...])" if key == "data.features" else
        "check the features the source returns",
    )


def check_guessed_features(x: Any, y: Any, names: list[str] | None) -> None:
    """``data.features`` null took every column but the target: refuse when one of them is the
    target again under another name (a copy, an export artefact): the model would be handed the
    answer and score 100 %."""
    cols, target = _columns(x), np.asarray(y).reshape(-1)
    names = x.names if isinstance(x, Columns) else names
    if not cols or not names or len(names) != len(cols) or len(target) != len(cols[0]) or len(target) < 2:
        return
    for j, col in enumerate(cols[: len(names)]):
        same = col.astype(str) == target.astype(str) if col.dtype.kind in "OUS" or target.dtype.kind in "OUS" \
            else (target.dtype.kind in "biuf" and col == target.astype(col.dtype))
        if bool(np.all(same)):
            raise TrainrunError(
                f"data.features=null took every column but the target as a feature, and column "
                f"{names[j]!r} equals the target on every one of the {len(target)} rows: the model would "
                "be handed the answer",
                key="data.features",
                fix=f"list the features without {names[j]!r}: data.features=[...]",
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


def check_arrays(x: Any, y: Any, *, key: str, column_names: list[str] | None) -> None:
    """What a source returned, before it is prepared: features there are, and vary;
    ``column_names`` (features guessed from a table's columns): none of them is the target.
    Arrays without one row per target, or without rows, are left to ``prepare``, which names
    their shapes: that is the mistake to report, not what their values look like."""
    rows, targets = getattr(x, "shape", (None,))[:1], getattr(y, "shape", (None,))[:1]
    if not rows or not targets or rows != targets or rows[0] == 0:
        return
    check_features(x, key=key)
    check_constant_features(x, key=key)
    check_guessed_features(x, y, column_names)
