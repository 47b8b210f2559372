"""One run of the Optuna sweeper's driver: open (or join) the study, clean what an interrupted
driver left behind, then ask / launch / tell until this sweep folder holds ``n_trials`` trials.

Imported only when a search starts (it imports Optuna).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from trainrun.cli import study as studies
from trainrun.cli.rerun import refuse_changed_data
from trainrun.errors import CONFIG_ERROR, TRAINING_ERROR, TrainrunError

from ._optuna_space import SearchSpace, parse

if TYPE_CHECKING:
    from .optuna_sweeper import TrainrunOptunaSweeper

log = logging.getLogger("trainrun")
RESULTS = "optimization_results.yaml"
# The job reads its trial number from this variable (set through hydra.job.env_set, so it
# reaches the job whatever runs it: this process, a joblib worker, a SLURM node).
TRIAL_ENV = "TRAINRUN_TRIAL"


class Drive:
    def __init__(self, sweeper: TrainrunOptunaSweeper, sweep_dir: Path, arguments: list[str]) -> None:
        self.sweeper, self.sweep_dir = sweeper, sweep_dir
        self.space: SearchSpace = parse(sweeper.params, arguments)
        self.spec = studies.storage_spec(sweeper.storage, sweep_dir)
        self.name = sweeper.study_name or "trainrun"
        self.driver = studies.Driver.this()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # trainrun says what happened, once

    def open(self) -> optuna.Study:
        stored = self._stored_trials()
        grid = self._grid() if self.sweeper.is_grid() else None
        sampler = self.sweeper.build_sampler(stored, grid)
        seed = (self.sweeper.sampler_cfg or {}).get("seed")
        if stored and sampler is not None and seed is not None:
            log.info(f"study {self.name} holds {stored} trials: the sampler continues with seed "
                     f"{seed}+{stored}, so this sweep draws new points")
        study = studies.create(self.spec, study_name=self.name, sampler=sampler,
                               pruner=self.sweeper.build_pruner(), direction=self.sweeper.direction)
        if study.direction.name.lower() != self.sweeper.direction:
            raise TrainrunError(
                f"the stored study {self.name!r} ({studies.shown(self.spec)}) was created to "
                f"{study.direction.name.lower()}, this sweep asks to {self.sweeper.direction}",
                key="hydra.sweeper.direction", exit_code=CONFIG_ERROR,
                fix="use the objective the study was made for, or another hydra.sweeper.study_name")
        if grid is not None:
            size = math.prod(len(v) for v in grid.values())
            if size < self.sweeper.n_trials:
                log.info(f"grid sampler: {size} points, so n_trials={size}")
                self.sweeper.n_trials = size
        return study

    def _stored_trials(self) -> int:
        try:
            summaries = optuna.get_all_study_summaries(storage=studies.open_storage(self.spec))
        except Exception:
            return 0
        return next((s.n_trials for s in summaries if s.study_name == self.name), 0)

    def _grid(self) -> dict[str, list[Any]]:
        grid: dict[str, list[Any]] = {}
        for name, dist in self.space.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[name] = list(dist.choices)
            elif isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
                n = round((dist.high - dist.low) / dist.step) + 1
                grid[name] = [dist.low + i * dist.step for i in range(n)]
            else:
                raise TrainrunError(f"hydra/sweeper/sampler=grid cannot enumerate {name} ({dist})",
                                    key="hydra.sweeper.params", exit_code=CONFIG_ERROR,
                                    fix="give it as choice(...) or range(start, stop, step), or use another sampler")
        return grid

    def remaining(self, study: optuna.Study) -> int:
        here = sum(studies.counted(t, self.sweep_dir, self.sweeper.stale_after_s)
                   for t in study.get_trials(deepcopy=False))
        return self.sweeper.n_trials - here

    def run(self, launcher: Launcher, config: DictConfig) -> None:
        study = self.open()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, self.sweep_dir / "multirun.yaml")  # as Hydra's own sweeper does
        log.info(f"study {self.name} in {studies.shown(self.spec)}: {self.sweeper.direction}, "
                 f"{self.sweeper.n_trials} trials in {self.sweep_dir}, {self.sweeper.n_jobs} at a time"
                 + (f", pruner {type(study.pruner).__name__}" if self.sweeper.pruner_cfg else ""))
        for line in studies.clean_left_behind(study, self.sweeper.stale_after_s):
            log.info(line)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        refuse_changed_data({t.number: t.user_attrs.get(studies.JOB_DIR) for t in finished}, self.name)
        to_go = self.remaining(study)
        if to_go < self.sweeper.n_trials:
            log.info(f"this sweep folder already holds {self.sweeper.n_trials - max(to_go, 0)} of its "
                     f"{self.sweeper.n_trials} trials: {max(to_go, 0)} to go")
        mine: dict[int, Trial] = {}
        with studies.Lease() as lease:
            try:
                while to_go > 0:
                    trials = [self._ask(study, lease) for _ in range(min(self.sweeper.n_jobs, to_go))]
                    mine.update({t.number: t for t in trials})
                    self._launch(launcher, study, trials, lease)
                    for t in trials:
                        mine.pop(t.number, None)
                    to_go = self.remaining(study)
            finally:  # stopped by a signal or an error: what this driver still runs is failed
                for number in mine:
                    try:
                        studies.trial_handle(study, number).set_user_attr(studies.LEFT, "driver interrupted")
                        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                    except Exception as err:
                        log.debug(f"trial {number}: {err}")
        self._results(study)

    def _ask(self, study: optuna.Study, lease: studies.Lease) -> Trial:
        trial = study.ask(fixed_distributions=dict(self.space.distributions))
        trial.set_user_attr(studies.DRIVER, self.driver.text())
        trial.set_user_attr(studies.SWEEP_DIR, str(self.sweep_dir))
        trial.set_user_attr(studies.JOB_DIR, str(self.sweep_dir / str(trial.number)))
        lease.hold(trial)
        return trial

    def _launch(self, launcher: Launcher, study: optuna.Study, trials: list[Trial], lease: studies.Lease) -> None:
        overrides = [(*self.space.overrides(t.params), f"hydra.sweep.subdir={t.number}",
                      f"+hydra.job.env_set.{TRIAL_ENV}={t.number}") for t in trials]
        launcher.launch(overrides, initial_job_idx=trials[0].number)
        failures = 0
        for trial in trials:
            state, _, why = studies.tell(study, trial.number, self.sweep_dir / str(trial.number))
            lease.release(trial.number)
            if state == TrialState.FAIL:
                failures += 1
                log.warning(f"trial {trial.number} failed: {why}")
            elif state == TrialState.PRUNED:
                log.info(f"trial {trial.number} pruned: {why}")
        if failures / len(trials) > self.sweeper.max_failure_rate:
            raise TrainrunError(
                f"{failures} of {len(trials)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.sweeper.max_failure_rate}", key="hydra.sweeper.max_failure_rate", exit_code=TRAINING_ERROR,
                fix="see the failed jobs' errors in summary.csv; raise max_failure_rate (1.0 never stops)")

    def _results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml``: the best trial of the study (all drivers')."""
        try:
            best = study.best_trial
        except ValueError:
            log.error(f"study {self.name}: no trial completed")
            return
        log.info(f"best trial {best.number}: {self.sweeper.direction} {best.value:.6g} with {best.params}")
        results = {"name": "optuna", "study_name": self.name, "best_trial": best.number,
                   "best_params": best.params, "best_value": best.value,
                   "trials": {s.name.lower(): sum(t.state == s for t in study.get_trials(deepcopy=False))
                              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                        TrialState.RUNNING)}}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / RESULTS)
