"""The loop's settings, typed and read from the config once (``build`` calls
:func:`loop_settings`), so the loop and the stop decision never touch the config.

It is also where every name the config *watches* (``objective``, ``checkpoint.monitor``,
``trainer.early_stopping.monitor``, ``scheduler.monitor``) is checked against the names the run
will log: a typo there would otherwise keep a wrong best.pt or never stop early.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from trainrun.config.choices import text
from trainrun.errors import TrainrunError


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
    early_stopping: EarlyStopping | None
    detect_anomaly: bool


def loop_settings(cfg: DictConfig, logged: list[str] | None, has_scheduler: bool) -> LoopSettings:
    """Read the loop's settings from ``cfg``; ``logged`` are the names each epoch row will hold
    (None: not checked)."""
    trainer, checkpoint = cfg.trainer, cfg.checkpoint
    stopping = trainer.early_stopping
    early = None
    if stopping.patience is not None:
        early = EarlyStopping(int(stopping.patience), float(stopping.min_delta), str(stopping.monitor),
                              text(stopping.mode))
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
        mode=text(checkpoint.mode),
        save_checkpoints=bool(checkpoint.enabled),
        every_n_epochs=int(checkpoint.every_n_epochs),
        every_n_steps=checkpoint.every_n_steps,
        early_stopping=early,
        detect_anomaly=bool(trainer.detect_anomaly),
    )
    if logged is not None:
        check_watched(cfg, settings, logged)
    return settings


def check_watched(cfg: DictConfig, settings: LoopSettings, logged: list[str]) -> None:
    """Every value the config watches must be one the run logs."""
    early = settings.early_stopping
    watched = {"objective": str(cfg.objective), "checkpoint.monitor": settings.monitor}
    if early is not None:
        watched["trainer.early_stopping.monitor"] = early.monitor
    if settings.scheduler_monitor:
        watched["scheduler.monitor"] = settings.scheduler_monitor
    for key, name in watched.items():
        if name not in logged:
            hint = " (there is no validation split: data.val_fraction=0)" if name.startswith("val_") else ""
            raise TrainrunError(
                f"{key}={name} is not a value this run logs{hint}; it logs {', '.join(logged)}",
                key=key,
                fix=f"set {key} to one of: {', '.join(logged)}",
            )
