"""Config -> the data's splits and batches: the source called, what it returned prepared (in
memory, rows on disk, a user Dataset or stream), its identity recorded, and each split's batches
(sliced tensors, a DataLoader, a stream's loader). ``setup.py`` calls it first: the data decides
the task and the shapes everything after it is built for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from trainrun.build.instantiate import build_from_config
from trainrun.build.losses import LossPlan
from trainrun.config.choices import text
from trainrun.data import fitted as fitted_data
from trainrun.data import guesses
from trainrun.data.batches import LoaderBatches, TensorBatches
from trainrun.data.csv_file import csv_feature_names
from trainrun.data.datasets import DatasetSplits, prepare_dataset, prepare_stream
from trainrun.data.identity import identify
from trainrun.data.iterable import StreamBatches
from trainrun.data.loader import loader_options
from trainrun.data.parquet_file import parquet_feature_names
from trainrun.data.prepare import DataInfo, Splits, prepare_arrays
from trainrun.data.rows import MemmapRows
from trainrun.data.sources import cache_dir
from trainrun.data.streamed import prepare_rows
from trainrun.errors import TRAINING_ERROR, TrainrunError, phase

# Data keys trainrun reads itself; the rest of the data node goes to the source.
DATA_KEYS = ("batch_size", "val_fraction", "test_fraction", "standardize", "shuffle",
             "image_shape", "num_workers", "persistent_workers", "prefetch_factor", "pin_memory",
             "missing", "fill_value")
# Table sources whose columns are picked by name: the names are kept for predict on a new file.
TABLE_SOURCES = {"trainrun.data.sources.read_csv": csv_feature_names,
                 "trainrun.data.sources.read_parquet": parquet_feature_names}


Batches = TensorBatches | LoaderBatches | StreamBatches


def load_data(cfg: DictConfig, fitted: DataInfo | None = None) -> tuple[Any, DataInfo]:
    """Call the data source and split/standardize what it returns. ``fitted``: the training's
    statistics and label encoding (a checkpoint's), used instead of this data's own
    (``evaluate data=...``). The data's identity (``data/identity.py``) is recorded on the info."""
    source = build_from_config(cfg.data, "data", what="reading the data", consumed=DATA_KEYS)
    splits, info = _prepared(cfg, source, fitted)
    plain = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    options = {str(k): v for k, v in (plain if isinstance(plain, dict) else {}).items()
               if k not in DATA_KEYS and k != "_target_"}
    with phase("fingerprinting the data (data/identity.py)", "data.path" if "path" in options else "data._target_"):
        info.identity = identify(str(cfg.data._target_), options, source, columns=info.features,
                                 rows=sum(info.sizes.values()) or None, split_seed=int(cfg.data.seed),
                                 cache=cache_dir())
    return splits, info


def _prepared(cfg: DictConfig, source: Any, fitted: DataInfo | None) -> tuple[Any, DataInfo]:
    common = dict(task=text(cfg.data.task), val_fraction=cfg.data.val_fraction,
                  test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
    fix = ("a data source returns (X, y): X with one row per sample, y with one target per row "
           "(numbers), or a torch.utils.data.Dataset of (x, y) pairs")
    splits: Splits | DatasetSplits
    if isinstance(source, torch.utils.data.IterableDataset):  # a stream: the training split, as it comes
        with phase(f"reading the stream that data._target_={cfg.data._target_} returned", "data._target_",
                   section=cfg.data, fix=fix):
            splits, info = prepare_stream(source, **common)
            guesses.check_features(None, key="data._target_", sample=info.in_shape)
        if fitted is not None:
            info = dataclasses.replace(fitted, in_shape=info.in_shape, sizes=info.sizes, rows={})
        return splits, info
    if isinstance(source, torch.utils.data.Dataset):
        with phase(f"reading the Dataset that data._target_={cfg.data._target_} returned", "data._target_",
                   section=cfg.data, fix=fix):
            splits, info = prepare_dataset(source, **common)
            guesses.check_features(None, key="data._target_", sample=info.in_shape)
        if fitted is not None:  # the model's task and classes; this data's sample shape and sizes
            info = dataclasses.replace(fitted, in_shape=info.in_shape, sizes=info.sizes, rows={})
        return splits, info
    if isinstance(source, MemmapRows):  # rows that stay on disk: one streaming pass, batches read by row
        with phase(f"preparing the rows data._target_={cfg.data._target_} reads", "data._target_", section=cfg.data):
            return prepare_rows(source, **common, standardize=cfg.data.standardize, fitted=fitted,
                                image_shape=list(cfg.data.image_shape) if cfg.data.image_shape else None)
    if not (isinstance(source, tuple | list) and len(source) == 2):
        shown = f"a {type(source).__name__}" + (f" of {len(source)} items" if isinstance(source, tuple | list) else "")
        raise TrainrunError(
            f"the data source data._target_={cfg.data._target_} returned {shown}; it must return "
            "(X, y) arrays or a torch.utils.data.Dataset",
            key="data._target_", fix=fix,
        )
    names_of = TABLE_SOURCES.get(str(cfg.data._target_))
    options = {"delimiter": cfg.data.delimiter} if "delimiter" in cfg.data else {}
    if fitted is None:  # the key that chooses the features: data.features (tables), data.x_key (NPZ)
        guessed = names_of is not None and cfg.data.get("features") is None  # every column but the target
        guesses.check_arrays(*source, key="data.features" if names_of else "data.x_key" if "x_key" in cfg.data
                             else "data._target_", column_names=names_of(cfg.data.path, cfg.data.target, None,
                                                                         **options) if guessed and names_of else None)
    with phase(f"preparing the data that data._target_={cfg.data._target_} returned", "data._target_",
               section=cfg.data, fix=fix):
        if fitted is not None:
            return fitted_data.apply_arrays(source[0], source[1], fitted, val_fraction=cfg.data.val_fraction,
                                            test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
        splits, info = prepare_arrays(
            source[0], source[1], **common, standardize=cfg.data.standardize,
            image_shape=list(cfg.data.image_shape) if cfg.data.image_shape else None,
            missing=text(cfg.data.get("missing", "refuse")), fill_value=float(cfg.data.get("fill_value", 0.0)),
        )
    if names_of is not None and info.features is None:  # the columns by name, for predict on a new file
        info.features = names_of(cfg.data.path, cfg.data.target, cfg.data.get("features"), **options)
    return splits, info


def label_guard(loss: LossPlan, info: DataInfo) -> Callable[[torch.Tensor], None] | None:
    """For a user Dataset: a check of each batch's labels against the classes the run was built
    for (the Dataset was never read whole; its classes may have been guessed from a few samples).
    A label outside them would make cross-entropy fail deep in torch, or BCE train on a target
    of 2 without a word."""
    if info.task == "regression":
        return None
    high = loss.out_features - 1 if loss.targets == "index" else 1
    told = (f"the run was built for {info.guessed}" if info.guessed else
            f"the run was built for {loss.out_features if loss.targets == 'index' else 2} classes")

    def check(y: torch.Tensor) -> None:
        if not len(y):
            return
        lo, hi = torch.aminmax(y.detach().reshape(-1).to(torch.float64))
        if lo < 0 or hi > high:
            raise TrainrunError(
                f"a batch of the Dataset holds the label {(lo if lo < 0 else hi).item():g}, outside 0..{high}: "
                f"{told}",
                key="data._target_", exit_code=TRAINING_ERROR,
                fix="give the Dataset a num_classes (or classes) attribute, or set data.task; labels "
                "are class indices 0..C-1",
            )

    return check


def batches_for(split: tuple[np.ndarray, np.ndarray] | Dataset | None, cfg: DictConfig, loss: LossPlan,
                device: torch.device, *, train: bool, rank: int, world_size: int, flat: bool = False,
                check_targets: Callable[[torch.Tensor], None] | None = None,
                streams: tuple[str, ...] = (), batch_size: int | None = None) -> Batches | None:
    """The batches of one split, ``batch_size`` per process (default ``data.batch_size``; a
    resume on another number of processes keeps the global batch); ``flat``: each sample as
    one vector (see ``takes_flat_samples``)."""
    if split is None:
        return None
    batch_size = batch_size or int(cfg.data.batch_size)
    held_out = 0 if train else len(split[0]) if isinstance(split, tuple) else len(split)  # type: ignore[arg-type]
    if 0 < held_out < world_size:  # every process scores a share of validation and test
        raise TrainrunError(
            f"a held-out split has {held_out} sample(s), fewer than the {world_size} processes, each of which "
            "scores a share of it",
            key="data.val_fraction", fix="hold out more samples (data.val_fraction, data.test_fraction), or use "
            "fewer processes")
    shuffle = train and cfg.data.shuffle
    limit = cfg.trainer.limit_train_batches if train else cfg.trainer.limit_val_batches
    if isinstance(split, tuple):
        x = torch.as_tensor(split[0], dtype=torch.float32).to(device)
        if flat:
            x = x.reshape(len(x), -1)
        y = loss.prepare_targets(torch.as_tensor(split[1])).to(device)
        return TensorBatches(x, y, batch_size, shuffle=shuffle, seed=cfg.trainer.seed,
                             rank=rank, world_size=world_size, limit=limit, whole=not train)
    if isinstance(split, torch.utils.data.IterableDataset):
        options = loader_options(cfg.data, split)
        return StreamBatches(split, batch_size, device=device, prepare_targets=loss.prepare_targets,
                             rank=rank, world_size=world_size, limit=limit, flat=flat, check_targets=check_targets,
                             **{k: options[k] for k in ("num_workers", "pin_memory", "persistent_workers",
                                                        "prefetch_factor")})
    return LoaderBatches(
        split, batch_size, shuffle=shuffle, seed=cfg.trainer.seed, device=device,
        prepare_targets=loss.prepare_targets, rank=rank, world_size=world_size, limit=limit, flat=flat,
        check_targets=check_targets, whole=not train, **loader_options(cfg.data, split, streams),
    )


