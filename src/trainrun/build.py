"""Config -> :class:`Run`: the bound objects the loop uses.

Order matters and follows the data: the data first (it knows its task and shapes), then the
loss plan (the head and the target rule for that task), then the model with the data's sizes,
placed on its device, and only then the optimizer over the placed model's parameters, the
scheduler over the optimizer, and the gradient scaler.
"""

from __future__ import annotations

import contextlib
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

from trainrun import data as data_mod
from trainrun.errors import TrainrunError
from trainrun.instantiate import build_from_config
from trainrun.losses import LossPlan, plan_loss
from trainrun.metrics import build_metrics

# Data keys trainrun reads itself; the rest of the data node goes to the source.
DATA_KEYS = ("batch_size", "val_fraction", "test_fraction", "standardize", "shuffle",
             "image_shape", "num_workers")
PRECISIONS = ("32", "bf16", "fp16")


@dataclass
class Run:
    """Everything one training run needs, bound together."""

    cfg: DictConfig
    device: torch.device
    info: data_mod.DataInfo
    loss: LossPlan
    module: nn.Module  # the model with its head: what checkpoints save
    model: nn.Module  # what the loop calls: ``module``, maybe compiled, maybe DDP-wrapped
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    train_batches: Any
    val_batches: Any | None
    test_batches: Any | None
    rank: int = 0
    world_size: int = 1
    metrics: Any | None = None  # trainrun.metrics.MetricSet when cfg.metrics asks for extra ones

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def scheduler_interval(self) -> str:
        return _text(self.cfg.scheduler.interval) if self.scheduler is not None else "none"


def _text(value: Any) -> str:
    """An Enum member's value, or the value itself, as text."""
    return str(getattr(value, "value", value))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(kind: str, rank: int = 0) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent device is an error."""
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    available = ["cpu"] + (["cuda"] if has_cuda else []) + (["mps"] if has_mps else [])
    if kind == "auto":
        kind = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if kind not in available:
        why = (
            f"this torch ({torch.__version__}) was built without CUDA"
            if kind == "cuda" and torch.version.cuda is None
            else f"torch sees no {kind} device on this machine"
        )
        raise TrainrunError(
            f"device={kind} was asked for, but {why}; available here: {', '.join(available)}",
            key="device",
            fix=f"use device={available[-1]} or device=auto",
        )
    if kind == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device(kind)


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision not in PRECISIONS:
        raise TrainrunError(
            f"unknown precision {precision!r}",
            key="trainer.precision",
            fix=f"use one of {', '.join(PRECISIONS)}",
        )
    if precision == "32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise TrainrunError(
            f"trainer.precision=fp16 needs a CUDA device (the run is on {device.type})",
            key="trainer.precision",
            fix="use trainer.precision=bf16 on CPU, or device=cuda",
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def check_compiler(device: torch.device) -> None:
    """``torch.compile`` (inductor) generates C++ on CPU and needs a C++ compiler ($CXX or g++);
    on CUDA, Triton needs a C compiler. Say so before the first step instead of deep inside it."""
    import os
    import shutil

    wanted = os.environ.get("CXX", "g++") if device.type == "cpu" else os.environ.get("CC", "gcc")
    found = shutil.which(wanted) or (device.type == "cuda" and (shutil.which("cc") or shutil.which("clang")))
    if not found:
        kind = "C++" if device.type == "cpu" else "C"
        raise TrainrunError(
            f"trainer.compile=true needs a {kind} compiler on {device.type} (torch.compile generates "
            f"and builds native code); {wanted!r} was not found",
            key="trainer.compile",
            fix=f"install one (e.g. apt-get install {'g++' if kind == 'C++' else 'gcc'}), point "
            f"{'CXX' if kind == 'C++' else 'CC'} at it, or run with trainer.compile=false",
        )


def load_data(cfg: DictConfig) -> tuple[Any, data_mod.DataInfo]:
    """Call the data source and split/standardize what it returns."""
    source = build_from_config(cfg.data, "data", consumed=DATA_KEYS)
    common = dict(
        task=_text(cfg.data.task),
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.data.seed,
    )
    if isinstance(source, torch.utils.data.Dataset):
        return data_mod.prepare_dataset(source, **common)
    if not (isinstance(source, tuple | list) and len(source) == 2):
        raise TrainrunError(
            f"the data source {cfg.data._target_} returned {type(source).__name__}; "
            "it must return (X, y) arrays or a torch.utils.data.Dataset",
            key="data._target_",
        )
    return data_mod.prepare_arrays(
        *source,
        **common,
        standardize=cfg.data.standardize,
        image_shape=list(cfg.data.image_shape) if cfg.data.image_shape else None,
    )



def batches_for(
    split: Any, cfg: DictConfig, loss: LossPlan, device: torch.device, *, train: bool,
    rank: int, world_size: int,
) -> Any:
    if split is None:
        return None
    shuffle = train and cfg.data.shuffle
    limit = cfg.trainer.limit_train_batches if train else cfg.trainer.limit_val_batches
    if isinstance(split, tuple):
        x = torch.as_tensor(split[0], dtype=torch.float32).to(device)
        y = loss.prepare_targets(torch.as_tensor(split[1])).to(device)
        return data_mod.TensorBatches(
            x, y, cfg.data.batch_size, shuffle=shuffle, seed=cfg.trainer.seed,
            rank=rank, world_size=world_size, limit=limit,
        )
    return data_mod.LoaderBatches(
        split, cfg.data.batch_size, shuffle=shuffle, seed=cfg.trainer.seed, device=device,
        prepare_targets=loss.prepare_targets, num_workers=cfg.data.num_workers,
        rank=rank, world_size=world_size, limit=limit,
    )


def build(cfg: DictConfig, *, rank: int = 0, world_size: int = 1) -> Run:
    """Build every object of the run from the composed config."""
    trainer = cfg.trainer
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    device = resolve_device(_text(cfg.device.type), rank)
    autocast = autocast_factory(str(trainer.precision), device)
    seed_everything(trainer.seed, trainer.deterministic)

    splits, info = load_data(cfg)
    loss = plan_loss(cfg.loss, info)
    sizes = dict(in_features=info.in_features, in_shape=info.in_shape, out_features=loss.out_features)
    body = build_from_config(cfg.model, "model", **sizes)
    if not isinstance(body, nn.Module):
        raise TrainrunError(
            f"model._target_={cfg.model._target_} built a {type(body).__name__}, not a torch.nn.Module",
            key="model._target_",
        )
    module = nn.Sequential(OrderedDict(body=body, head=loss.head)) if loss.head else body
    module.to(device)

    model: nn.Module = module
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if trainer.compile:
        check_compiler(device)
        model = torch.compile(model)

    optimizer = build_from_config(cfg.optim, "optim", params=module.parameters())
    train_batches = batches_for(splits.train, cfg, loss, device, train=True, rank=rank, world_size=world_size)
    val_batches = batches_for(splits.val, cfg, loss, device, train=False, rank=rank, world_size=world_size)
    test_batches = batches_for(splits.test, cfg, loss, device, train=False, rank=rank, world_size=world_size)

    scheduler = None
    if cfg.scheduler._target_:
        steps = trainer.epochs * math.ceil(len(train_batches) / trainer.accumulate_grad_batches)
        extra = {"total_steps": max(1, steps)} if cfg.scheduler.get("total_steps", 0) is None else {}
        scheduler = build_from_config(
            cfg.scheduler, "scheduler", consumed=("interval", "monitor", "total_steps" if extra else "_"),
            optimizer=optimizer, **extra,
        )
    scaler = torch.amp.GradScaler(device.type, enabled=str(trainer.precision) == "fp16")
    return Run(
        cfg=cfg, device=device, info=info, loss=loss, module=module, model=model,
        criterion=loss.criterion.to(device), optimizer=optimizer, scheduler=scheduler,
        scaler=scaler, autocast=autocast, train_batches=train_batches, val_batches=val_batches,
        test_batches=test_batches, rank=rank, world_size=world_size,
        metrics=build_metrics(cfg.get("metrics") or [], loss, info, device),
    )
