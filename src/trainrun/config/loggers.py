"""Schemas of the logger group (``logger=[csv,tensorboard]``): one entry ``logger.<name>`` per
chosen logger, built with the run folder (``trainrun.build.loggers``)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from trainrun.config.fields import setting


@dataclass
class LoggerConfig:
    """One chosen logger (``logger.<name>``); built with the run folder (``trainrun.report.loggers``)."""

    _target_: str = setting(MISSING, "the logger class (trainrun.report.loggers.* or your own)")


@dataclass
class CsvLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.report.loggers.csv_logs.CsvLogger"


@dataclass
class TensorBoardLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.report.loggers.tensorboard.TensorBoardLogger"
    log_dir: str = setting("tensorboard", "event files go here (relative paths are inside the run folder)")


@dataclass
class MLflowLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.report.loggers.mlflow.MLflowLogger"
    tracking_uri: str | None = setting(
        None, "null: a local file store in the run folder (<run>/mlruns); or http://host:5000, "
        "sqlite:///mlflow.db, file:///shared/mlruns, ...")
    experiment_name: str = setting("trainrun", "the MLflow experiment the run is filed under")
    run_name: str | None = setting(None, "null: the run folder's name")
    startup_timeout: float = setting(
        10.0, "seconds the start-up check may spend on an unreachable tracking server before the run stops")


@dataclass
class WandbLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.report.loggers.wandb.WandbLogger"
    project: str = setting("trainrun", "the W&B project the run is filed under")
    entity: str | None = setting(None, "the W&B team or user; null: your default entity")
    name: str | None = setting(None, "the run's name in W&B; null: the run folder's name")
    mode: str | None = setting(
        None, "online, offline (files under <run>/wandb, `wandb sync` later) or disabled; null: WANDB_MODE or online")
