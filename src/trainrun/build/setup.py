"""Config -> :class:`Setup`: the bound objects the loop uses, and its typed settings.

Order matters and follows the data: the data first (it knows its task and shapes), then the
loss plan (the head and the target rule for that task), then the model with the data's sizes,
placed on its device, and only then the optimizer over the placed model's parameters, the
scheduler over the optimizer, and the gradient scaler. The loop's settings are read from the
config here, once (:func:`trainrun.build.settings.loop_settings`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from trainrun.build.devices import autocast_factory, check_compiler, resolve_device
from trainrun.build.instantiate import build_from_config, check_steps_alone, takes_flat_samples
from trainrun.build.losses import LossPlan, plan_loss
from trainrun.build.metrics import MetricSet, build_metrics
from trainrun.build.parallel import materialize, wrap
from trainrun.build.settings import LoopSettings, loop_settings, resolve_mode
from trainrun.config.choices import text
from trainrun.data import fitted as fitted_data
from trainrun.data.batches import LoaderBatches, TensorBatches
from trainrun.data.csv_file import csv_feature_names
from trainrun.data.datasets import prepare_dataset
from trainrun.data.prepare import DataInfo, prepare_arrays
from trainrun.data.tables import parquet_feature_names
from trainrun.errors import TRAINING_ERROR, TrainrunError, phase

# Data keys trainrun reads itself; the rest of the data node goes to the source.
DATA_KEYS = ("batch_size", "val_fraction", "test_fraction", "standardize", "shuffle",
             "image_shape", "num_workers")
Batches = TensorBatches | LoaderBatches
# Table sources whose columns are picked by name: the names are kept for predict on a new file.
TABLE_SOURCES = {"trainrun.data.sources.read_csv": csv_feature_names,
                 "trainrun.data.sources.read_parquet": parquet_feature_names}


@dataclass
class Setup:
    """Everything one training run needs, bound together."""

    cfg: DictConfig  # kept for the checkpoint (its config) and explain; the loop reads settings
    settings: LoopSettings
    device: torch.device
    info: DataInfo
    loss: LossPlan
    raw_model: nn.Module  # the model with its head: what checkpoints save and preflight checks
    model: nn.Module  # what the loop calls: raw_model, maybe DDP-wrapped, maybe compiled
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    train_batches: Batches
    val_batches: Batches | None
    test_batches: Batches | None
    rank: int = 0
    world_size: int = 1
    metrics: MetricSet | None = None  # extra torchmetrics, only when cfg.metrics asks for them
    strategy: str = "ddp"  # trainer.strategy, with several processes
    batch_size: int = 0  # per process: data.batch_size, or a resumed run's global batch // processes

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.raw_model.parameters())


def logged_names(info: DataInfo, loss: LossPlan, metrics: MetricSet | None, has_val: bool) -> list[str]:
    """The values each epoch row holds (what a monitor or the objective can name)."""
    names = ["train_loss"]
    if has_val:
        names += ["val_loss", f"val_{loss.metric}"]
        names += [f"val_{name}" for name in (metrics.names if metrics else [])]
    return names


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def load_data(cfg: DictConfig, fitted: DataInfo | None = None) -> tuple[Any, DataInfo]:
    """Call the data source and split/standardize what it returns. ``fitted``: the training's
    statistics and label encoding (a checkpoint's), used instead of this data's own
    (``evaluate data=...``)."""
    source = build_from_config(cfg.data, "data", what="reading the data", consumed=DATA_KEYS)
    common = dict(task=text(cfg.data.task), val_fraction=cfg.data.val_fraction,
                  test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
    fix = ("a data source returns (X, y): X with one row per sample, y with one target per row "
           "(numbers), or a torch.utils.data.Dataset of (x, y) pairs")
    if isinstance(source, torch.utils.data.Dataset):
        with phase(f"reading the Dataset that data._target_={cfg.data._target_} returned", "data._target_",
                   section=cfg.data, fix=fix):
            splits, info = prepare_dataset(source, **common)
        if fitted is not None:  # the model's task and classes; this data's sample shape and sizes
            info = dataclasses.replace(fitted, in_shape=info.in_shape, sizes=info.sizes, rows={})
        return splits, info
    if not (isinstance(source, tuple | list) and len(source) == 2):
        shown = f"a {type(source).__name__}" + (f" of {len(source)} items" if isinstance(source, tuple | list) else "")
        raise TrainrunError(
            f"the data source data._target_={cfg.data._target_} returned {shown}; it must return "
            "(X, y) arrays or a torch.utils.data.Dataset",
            key="data._target_", fix=fix,
        )
    with phase(f"preparing the data that data._target_={cfg.data._target_} returned", "data._target_",
               section=cfg.data, fix=fix):
        if fitted is not None:
            return fitted_data.apply_arrays(*source, fitted, val_fraction=cfg.data.val_fraction,
                                            test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
        splits, info = prepare_arrays(
            *source, **common, standardize=cfg.data.standardize,
            image_shape=list(cfg.data.image_shape) if cfg.data.image_shape else None,
        )
    names_of = TABLE_SOURCES.get(str(cfg.data._target_))
    if names_of is not None:  # the columns by name, for predict on a new file
        options = {"delimiter": cfg.data.delimiter} if "delimiter" in cfg.data else {}
        info.features = names_of(cfg.data.path, cfg.data.target, cfg.data.get("features"), **options)
    return splits, info


def build_model(cfg: DictConfig, info: DataInfo) -> tuple[nn.Module, LossPlan, DataInfo, bool]:
    """The loss plan and the model with its head, sized by ``info`` (on the CPU). Returns the
    model, the plan, ``info`` with the sample shape the model takes, and whether samples are
    flattened for it (``build``; ``predict`` and ``export`` rebuild a trained model with this)."""
    # A model that asks for in_features (not in_shape) gets flat samples, [N, 64] for digits:
    # every batch, so preflight, explain and evaluate see what the model sees.
    flat = len(info.in_shape) > 1 and takes_flat_samples(cfg.model, "model")
    if flat:
        info = dataclasses.replace(info, in_shape=(info.in_features,))
    loss = plan_loss(cfg.loss, info)
    sizes = dict(in_features=info.in_features, in_shape=info.in_shape, out_features=loss.out_features)
    body = build_from_config(cfg.model, "model", what="building the model", expect=nn.Module,
                             expect_text="a torch.nn.Module", **sizes)
    if not any(p.requires_grad for p in body.parameters()):
        raise TrainrunError(
            f"model._target_={cfg.model._target_} has no trainable parameters: there is nothing "
            "for the optimizer to train",
            key="model._target_",
            fix="give the model layers with parameters (nn.Linear, nn.Conv2d, ...) created in "
            "__init__, or unfreeze them (requires_grad=True)",
        )
    raw_model = nn.Sequential(OrderedDict(body=body, head=loss.head)) if loss.head else body
    return raw_model, loss, info, flat


def owners(setup: Setup) -> dict[str, list[object]]:
    """Which key each built object belongs to, for naming the one whose code raised an error
    (:func:`trainrun.errors.owner_key`): the model's layers, the loss, the optimizer, the
    scheduler, and the batches with the user's Dataset behind them."""
    data: list[object] = []
    for batches in (setup.train_batches, setup.val_batches, setup.test_batches):
        if batches is None:
            continue
        data.append(batches)
        dataset = getattr(getattr(batches, "loader", None), "dataset", None)
        while dataset is not None:  # a random_split Subset, then the user's Dataset
            data.append(dataset)
            dataset = getattr(dataset, "dataset", None)
    return {
        "model._target_": [setup.model, *setup.raw_model.modules()],
        "loss._target_": [setup.criterion],
        "optim._target_": [setup.optimizer],
        "scheduler._target_": [setup.scheduler] if setup.scheduler is not None else [],
        "data._target_": data,
    }


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


def batches_for(split: Any, cfg: DictConfig, loss: LossPlan, device: torch.device, *, train: bool,
                rank: int, world_size: int, flat: bool = False,
                check_targets: Callable[[torch.Tensor], None] | None = None,
                batch_size: int | None = None) -> Batches | None:
    """The batches of one split (``batch_size`` per process); ``flat``: each sample as one vector."""
    if split is None:
        return None
    batch_size = batch_size or int(cfg.data.batch_size)
    shuffle = train and cfg.data.shuffle
    limit = cfg.trainer.limit_train_batches if train else cfg.trainer.limit_val_batches
    if isinstance(split, tuple):
        x = torch.as_tensor(split[0], dtype=torch.float32).to(device)
        if flat:
            x = x.reshape(len(x), -1)
        y = loss.prepare_targets(torch.as_tensor(split[1])).to(device)
        return TensorBatches(x, y, batch_size, shuffle=shuffle, seed=cfg.trainer.seed,
                             rank=rank, world_size=world_size, limit=limit)
    return LoaderBatches(
        split, batch_size, shuffle=shuffle, seed=cfg.trainer.seed, device=device,
        prepare_targets=loss.prepare_targets, num_workers=cfg.data.num_workers,
        rank=rank, world_size=world_size, limit=limit, flat=flat, check_targets=check_targets,
    )


def build(cfg: DictConfig, *, rank: int = 0, world_size: int = 1, training: bool = True,
          fitted: DataInfo | None = None, batch_size: int | None = None) -> Setup:
    """Build every object of the run from the composed config. ``training=False`` (``evaluate``)
    skips checking the watched names, which only matter while training; ``fitted`` scales and
    encodes the data with a trained run's statistics (``evaluate data=...``); ``batch_size``:
    per process, instead of ``data.batch_size`` (a resume on another number of processes)."""
    trainer = cfg.trainer
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    device = resolve_device(text(cfg.device.type), rank)
    autocast = autocast_factory(str(trainer.precision), device)
    seed_everything(trainer.seed, trainer.deterministic)

    splits, info = load_data(cfg, fitted)
    strategy = text(trainer.strategy) if world_size > 1 else "ddp"
    meta = strategy == "fsdp" and text(trainer.fsdp.init) == "meta"  # no memory until sharded
    with torch.device("meta") if meta else contextlib.nullcontext():
        raw_model, loss, info, flat = build_model(cfg, info)
    raw_model.to("meta" if meta else device)  # meta: no memory until sharded
    # DDP: gradients averaged across ranks in backward; FSDP: raw_model sharded in place
    with phase(f"spreading the model over {world_size} processes (trainer.strategy={strategy})",
               "trainer.strategy", fix="trainer.strategy=ddp keeps a whole model on each process"):
        model: nn.Module = wrap(raw_model, strategy, device, world_size, list(trainer.fsdp.shard),
                                str(trainer.precision))
        if meta:
            materialize(raw_model, device)
    if trainer.compile:
        check_compiler(device)
        model = torch.compile(model)

    optimizer = build_from_config(cfg.optim, "optim", what="building the optimizer", expect=torch.optim.Optimizer,
                                  expect_text="a torch.optim.Optimizer", params=raw_model.parameters())
    check_steps_alone(optimizer, cfg.optim._target_)
    batch_size = batch_size or int(cfg.data.batch_size)
    where: dict[str, Any] = dict(rank=rank, world_size=world_size, flat=flat, check_targets=label_guard(loss, info),
                 batch_size=batch_size)
    with phase("preparing the batches", "data._target_", section=cfg.data):
        train_batches = batches_for(splits.train, cfg, loss, device, train=True, **where)
        val_batches = batches_for(splits.val, cfg, loss, device, train=False, **where)
        test_batches = batches_for(splits.test, cfg, loss, device, train=False, **where)
    assert train_batches is not None

    scheduler = None
    if cfg.scheduler._target_:
        steps = trainer.epochs * math.ceil(len(train_batches) / trainer.accumulate_grad_batches)
        extra: dict[str, Any] = {"total_steps": max(1, steps)} if cfg.scheduler.get("total_steps", 0) is None else {}
        if "mode" in cfg.scheduler:  # plateau: which way the monitor improves (auto: from its name)
            monitor, mode = cfg.scheduler.get("monitor"), text(cfg.scheduler.mode)
            extra["mode"] = resolve_mode("scheduler.mode", str(monitor), mode) if monitor else "min"
        scheduler = build_from_config(
            cfg.scheduler, "scheduler", what="building the scheduler", expect=LRScheduler,
            expect_text="a learning-rate scheduler (torch.optim.lr_scheduler.LRScheduler)",
            consumed=("interval", "monitor", *extra), optimizer=optimizer, **extra,
        )
    scaler = torch.amp.GradScaler(device.type, enabled=str(trainer.precision) == "fp16")
    with phase("building the metrics", "metrics"):
        metrics = build_metrics(cfg.get("metrics") or [], loss, info, device)
    logged = logged_names(info, loss, metrics, val_batches is not None)
    return Setup(
        cfg=cfg, settings=loop_settings(cfg, logged if training else None, scheduler),
        device=device, info=info,
        loss=loss, raw_model=raw_model, model=model, criterion=loss.criterion.to(device),
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, autocast=autocast,
        train_batches=train_batches, val_batches=val_batches, test_batches=test_batches,
        rank=rank, world_size=world_size, metrics=metrics, strategy=strategy, batch_size=batch_size,
    )
