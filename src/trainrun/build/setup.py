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

from trainrun.build.class_weights import apply_class_weights, refuse_tensor_lists
from trainrun.build.data import DATA_KEYS, batches_for, label_guard, load_data
from trainrun.build.devices import autocast_factory, check_compiler, resolve_device
from trainrun.build.instantiate import build_from_config, check_steps_alone, takes_flat_samples
from trainrun.build.losses import LossPlan, plan_loss
from trainrun.build.metrics import MetricSet, build_metrics
from trainrun.build.parallel import materialize, wrap
from trainrun.build.settings import LoopSettings, check_watched, loop_settings, resolve_mode
from trainrun.build.speed import compile_plan, set_tf32, to_channels_last
from trainrun.build.step_graph import StepGraph, captured_step
from trainrun.config.choices import text
from trainrun.data.batches import LoaderBatches, TensorBatches
from trainrun.data.iterable import StreamBatches
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError, phase

__all__ = ["DATA_KEYS", "Batches", "Setup", "build", "build_model", "load_data"]

# The kinds of batches build makes (preflight looks inside the in-memory ones); what the loop
# asks of any of them is the protocol trainrun.data.batches.Batches.
Batches = TensorBatches | LoaderBatches | StreamBatches


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
    scheduler: LRScheduler | None
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
    step_graph: StepGraph | None = None  # trainer.compile=reduce-overhead on CUDA: the captured step

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


def build_model(cfg: DictConfig, info: DataInfo) -> tuple[nn.Module, LossPlan, DataInfo, bool]:
    """The loss plan and the model with its head, sized by ``info`` (on the CPU). Returns the
    model, the plan, ``info`` with the sample shape the model takes, and whether samples are
    flattened for it (``build``; ``predict`` and ``export`` rebuild a trained model with this)."""
    # A model that asks for in_features (not in_shape) gets flat samples, [N, 64] for digits:
    # every batch, so preflight, explain and evaluate see what the model sees.
    flat = len(info.in_shape) > 1 and takes_flat_samples(cfg.model, "model")
    if flat:
        info = dataclasses.replace(info, in_shape=(info.in_features,))
    loss = plan_loss(cfg.loss, info, task_guessed=text(cfg.data.task) == "auto")
    sizes: dict[str, Any] = dict(in_features=info.in_features, in_shape=info.in_shape, out_features=loss.out_features)
    body = build_from_config(cfg.model, "model", what="building the model", expect=nn.Module,
                             expect_text="a torch.nn.Module", consumed=("output",), **sizes)
    loss.fit(body, text(cfg.model.get("output", "auto")))  # model -> head -> loss (build/contracts.py)
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
    plan = compile_plan(trainer.compile, device)  # refused modes stop here, before the data loads
    set_tf32(trainer.tf32, device)
    seed_everything(trainer.seed, trainer.deterministic)

    splits, info = load_data(cfg, fitted)
    refuse_tensor_lists(cfg.loss)  # +loss.weight=[...]: torch's TypeError would name no key
    strategy = text(trainer.strategy) if world_size > 1 else "ddp"
    meta = strategy == "fsdp" and text(trainer.fsdp.init) == "meta"  # no memory until sharded
    with torch.device("meta") if meta else contextlib.nullcontext():
        raw_model, loss, info, flat = build_model(cfg, info)
    # loss.class_weights: checked against the classes; "balanced" from the training split's labels
    apply_class_weights(cfg.loss, loss, info, splits.train[1] if isinstance(splits.train, tuple) else None)
    raw_model.to("meta" if meta else device)  # meta: no memory until sharded
    to_channels_last(trainer.channels_last, device, str(trainer.precision), raw_model)  # NHWC convolutions
    # DDP: gradients averaged across ranks in backward; FSDP: raw_model sharded in place
    with phase(f"spreading the model over {world_size} processes (trainer.strategy={strategy})",
               "trainer.strategy", fix="trainer.strategy=ddp keeps a whole model on each process"):
        model: nn.Module = wrap(raw_model, strategy, device, world_size, list(trainer.fsdp.shard),
                                str(trainer.precision))
        if meta:
            materialize(raw_model, device)
    if plan.torch_mode is not None:
        check_compiler(device)
        # torch.compile's stub types the result as a plain callable: for a Module it is an OptimizedModule
        model = torch.compile(model) if plan.torch_mode == "default" else torch.compile(model, mode=plan.torch_mode)  # type: ignore[assignment]

    optimizer = build_from_config(cfg.optim, "optim", what="building the optimizer", expect=torch.optim.Optimizer,
                                  expect_text="a torch.optim.Optimizer", params=raw_model.parameters())
    check_steps_alone(optimizer, cfg.optim._target_)
    batch_size = batch_size or int(cfg.data.batch_size)
    guard = label_guard(loss, info)
    with phase("preparing the batches", "data._target_", section=cfg.data):
        train_batches, val_batches, test_batches = (
            batches_for(split, cfg, loss, device, train=split is splits.train, rank=rank, world_size=world_size,
                        flat=flat, check_targets=guard, streams=info.streams, batch_size=batch_size)
            for split in (splits.train, splits.val, splits.test))
    assert train_batches is not None

    with phase("building the metrics", "metrics"):
        metrics = build_metrics(cfg.get("metrics") or [], loss, info, device)
    logged = logged_names(info, loss, metrics, val_batches is not None)
    if training:  # a typo in a watched name is named before a mode is read from it (scheduler.mode)
        check_watched(cfg, logged, bool(cfg.scheduler._target_))
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
    settings = loop_settings(cfg, logged if training else None, scheduler)
    sharded = model is not raw_model or world_size > 1 or trainer.get("strategy") == "fsdp"
    step_graph = (captured_step(settings, raw_model, loss.criterion.to(device), optimizer, autocast,
                                batch_size, distributed=sharded, precision=str(trainer.precision))
                  if plan.captured else None)  # reduce-overhead on CUDA: the whole step as one CUDA graph
    return Setup(
        cfg=cfg, settings=settings,
        device=device, info=info,
        loss=loss, raw_model=raw_model, model=model, criterion=loss.criterion.to(device),
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, autocast=autocast,
        train_batches=train_batches, val_batches=val_batches, test_batches=test_batches,
        rank=rank, world_size=world_size, metrics=metrics, strategy=strategy, batch_size=batch_size,
        step_graph=step_graph,
    )
