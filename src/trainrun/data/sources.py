"""Data sources: the callables a ``data._target_`` names, each returning ``(X, y)`` arrays.

Built-in ones: the data sets that ship inside scikit-learn (:func:`load_sklearn`), generated
data (:func:`make_synthetic`), NPZ files (:func:`read_npz`), and tabular files (``read_csv``,
``read_parquet``, from ``csv_file.py`` and ``tables.py``; config targets name them here). A user's
source may return arrays, tensors, or a ``torch.utils.data.Dataset`` (see ``prepare.py``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from trainrun.data.csv_file import read_csv
from trainrun.data.identity import cache_dir, data_files
from trainrun.data.parquet_file import read_parquet
from trainrun.data.rows import MemmapRows
from trainrun.data.tables import existing_file
from trainrun.errors import TrainrunError
from trainrun.files import atomic_write

__all__ = ["cache_dir", "load_sklearn", "make_synthetic", "read_csv", "read_npy", "read_npz", "read_parquet"]

SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
CACHE_FORMAT = 1


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


def read_npy(path: str, target_path: str | None = None, require_target: bool = True) -> MemmapRows:
    """Memory-mapped ``.npy`` arrays (``data=npy``): ``path`` the features, ``target_path`` the
    targets; each a file, a folder of shards or a glob (shards paired by name, else by the
    numbers in their names: :func:`_paired`). Nothing is read into memory here: the rows stay on
    disk and are read a batch at a time. Without ``target_path`` (``predict``) there are no targets."""
    x_files = _npy_files(path, "data.path")
    if not target_path and require_target:
        raise TrainrunError("data=npy needs the targets too: data.target_path is not set", key="data.target_path",
                            fix="data.target_path=y.npy (one target per row of data.path)")
    y_files = _paired(x_files, _npy_files(target_path, "data.target_path")) if target_path else None
    return MemmapRows(x_files, y_files)


def _shard_numbers(file: Path) -> tuple[int, ...]:
    return tuple(int(digits) for digits in re.findall(r"\d+", file.stem))


def _varying_part(x_files: list[Path], y_files: list[Path]) -> Callable[[Path], str]:
    """A shard's name without what all names of its side share at the start and the end
    (``a_X.npy`` -> ``a``, ``a_y.npy`` -> ``a``)."""
    def shared(names: list[str]) -> int:  # how many first characters all names have in common
        n = 0
        while all(len(name) > n for name in names) and len({name[n] for name in names}) == 1:
            n += 1
        return n

    def trimmed(files: list[Path]) -> dict[Path, str]:
        names = [f.name for f in files]
        head = shared(names)
        tail = shared([n[head:][::-1] for n in names])
        return {f: n[head:len(n) - tail] for f, n in zip(files, names, strict=True)}

    parts = {**trimmed(x_files), **trimmed(y_files)}
    return lambda f: parts[f]


def _paired(x_files: list[Path], y_files: list[Path]) -> list[Path]:
    """The target shard of each feature shard, in the feature shards' order: the one of the same
    name (``X/part1.npy``, ``Y/part1.npy``), else the same name once what each side's names share
    is left out (``a_X.npy``, ``a_y.npy``), else the same numbers in its name (``x_01.npy``,
    ``y_1.npy``). Sorted position alone pairs ``part10`` with ``second``, or
    ``x_10`` with ``y_2``: each rows' labels from another shard, trained on without a word."""
    if len(x_files) != len(y_files) or len(x_files) == 1:
        return y_files  # one each; or another count, which MemmapRows refuses naming both
    for key in (lambda f: f.name, _varying_part(x_files, y_files), _shard_numbers):
        wanted = [key(f) for f in x_files]
        by_key: dict[object, list[Path]] = {}
        for f in y_files:
            by_key.setdefault(key(f), []).append(f)
        if len(set(wanted)) == len(wanted) and all(len(by_key.get(k, ())) == 1 for k in wanted):
            return [by_key[k][0] for k in wanted]
    lonely = next((f for f in x_files if sum(_shard_numbers(y) == _shard_numbers(f) for y in y_files) != 1),
                  x_files[0])
    raise TrainrunError(
        f"data.path and data.target_path name {len(x_files)} shards each, but their names do not pair them: "
        f"the feature shard {lonely.name!r} has no one target shard of the same name or with the same numbers "
        f"in its name (the target shards: {', '.join(f.name for f in y_files[:4])}"
        f"{', ...' if len(y_files) > 4 else ''})",
        key="data.target_path",
        fix="name each target shard like its feature shard (X/part1.npy with Y/part1.npy), or with the same "
        "number (x_01.npy with y_01.npy)")


def _npy_files(path: str, key: str) -> list[Path]:
    if not str(path).strip():
        raise TrainrunError(f"{key} is empty", key=key, fix=f"name the .npy file, e.g. {key}=X.npy")
    files, _ = data_files(path, key)
    files = [f for f in files if f.suffix.lower() == ".npy"]
    if not files or not all(f.is_file() for f in files):
        raise TrainrunError(f"{key}={path!r}: no .npy file there (looked in {Path.cwd()})", key=key,
                            fix="give a .npy file, a folder of .npy shards, or a pattern such as 'shards/X_*.npy'")
    return files


def read_npz(path: str, x_key: str = "X", y_key: str = "y",
             require_target: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """A NumPy ``.npz`` archive holding the features and the targets (read without pickle: an
    archive cannot run code). ``require_target=False`` (``predict``): an archive without the
    targets array gives ``y = None``."""
    file = existing_file(path, "data.path", (".npz",))
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as err:
        raise TrainrunError(
            f"cannot read NPZ file {str(file)!r}: {err}", key="data.path"
        ) from None
    if isinstance(archive, np.ndarray):  # np.load reads a .npy file as the one array it holds
        raise TrainrunError(
            f"{str(file)!r} is a .npy file holding one array (shape {list(archive.shape)}), not an .npz "
            "archive of features and targets",
            key="data.path",
            fix="save both into one archive: numpy.savez('data.npz', X=features, y=targets)",
        )
    with archive:
        arrays = []
        for key, name in (("data.x_key", x_key), ("data.y_key", y_key)):
            if name == y_key and name not in archive.files and not require_target:
                break  # predict: features only
            if name not in archive.files:
                raise TrainrunError(
                    f"NPZ file {str(file)!r} has no array {name!r}; it holds {archive.files}",
                    key=key,
                    fix=f"set {key} to the name the array was saved under (numpy.savez(path, X=..., y=...) "
                    "saves X and y)",
                )
            try:
                arrays.append(archive[name])
            except Exception as err:  # object arrays (pickles), a damaged member
                raise TrainrunError(f"cannot read array {name!r} of NPZ file {str(file)!r}: {err}",
                                    key="data.path", fix="save numeric arrays (numpy.savez)") from None
    x, y = arrays if len(arrays) == 2 else (arrays[0], None)
    if y is None:
        if x.ndim == 0:
            raise TrainrunError(f"NPZ file {str(file)!r}: {x_key} is a single number, not one row per sample",
                                key="data.x_key", fix=f"save {x_key} as [samples, features...]")
        return x, None
    shapes = f"{x_key} has shape {list(x.shape)} and {y_key} {list(y.shape)}"
    if x.ndim == 0 or y.ndim == 0:
        raise TrainrunError(
            f"NPZ file {str(file)!r}: {shapes}; {x_key if x.ndim == 0 else y_key} is a single number, "
            "not one row per sample",
            key=f"data.{'x_key' if x.ndim == 0 else 'y_key'}",
            fix=f"save {x_key} as [samples, features...] and {y_key} as [samples] (or [samples, k])",
        )
    if y.ndim > 2:
        raise TrainrunError(
            f"NPZ file {str(file)!r}: {shapes}; targets are one value per sample ([samples]) or k "
            "values per sample ([samples, k]), not more",
            key="data.y_key",
            fix=f"save {y_key} as [samples] (class labels, or one regression target) or [samples, k]",
        )
    if len(x) != len(y):
        raise TrainrunError(
            f"NPZ file {str(file)!r}: {shapes}: {len(x)} samples of features but {len(y)} targets",
            key="data.path", fix=f"save one target per row of {x_key}",
        )
    return x, y
