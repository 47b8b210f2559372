"""The loggers a run's config chooses (``logger=[csv,tensorboard]``), built from their ``_target_``
with the run folder, ``resume`` and ``tags`` where the constructor takes them, and checked for
the four methods the reporter calls (``trainrun.report.loggers.base.LOGGER_METHODS``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from trainrun.build.instantiate import build_from_config
from trainrun.errors import TrainrunError
from trainrun.report.loggers.base import LOGGER_METHODS, Logger, Loggers


def make_loggers(cfg: DictConfig, run_dir: Path) -> Loggers:
    """Build every logger chosen under ``cfg.logger`` (rank 0 only)."""
    chosen = cfg.get("logger") or {}
    built: list[Logger] = []
    for name, node in chosen.items():
        if node is None:
            continue
        logger = build_from_config(node, f"logger.{name}", what=f"starting the {name} logger",
                                   run_dir=run_dir, resume=bool(cfg.get("resume")),
                                   tags=[str(t) for t in cfg.get("tags") or []])
        missing = [m for m in LOGGER_METHODS if not callable(getattr(logger, m, None))]
        if missing:
            raise TrainrunError(
                f"logger.{name}._target_={node._target_} built {type(logger).__name__}, which has no "
                f"{', '.join(missing)} method(s); a logger needs {', '.join(LOGGER_METHODS)}",
                key=f"logger.{name}._target_",
                fix="give the class those four methods (see trainrun.report.loggers.csv_logs.CsvLogger)",
            )
        built.append(logger)
    return Loggers(built)
