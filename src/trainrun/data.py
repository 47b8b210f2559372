"""Data: turn a source into split, standardized arrays, then into fast batch iterators.

A *source* is the ``data._target_`` callable. Built-in ones (``load_sklearn``, ``make_synthetic``,
``read_csv``, ``read_npz``) return ``(X, y)`` arrays; a user source may return arrays (or
tensors) too, or a ``torch.utils.data.Dataset``. Arrays are split with a seeded permutation,
standardized with statistics of the train split only, placed on the device once, and served by
:class:`TensorBatches` as contiguous slices of one permuted copy per epoch: no per-sample
indexing, no collation. A Dataset is served by a ``DataLoader`` (:class:`LoaderBatches`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainrun.errors import TrainrunError

SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")

# --------------------------------------------------------------------------- sources


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A data set that ships inside scikit-learn (no download).

    The files are read straight from scikit-learn's package folder, which saves importing
    scikit-learn (about 0.7 s a run); ``sklearn.datasets`` is the fallback if they move.
    """
    if name not in SKLEARN_SETS:
        raise TrainrunError(
            f"unknown bundled data set {name!r}",
            key="data.name",
            fix=f"use one of {', '.join(SKLEARN_SETS)}",
        )
    try:
        return _read_sklearn_files(name)
    except OSError:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        x = bunch.data.astype(np.float32)
        return (x.reshape(-1, 1, 8, 8) if name == "digits" else x), bunch.target


def _read_sklearn_files(name: str) -> tuple[np.ndarray, np.ndarray]:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("scikit-learn is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if name == "digits":
        table = np.loadtxt(folder / "digits.csv.gz", delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 1, 8, 8), table[:, -1].astype(np.int64)
    if name == "diabetes":
        x = np.loadtxt(folder / "diabetes_data_raw.csv.gz", dtype=np.float32)
        return x, np.loadtxt(folder / "diabetes_target.csv.gz", dtype=np.float32)
    file = {"iris": "iris.csv", "wine": "wine_data.csv", "breast_cancer": "breast_cancer.csv"}[name]
    table = np.loadtxt(folder / file, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


def make_synthetic(
    task: str = "multiclass",
    n_samples: int = 1000,
    n_features: int = 20,
    num_classes: int = 3,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible generated data: make_regression or make_classification from scikit-learn."""
    from sklearn import datasets

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
    path: str, target: str, features: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A CSV file with a header row. Feature columns must be numeric; the target may be text
    (class labels) or numbers."""
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
    if target not in header:
        raise TrainrunError(
            f"CSV file {str(file)!r} has no column {target!r}; its columns are {header}",
            key="data.target",
            fix="set data.target to one of the columns above",
        )
    names = list(features) if features else [h for h in header if h != target]
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
    y_text = columns[target]
    if all(v.lstrip("-").isdigit() for v in y_text):
        y: np.ndarray = np.asarray(y_text, dtype=np.int64)  # whole numbers: class labels
    elif all(_is_number(v) for v in y_text):
        y = np.asarray(y_text, dtype=np.float64)
    else:
        y = np.asarray(y_text)
    return x, y


def read_npz(path: str, x_key: str = "X", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """A NumPy ``.npz`` archive holding the features and the targets."""
    file = _existing_file(path, "data.path")
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as err:
        raise TrainrunError(
            f"cannot read NPZ file {str(file)!r}: {err}", key="data.path"
        ) from None
    with archive:
        for key, name in (("data.x_key", x_key), ("data.y_key", y_key)):
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


# --------------------------------------------------------------------------- preparation


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
        )
    if x.dtype.kind not in "biuf":
        raise TrainrunError(f"features must be numbers, got dtype {x.dtype}", key="data")
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
            raise TrainrunError("the targets hold NaN or infinite values", key="data")
    else:
        classes, y = np.unique(y, return_inverse=True)
        num_classes = len(classes)
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


def prepare_dataset(
    dataset: Dataset, *, task: str, val_fraction: float, test_fraction: float, seed: int
) -> tuple[DatasetSplits, DataInfo]:
    """Split a user Dataset with a seeded generator and read its task and sizes."""
    n = len(dataset)  # type: ignore[arg-type]
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_val - n_test < 1:
        raise TrainrunError("the split fractions leave no training samples", key="data.val_fraction")
    train, val, test = torch.utils.data.random_split(
        dataset, [n - n_val - n_test, n_val, n_test], generator=torch.Generator().manual_seed(seed)
    )
    x0, _ = dataset[0]
    targets = np.asarray([np.asarray(dataset[i][1]) for i in range(n)])
    task = getattr(dataset, "task", None) or (infer_task(targets) if task == "auto" else task)
    num_classes = None
    if task != "regression":
        num_classes = int(getattr(dataset, "num_classes", 0) or int(targets.max()) + 1)
    info = DataInfo(
        task=task,
        in_shape=tuple(torch.as_tensor(x0).shape),
        num_classes=max(num_classes, 2) if num_classes else None,
        target_width=1 if targets.ndim == 1 else targets.shape[1],
        sizes={"train": len(train), "val": n_val, "test": n_test},
    )
    return DatasetSplits(train, val if n_val else None, test if n_test else None), info


# --------------------------------------------------------------------------- batching


class TensorBatches:
    """Batches of tensors already on the device.

    Each epoch draws one permutation (seeded by ``seed`` and the epoch, so a resumed run sees the
    same order without saving generator state), gathers the data once, and yields contiguous
    slices. Under DDP the global batch is ``batch_size * world_size`` and rank ``r`` takes its
    ``r``-th share of every global batch, so each sample is seen once per epoch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.shuffle, self.seed = shuffle, seed
        n, global_batch = len(x), batch_size * world_size
        self.bounds: list[tuple[int, int]] = []
        for start in range(0, n, global_batch):
            size = min(global_batch, n - start)
            if size < world_size:  # too few left for every rank: DDP needs a sample on each
                break
            lo = start + (size * rank) // world_size
            hi = start + (size * (rank + 1)) // world_size
            self.bounds.append((lo, hi))
        if _check_limit(limit):  # trainer.limit_*_batches: the first batches only
            del self.bounds[limit:]
        self.sizes = torch.tensor([hi - lo for lo, hi in self.bounds], dtype=torch.float32, device=x.device)
        self.num_samples = sum(hi - lo for lo, hi in self.bounds)

    def __len__(self) -> int:
        return len(self.bounds)

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.x), generator=generator)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch``, from step ``start`` on (mid-epoch resume)."""
        x, y = self.x, self.y
        if self.shuffle:
            perm = self.permutation(epoch).to(x.device)
            x, y = x[perm], y[perm]
        for lo, hi in self.bounds[start:]:
            yield x[lo:hi], y[lo:hi]


def _check_limit(limit: int | None) -> int | None:
    """``trainer.limit_train_batches`` / ``limit_val_batches``: null, or a count of batches."""
    if limit is not None and limit < 1:
        raise TrainrunError(
            f"a batch limit of {limit} leaves no batches",
            key="trainer.limit_train_batches",
            fix="use a positive number of batches, or null for all of them",
        )
    return limit


class LoaderBatches:
    """The DataLoader path for user Datasets: batches are collated, then moved and typed.

    Under DDP a ``DistributedSampler`` shards the data (it pads with repeated samples to make
    the shards equal, so an epoch may see a few samples twice).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        device: torch.device,
        prepare_targets: Callable[[torch.Tensor], torch.Tensor],
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
    ) -> None:
        from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

        self.seed = seed
        if world_size > 1:
            self.sampler: Any = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
            )
        elif shuffle:
            self.sampler = RandomSampler(dataset, generator=torch.Generator())
        else:
            self.sampler = SequentialSampler(dataset)
        # Each new loader iterator draws its worker seed from this generator, seeded per epoch,
        # not from torch's global stream (dropout's): a run resumed in the middle of an epoch
        # then leaves the global stream exactly where the checkpoint saved it.
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=self.generator,
        )
        self.device, self.prepare_targets = device, prepare_targets
        n = len(self.sampler)
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        if _check_limit(limit):  # trainer.limit_*_batches: the first batches only
            del sizes[limit:]
        self.num_samples = sum(sizes)
        self.sizes = torch.tensor(sizes, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        elif isinstance(getattr(self.sampler, "generator", None), torch.Generator):
            self.sampler.generator.manual_seed(self.seed * 1_000_003 + epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch + 500_009)
        for step, (x, y) in enumerate(self.loader):
            if step == len(self.sizes):
                break
            if step < start:
                continue
            x = torch.as_tensor(x).to(self.device, non_blocking=True).float()
            yield x, self.prepare_targets(torch.as_tensor(y).to(self.device, non_blocking=True))
