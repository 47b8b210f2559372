"""Loggers: where each epoch's values, the config (as parameters) and the final summary go.

The ``logger`` config group chooses them, several at once with ``logger=[csv,tensorboard]``;
each chosen option adds one entry ``logger.<name>`` whose ``_target_`` is built here with the
run folder. Every logger has the same four methods, called by the reporter on rank 0 only:

``log_params(params)``    once at the start, the flattened config (``optim.lr`` -> 0.1)
``log_epoch(row, history)`` after every epoch: that epoch's values (and the whole history)
``log_summary(summary)``  once at the end (``summary.json``'s content)
``close()``

``csv`` (the default) writes ``metrics.csv``, ``metrics.jsonl`` and ``params.csv``;
``tensorboard``, ``mlflow`` and ``wandb`` need their pip extras, and say which one when it is
missing. A user's own logger is any class with these methods:
``+logger.mine._target_=mypkg.MyLogger``. Each logger is built with the run folder, and with
``resume`` and ``tags`` (``tags=[a,b]``) when its constructor takes them.

This module holds what they share: what is charted and under which name, the config as flat
parameters, and :class:`Loggers`, the set the reporter calls (``trainrun.build.loggers`` builds it).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from omegaconf import DictConfig

from trainrun.config.plain import plain
from trainrun.errors import TRAINING_ERROR, TrainrunError

log = logging.getLogger("trainrun")

# What the reporter calls on every logger.
LOGGER_METHODS = ("log_params", "log_epoch", "log_summary", "close")


class Logger(Protocol):
    """A logger: the csv, tensorboard, mlflow and wandb ones, or a user's own class."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None: ...

    def log_summary(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
# Row keys that are bookkeeping, not values to chart.
NOT_METRICS = ("epoch", "step")
# Row keys that time the epoch: charted by the trackers (a slow epoch, a data stall shows) but
# under ``time/``, apart from the metrics, and never among the hparams results.
TIMINGS = ("seconds", "samples_per_s")


def is_scalar(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def chart_name(key: str) -> str:
    """A row key as the trackers (tensorboard, mlflow, wandb) chart it: ``time/seconds``."""
    return f"time/{key}" if key in TIMINGS else key


def charted(row: dict[str, Any]) -> dict[str, float]:
    """The values of an epoch row that the trackers chart, by :func:`chart_name`."""
    return {chart_name(k): float(v) for k, v in row.items() if k not in NOT_METRICS and is_scalar(v)}


def flatten(node: object, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists stay whole values."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def test_values(summary: dict[str, Any]) -> dict[str, float]:
    """``test/loss``, ``test/acc``, ...: what ``trainer.test_after_fit`` scored (none without)."""
    test = summary.get("test") or {}
    return {f"test/{k}": v for k, v in test.items() if k not in ("epoch", "samples") and is_scalar(v)}


def config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain dicts and lists, resolved where it can be."""
    try:
        return plain(cfg)
    except Exception:  # an interpolation that needs Hydra's runtime (no HydraConfig here)
        return plain(cfg, resolve=False)


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as flat parameters (``optim.lr`` -> 0.1)."""
    return flatten(config_dict(cfg))


def missing_extra(logger: str, extra: str, err: Exception) -> TrainrunError:
    return TrainrunError(
        f"logger={logger} needs a package that is not installed ({err})",
        key="logger",
        fix=f"pip install 'trainrun[{extra}]', or leave {logger} out of logger=[...]",
    )



class Loggers:
    """The chosen loggers, called together. A logger that fails after the start (a tracking
    server gone away, a full disk) is reported once and dropped: the training goes on."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = list(loggers)

    def _each(self, method: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as err:
                if getattr(logger, "essential", False):
                    raise TrainrunError(
                        f"{type(logger).__name__} could not write into the run folder: "
                        f"{type(err).__name__}: {err}; the checkpoints written before are intact",
                        key="hydra.run.dir", exit_code=TRAINING_ERROR,
                        fix="free disk space or make the run folder writable, then resume=auto",
                    ) from err
                log.warning(f"logger {type(logger).__name__} failed in {method} and is now off: "
                            f"{type(err).__name__}: {err}")
                self.loggers.remove(logger)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._each("log_epoch", row, history)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._each("log_summary", summary)

    def close(self) -> None:
        self._each("close")

    def __len__(self) -> int:
        return len(self.loggers)
