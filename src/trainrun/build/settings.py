"""The loop's settings, typed and read from the config once (``build`` calls
:func:`loop_settings`), so the loop and the stop decision never touch the config.

It is also where every name the config *watches* (``objective``, ``checkpoint.monitor``,
``trainer.early_stopping.monitor``, ``scheduler.monitor``) is checked against the names the run
will log: a typo there would otherwise keep a wrong best.pt or never stop early.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from omegaconf import DictConfig
from torch.optim.lr_scheduler import LRScheduler

from trainrun.config.choices import mode_of, text
from trainrun.errors import TrainrunError

# metrics=[...] names a run computes only when asked (trainrun.build.metrics).
EXTRA_METRICS = ("f1", "auroc", "precision", "recall", "mae", "mse", "r2")


@dataclass(frozen=True)
class EarlyStopping:
    patience: int
    min_delta: float
    monitor: str
    mode: str  # "min" | "max"


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    accumulate: int  # trainer.accumulate_grad_batches
    clip_norm: float | None  # trainer.grad_clip.max_norm
    clip_norm_type: float
    clip_value: float | None  # trainer.grad_clip.max_value
    skip_nonfinite: bool  # trainer.on_nonfinite == skip (else stop)
    scheduler_interval: str  # "epoch" | "step" | "none"
    scheduler_monitor: str | None  # ReduceLROnPlateau's value, stepped per epoch
    monitor: str  # checkpoint.monitor: decides best.pt
    mode: str  # checkpoint.mode: "min" | "max"
    save_checkpoints: bool  # checkpoint.enabled
    every_n_epochs: int
    every_n_steps: int | None
    val_every_n_steps: int | None  # trainer.val_every_n_steps: a validation row mid-epoch
    early_stopping: EarlyStopping | None
    detect_anomaly: bool


def resolve_mode(key: str, monitor: str, mode: str) -> str:
    """The direction of ``monitor`` at ``key`` (``checkpoint.mode``): from the name when ``auto``;
    an explicit one that contradicts a known name is refused, never obeyed (best.pt would keep
    the worst epoch)."""
    named = mode_of(monitor)
    if mode == "auto":
        if named is None:
            raise TrainrunError(
                f"{key}=auto cannot tell whether {monitor} is better higher or lower",
                key=key, fix=f"set {key}=min or {key}=max",
            )
        return named
    if named is not None and named != mode:
        raise TrainrunError(
            f"{key}={mode} contradicts {monitor}, which is better "
            f"{'higher' if named == 'max' else 'lower'}: every improvement would count as a setback"
            + (" (best.pt would keep the worst epoch)" if key == "checkpoint.mode" else ""),
            key=key, fix=f"leave {key} at auto (or set {key}={named})",
        )
    return mode


def loop_settings(cfg: DictConfig, logged: list[str] | None, scheduler: LRScheduler | None) -> LoopSettings:
    """Read the loop's settings from ``cfg``; ``logged`` are the names each epoch row will hold
    (None: not checked); ``scheduler`` the built scheduler, if any."""
    trainer, checkpoint = cfg.trainer, cfg.checkpoint
    stopping = trainer.early_stopping
    if logged is not None:  # a typo in a watched name says "not logged", before any mode is read
        check_watched(cfg, logged, scheduler is not None)
        if trainer.get("val_every_n_steps") and "val_loss" not in logged:
            raise TrainrunError(
                "trainer.val_every_n_steps validates inside epochs, but the run has no validation split "
                "(data.val_fraction=0)", key="trainer.val_every_n_steps",
                fix="leave trainer.val_every_n_steps=null, or keep a validation split (data.val_fraction=0.2)")
    early = None
    if stopping.patience is not None:
        early = EarlyStopping(int(stopping.patience), float(stopping.min_delta), str(stopping.monitor),
                              resolve_mode("trainer.early_stopping.mode", str(stopping.monitor),
                                           text(stopping.mode)))
    has_scheduler = scheduler is not None
    scheduler_monitor = cfg.scheduler.get("monitor") if has_scheduler else None
    settings = LoopSettings(
        epochs=int(trainer.epochs),
        accumulate=int(trainer.accumulate_grad_batches),
        clip_norm=trainer.grad_clip.max_norm,
        clip_norm_type=float(trainer.grad_clip.norm_type),
        clip_value=trainer.grad_clip.max_value,
        skip_nonfinite=text(trainer.on_nonfinite) == "skip",
        scheduler_interval=text(cfg.scheduler.interval) if has_scheduler else "none",
        scheduler_monitor=str(scheduler_monitor) if scheduler_monitor else None,
        monitor=str(checkpoint.monitor),
        mode=resolve_mode("checkpoint.mode", str(checkpoint.monitor), text(checkpoint.mode)),
        save_checkpoints=bool(checkpoint.enabled),
        every_n_epochs=int(checkpoint.every_n_epochs),
        every_n_steps=checkpoint.every_n_steps,
        val_every_n_steps=trainer.get("val_every_n_steps"),
        early_stopping=early,
        detect_anomaly=bool(trainer.detect_anomaly),
    )
    if scheduler is not None:
        check_scheduler_cadence(cfg, scheduler, settings)
    return settings


def unused_early_stopping(cfg: DictConfig) -> list[str]:
    """Early stopping's settings given while it is off (``patience=null``): said in the header,
    not refused (a sweep may turn it on and off with the rest kept)."""
    stopping = cfg.trainer.early_stopping
    if stopping.patience is not None:
        return []
    return [f"trainer.early_stopping.{key}={value}" for key, value, default in (
        ("monitor", str(stopping.monitor), str(cfg.objective)), ("mode", text(stopping.mode), "auto"),
        ("min_delta", float(stopping.min_delta), 0.0)) if value != default]


def check_scheduler_cadence(cfg: DictConfig, scheduler: LRScheduler, settings: LoopSettings) -> None:
    """A scheduler that steps on a value (ReduceLROnPlateau: ``step(metrics)``) needs
    ``scheduler.monitor`` and steps once per epoch; one that steps on its own takes no monitor
    (StepLR's ``step(epoch)`` would read the value as an epoch number)."""
    name = type(scheduler).__name__
    params = inspect.signature(scheduler.step).parameters
    takes_value = "metrics" in params
    needs_value = takes_value and params["metrics"].default is inspect.Parameter.empty
    if settings.scheduler_monitor and not takes_value:
        raise TrainrunError(
            f"scheduler.monitor={settings.scheduler_monitor} is set, but {name} steps on its own "
            "(its step() takes no value): the monitor would be read as an epoch number",
            key="scheduler.monitor", fix="set scheduler.monitor=null, or use scheduler=plateau",
        )
    if needs_value and not settings.scheduler_monitor:
        raise TrainrunError(
            f"{name} steps on a monitored value, but scheduler.monitor is null",
            key="scheduler.monitor", fix="set scheduler.monitor=val_loss (or another logged value)",
        )
    if needs_value and settings.scheduler_interval == "step":
        raise TrainrunError(
            f"{name} steps on {settings.scheduler_monitor}, which is known once per epoch; "
            "scheduler.interval=step would step it with no new value",
            key="scheduler.interval", fix="use scheduler.interval=epoch with this scheduler",
        )


def check_watched(cfg: DictConfig, logged: list[str], has_scheduler: bool) -> None:
    """Every value the config watches must be one the run logs."""
    watched = {"objective": str(cfg.objective), "checkpoint.monitor": str(cfg.checkpoint.monitor)}
    if cfg.trainer.early_stopping.patience is not None:
        watched["trainer.early_stopping.monitor"] = str(cfg.trainer.early_stopping.monitor)
    if has_scheduler and cfg.scheduler.get("monitor"):
        watched["scheduler.monitor"] = str(cfg.scheduler.monitor)
    for key, name in watched.items():
        if name not in logged:
            hint = ""
            if name.startswith("val_") and "val_loss" not in logged:
                hint = " (there is no validation split: data.val_fraction=0)"
            elif name.startswith("val_") and name[4:] in EXTRA_METRICS:
                hint = f" (add metrics=[{name[4:]}] to compute it)"
            raise TrainrunError(
                f"{key}={name} is not a value this run logs{hint}; it logs {', '.join(logged)}",
                key=key,
                fix=f"set {key} to one of: {', '.join(logged)}",
            )
