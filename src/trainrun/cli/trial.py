"""The job side of an Optuna trial: report each epoch's objective to the study and ask its pruner
whether to go on.

A job of ``hydra/sweeper=trainrun_optuna`` knows its trial number from ``TRAINRUN_TRIAL`` (the
sweeper sets it through ``hydra.job.env_set``, so it reaches a job wherever it runs) and opens
the study from its own Hydra config (``hydra.sweeper.storage``, ``study_name``, ``pruner``),
exactly as the driver did (:mod:`trainrun.cli.study`). :class:`TrialReport` is one of the
``Stop``'s judges: after each epoch it reports the epoch's objective (step = epochs trained) and,
when the pruner says so, answers why the run stops; the run then ends with status ``pruned``
(exit 0, ``last.pt`` saved) and the driver tells the study PRUNED.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

if TYPE_CHECKING:  # optuna is imported only in a job of an Optuna sweep
    from optuna.trial import Trial

log = logging.getLogger("trainrun")
TRIAL_ENV = "TRAINRUN_TRIAL"


def trial_number() -> int | None:
    """This job's trial number, when it is a trial of trainrun's Optuna sweeper."""
    try:
        text = os.environ.get(TRIAL_ENV) or HydraConfig.get().job.env_set.get(TRIAL_ENV)
        return int(text) if text is not None else None
    except (ValueError, TypeError):
        return None


class TrialReport:
    """Reports each epoch's ``objective`` to trial ``number`` and asks the study's pruner."""

    def __init__(self, trial: Trial, objective: str) -> None:
        self.trial, self.objective = trial, objective
        self.pruner = type(trial.study.pruner).__name__

    def __call__(self, history: list[dict[str, Any]]) -> str | None:
        row = history[-1] if history else {}
        value = row.get(self.objective)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None  # nothing a pruner can compare (a failed epoch fails the run elsewhere)
        epoch = int(row["epoch"])
        self.trial.report(float(value), step=epoch)
        if not self.trial.should_prune():
            return None
        return f"pruned by {self.pruner} after epoch {epoch} ({self.objective} {value:.4g})"


def trial_report(cfg: DictConfig, world_size: int = 1) -> TrialReport | None:
    """The judge of this job's trial, or None: not a trial, no pruner, or a job of several
    processes (their ranks would have to agree on the verdict: they train all epochs)."""
    number = trial_number()
    if number is None:
        return None
    sweeper = HydraConfig.get().sweeper
    pruner_cfg = sweeper.get("pruner")
    if not pruner_cfg:
        return None
    if world_size > 1 or int(cfg.trainer.get("devices") or 1) > 1:
        log.warning(f"trial {number}: pruning needs one process per trial; this one trains all its epochs")
        return None
    import optuna  # only in a trial's job

    from trainrun.cli import study as studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = studies.storage_spec(sweeper.get("storage"), Path(str(HydraConfig.get().sweep.dir)).absolute())
    study = studies.load(spec, str(sweeper.get("study_name") or "trainrun"), pruner=instantiate(pruner_cfg),
                         sampler=optuna.samplers.RandomSampler())
    return TrialReport(studies.trial_handle(study, number), str(cfg.objective))
