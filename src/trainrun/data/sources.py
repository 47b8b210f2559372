"""Data sources: the callables a ``data._target_`` names, each returning ``(X, y)`` arrays.

Built-in ones: the data sets that ship inside scikit-learn (:func:`load_sklearn`), generated
data (:func:`make_synthetic`), CSV and NPZ files (:func:`read_csv`, :func:`read_npz`). A user's
source may return arrays, tensors, or a ``torch.utils.data.Dataset`` (see ``prepare.py``).
"""

from __future__ import annotations

import contextlib
import csv
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from trainrun.errors import TrainrunError
from trainrun.files import atomic_write

SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where arrays trainrun derived once are kept: ``$TRAINRUN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/trainrun``, else ``~/.cache/trainrun``."""
    if os.environ.get("TRAINRUN_CACHE_DIR"):
        return Path(os.environ["TRAINRUN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainrun"


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A data set that ships inside scikit-learn (no download), through its public loaders.

    Importing ``sklearn.datasets`` costs 0.7-1.4 s, more than the training of most of these
    sets, so the arrays are cached once per scikit-learn version as an ``.npz`` (read with
    ``allow_pickle=False``) in :func:`cache_dir`; a cache that cannot be written or read is
    skipped, never an error.
    """
    if name not in SKLEARN_SETS:
        raise TrainrunError(
            f"unknown bundled data set {name!r}",
            key="data.name",
            fix=f"use one of {', '.join(SKLEARN_SETS)}",
        )
    try:
        sklearn_version = version("scikit-learn")
    except PackageNotFoundError:
        raise TrainrunError(
            f"data={name} ships inside scikit-learn, which is not installed",
            key="data", fix="pip install scikit-learn",
        ) from None
    cached = cache_dir() / "sklearn" / f"{name}-{sklearn_version}-v{CACHE_FORMAT}.npz"
    try:
        with np.load(cached, allow_pickle=False) as archive:
            return archive["X"], archive["y"]
    except (OSError, KeyError, ValueError):
        pass  # not cached yet (or unreadable): load it from scikit-learn
    x, y = _sklearn_arrays(name)
    with contextlib.suppress(OSError):  # a read-only home: no cache, the same arrays
        atomic_write(cached, lambda f: np.savez(f, X=x, y=y, allow_pickle=False))
    return x, y


def _sklearn_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets  # 0.7-1.4 s; only when the cache has no copy

    # diabetes unscaled: trainrun standardizes with train-split statistics itself.
    bunch = getattr(datasets, f"load_{name}")(**({"scaled": False} if name == "diabetes" else {}))
    x = bunch.data.astype(np.float32)
    if name == "digits":  # 8x8 images: model=cnn takes them as they are, an MLP flattens them
        x = x.reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.float32 if name == "diabetes" else np.int64)
    return x, y


def make_synthetic(
    task: str = "multiclass",
    n_samples: int = 1000,
    n_features: int = 20,
    num_classes: int = 3,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible generated data: make_regression or make_classification from scikit-learn."""
    from sklearn import datasets  # ~0.7 s; only for data=synthetic

    if task == "regression":
        x, y = datasets.make_regression(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=max(1, n_features // 2),
            noise=noise * 10,
            random_state=seed,
        )
        return x.astype(np.float32), y.astype(np.float32)
    classes = 2 if task == "binary" else num_classes
    x, y = datasets.make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_redundant=min(2, n_features // 4),
        n_classes=classes,
        n_clusters_per_class=1,
        flip_y=noise,
        random_state=seed,
    )
    return x.astype(np.float32), y


def read_csv(
    path: str, target: str, features: list[str] | None = None, require_target: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV file with a header row. Feature columns must be numeric; the target may be text
    (class labels) or numbers. ``require_target=False`` (``predict``): a file without the target
    column gives ``y = None``."""
    file = _existing_file(path, "data.path")
    try:
        with file.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise TrainrunError(
            f"cannot read CSV file {str(file)!r}: {err}", key="data.path"
        ) from None
    if len(rows) < 2:
        raise TrainrunError(
            f"CSV file {str(file)!r} has no data rows (a header row, then one row per sample)",
            key="data.path",
        )
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if target not in header and not require_target:
        target = ""  # no target column: features only
    elif target not in header:
        raise TrainrunError(
            f"CSV file {str(file)!r} has no column {target!r}; its columns are {header}",
            key="data.target",
            fix="set data.target to one of the columns above",
        )
    names = feature_names(header, target, features)
    for name in names:
        if name not in header:
            raise TrainrunError(
                f"CSV file {str(file)!r} has no feature column {name!r}; its columns are {header}",
                key="data.features",
            )
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise TrainrunError(
                f"CSV file {str(file)!r}, line {n}: {len(row)} fields, the header has {len(header)}",
                key="data.path",
            )
    columns = {h: [row[i].strip() for row in body] for i, h in enumerate(header)}
    x = np.empty((len(body), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        try:
            x[:, j] = np.asarray(columns[name], dtype=np.float64)
        except ValueError:
            bad = next(v for v in columns[name] if not _is_number(v))
            raise TrainrunError(
                f"CSV column {name!r} is not numeric (value {bad!r})",
                key="data.features",
                fix=f"encode {name!r} as numbers, or leave it out with data.features=[...]",
            ) from None
    if not target:
        return x, None
    y_text = columns[target]
    if all(v.lstrip("-").isdigit() for v in y_text):
        y: np.ndarray = np.asarray(y_text, dtype=np.int64)  # whole numbers: class labels
    elif all(_is_number(v) for v in y_text):
        y = np.asarray(y_text, dtype=np.float64)
    else:
        y = np.asarray(y_text)
    return x, y


def feature_names(header: list[str], target: str, features: list[str] | None) -> list[str]:
    """The feature columns of a CSV file: ``features`` as given, else every column but the target."""
    return list(features) if features else [h for h in header if h != target]


def csv_feature_names(path: str, target: str, features: list[str] | None = None) -> list[str] | None:
    """The feature column names a ``read_csv`` of this file uses, from its header line alone
    (kept in the checkpoint, so ``predict`` picks the same columns by name in a new file)."""
    try:
        with Path(path).expanduser().open(newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError):
        return None
    return None if header is None else feature_names([h.strip() for h in header], target, features)


def read_npz(path: str, x_key: str = "X", y_key: str = "y",
             require_target: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """A NumPy ``.npz`` archive holding the features and the targets (``require_target=False``,
    for ``predict``: an archive without the targets array gives ``y = None``)."""
    file = _existing_file(path, "data.path")
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as err:
        raise TrainrunError(
            f"cannot read NPZ file {str(file)!r}: {err}", key="data.path"
        ) from None
    with archive:
        for key, name in (("data.x_key", x_key), ("data.y_key", y_key)):
            if name == y_key and name not in archive.files and not require_target:
                return archive[x_key], None  # predict: features only
            if name not in archive.files:
                raise TrainrunError(
                    f"NPZ file {str(file)!r} has no array {name!r}; it holds {archive.files}",
                    key=key,
                )
        return archive[x_key], archive[y_key]


def _existing_file(path: str, key: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise TrainrunError(
            f"file not found: {str(file)!r} (looked in {Path.cwd()})",
            key=key,
            fix="give an absolute path, or a path relative to the folder you run train from",
        )
    return file


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


