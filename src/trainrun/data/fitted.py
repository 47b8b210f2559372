"""What the training split taught the data pipeline, as data: the feature statistics of
``standardize``, the label encoding, the regression targets' scale, the sample shape and the
feature names. It is saved in every checkpoint (``payload``'s ``"data"`` entry) and applied to
data the model has not seen (``evaluate data=...``, ``predict``, ``export``'s
``preprocessing.json``), so new rows are scaled and encoded exactly as the training rows were,
never with statistics of their own (a 3-row file, or a shifted one, would get different ones).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from trainrun.data.encode import Columns, Encoding
from trainrun.data.identity import DataIdentity
from trainrun.data.prepare import DataInfo, Splits, split_indices
from trainrun.errors import TrainrunError

# DataInfo fields kept in a checkpoint, besides the statistics (``rows``, each training sample's
# position in the source, is not kept: it is the training data's, not the transform's).
SAVED = ("task", "in_shape", "num_classes", "target_width", "classes", "y_scale", "y_mean", "y_std",
         "features", "sizes", "id_name")


def to_payload(info: DataInfo) -> dict[str, Any]:
    """``info`` as plain values and tensors (what ``torch.load(weights_only=True)`` reads back)."""
    saved: dict[str, Any] = {name: getattr(info, name) for name in SAVED}
    saved["in_shape"] = list(info.in_shape)
    saved["classes"] = None if info.classes is None else [_plain(c) for c in info.classes]
    for name in ("x_mean", "x_std"):
        value = getattr(info, name)
        saved[name] = None if value is None else torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    saved["identity"] = None if info.identity is None else info.identity.to_dict()
    saved["encoding"] = None if info.encoding is None else info.encoding.to_dict()
    return saved


def from_payload(saved: dict[str, Any]) -> DataInfo:
    """The :class:`DataInfo` a checkpoint's ``"data"`` entry describes."""
    values: dict[str, Any] = {name: saved.get(name) for name in SAVED}  # the checkpoint's plain values
    values["in_shape"] = tuple(int(v) for v in values["in_shape"])
    values["sizes"] = dict(values.get("sizes") or {})
    info = DataInfo(**values)
    info.identity = DataIdentity.from_dict(saved.get("identity"))
    info.encoding = Encoding(**saved["encoding"]) if saved.get("encoding") else None
    for name in ("x_mean", "x_std"):
        value = saved.get(name)
        setattr(info, name, None if value is None else value.numpy().astype(np.float32))
    return info


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- applied to new data


def check_width(x: np.ndarray, fitted: DataInfo, key: str = "data") -> None:
    """New samples must have as many values as the training samples (after flattening)."""
    width = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if width != fitted.in_features:
        names = f" (its columns: {', '.join(fitted.features)})" if fitted.features else ""
        raise TrainrunError(
            f"the new data has {width} values per sample (shape {list(x.shape[1:])}); the model was "
            f"trained on {fitted.in_features}{names}",
            key=key,
            fix="give the same feature columns as in training (data.features=[...] for a CSV file), "
            "in any order for CSV: they are picked by name" if fitted.features else
            "give the columns the training data had, in its order (it had no column names to pick them by): "
            "data.features=[...] picks and orders a table's columns, data.id=<column> sets an id column aside",
        )


def standardize(x: np.ndarray, fitted: DataInfo) -> np.ndarray:
    """``(x - mean) / std`` with the training split's statistics (float32, flat samples), the same
    arithmetic as ``prepare_arrays``, so a training row gives bit-identical features here."""
    if fitted.x_mean is None or fitted.x_std is None:
        return x
    return (x - fitted.x_mean) / fitted.x_std


def encode_labels(y: np.ndarray, classes: list[Any], key: str = "data") -> np.ndarray:
    """Class ids by the training's encoding (``classes[i]`` is id ``i``): a file holding only some
    of the classes keeps their ids. A label training never saw is refused."""
    ids = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(y), dtype=np.int64)
    for n, label in enumerate(np.asarray(y).reshape(len(y), -1)[:, 0].tolist()):
        found = ids.get(label)
        if found is None and isinstance(label, float) and label.is_integer():
            found = ids.get(int(label))
        if found is None:
            raise TrainrunError(
                f"the new data's targets hold the label {label!r} (row {n}), which the model was not "
                f"trained on; its classes are {classes}",
                key=key,
                fix="score data whose labels are among the training classes, or leave the target out "
                "(predict needs no target)",
            )
        out[n] = found
    return out


def standardize_targets(y: np.ndarray, fitted: DataInfo) -> np.ndarray:
    """Regression targets scaled with the training split's mean and std (when it scaled them)."""
    y = y.astype(np.float32)
    if fitted.y_mean is None or fitted.y_std is None:
        return y
    mean = np.asarray(fitted.y_mean, dtype=np.float32)
    std = np.asarray(fitted.y_std, dtype=np.float32)
    if y.ndim == 1:
        mean, std = mean.reshape(()), std.reshape(())
    return (y - mean) / std


def features(x: Any, fitted: DataInfo, key: str = "data") -> np.ndarray:
    """New samples as the model takes them: checked, encoded as in training (text columns,
    empty cells: ``data/encode.py``), flattened to float32, standardized with the training
    statistics, shaped as the training samples (``fitted.in_shape``)."""
    if isinstance(x, Columns) or fitted.encoding is not None:
        table = x if isinstance(x, Columns) else Columns.of_matrix(np.asarray(x), fitted.features)
        if fitted.encoding is None:  # trained on numbers alone: a table with text or empty cells
            fitted_encoding = Encoding([{"name": n, "kind": "number", "fill": None, "categories": []}
                                        for n in table.names])
        else:
            fitted_encoding = fitted.encoding
        x, unseen = fitted_encoding.apply(table, table.where)
        fitted.unseen = unseen
    x = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    if x.ndim == 1:
        x = x.reshape(len(x), -1) if fitted.in_features == 1 else x.reshape(1, -1)
    if x.dtype.kind not in "biuf":
        raise TrainrunError(f"the new data's features must be numbers, got dtype {x.dtype}", key=key,
                            fix="encode text features as numbers, as for training")
    check_width(x, fitted, key)
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.all(np.isfinite(x)):
        rows = np.unique(np.nonzero(~np.isfinite(x))[0])[:5].tolist()
        raise TrainrunError(f"the new data's features hold NaN or infinite values (rows {rows}...)",
                            key=key, fix="clean or impute the missing values first")
    x = standardize(x, fitted)
    return np.ascontiguousarray(x.reshape(len(x), *fitted.in_shape))


def targets(y: Any, fitted: DataInfo, key: str = "data") -> np.ndarray:
    """New targets encoded as training encoded them: class ids by the training's labels, or
    regression values scaled by the training's statistics."""
    y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    if fitted.task == "regression":
        if y.dtype.kind not in "biuf":
            raise TrainrunError(f"the model predicts numbers (regression), but the new targets are "
                                f"{y.dtype} values like {y.flat[0]!r}", key=key)
        return standardize_targets(y, fitted)
    return encode_labels(y, fitted.classes or list(range(fitted.num_classes or 2)), key)


def apply_arrays(x: Any, y: Any, fitted: DataInfo, *, val_fraction: float, test_fraction: float,
                 seed: int) -> tuple[Splits, DataInfo]:
    """``prepare_arrays`` for data a trained model scores (``evaluate data=...``): the same
    seeded split of *this* data, but the training's task, label encoding and statistics."""
    x_new = features(x, fitted)
    y_new = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    if len(y_new) != len(x_new):
        raise TrainrunError(f"the data source returned {len(x_new)} samples but {len(y_new)} targets",
                            key="data._target_")
    y_new = targets(y_new, fitted)
    train_idx, val_idx, test_idx = split_indices(len(x_new), val_fraction, test_fraction, seed)

    def arrays(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(x_new[idx]), np.ascontiguousarray(y_new[idx])

    def pick(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return arrays(idx) if len(idx) else None

    splits = Splits(train=arrays(train_idx), val=pick(val_idx), test=pick(test_idx))  # train: never empty
    info = dataclasses.replace(
        fitted, sizes={"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
        rows={"train": train_idx, "val": val_idx, "test": test_idx})
    return splits, info


def preprocessing(info: DataInfo) -> dict[str, Any]:
    """The transform as JSON-able values (``export``'s ``preprocessing.json``)."""
    return {
        "input_shape": ["batch", *info.in_shape],
        "in_features": info.in_features,
        "features": info.features,
        "standardize": None if info.x_mean is None else {
            "mean": info.x_mean.tolist(), "std": info.x_std.tolist() if info.x_std is not None else None,
            "formula": "x = (x - mean) / std, per feature of the flattened sample, then reshaped to input_shape",
        },
        "columns": info.features,
        "encoding": None if info.encoding is None else {
            **info.encoding.to_dict(),
            "rule": "each column in this order: a number as it is (an empty cell gets its fill value; with "
            "missing=refuse there is none), a category as one 0/1 input per category listed (an empty or unseen "
            "category: all zeros); then the standardize step over the resulting inputs",
            "inputs": info.encoding.names,
        },
        "id": info.id_name,
        "task": info.task,
        "classes": None if info.classes is None else [_plain(c) for c in info.classes],
        "target_scale": None if info.y_mean is None else {
            "mean": info.y_mean, "std": info.y_std,
            "formula": "value = output * std + mean (the model predicts standardized targets)",
        },
    }
