"""``hydra/sweeper=trainrun_optuna``: trainrun's Optuna sweeper, on Optuna's public API (>= 4).

Why not hydra-optuna-sweeper: its newest release (1.3) pins ``optuna<3``, so it brought Optuna
2.10, had no pruning, and conflicted with any environment holding a current Optuna.

The driver (this sweeper, in the ``train -m`` process) loops: ask ``n_jobs`` trials with the
search space (``study.ask(fixed_distributions=...)``), hand their overrides to the launcher (any:
basic, local/joblib, SLURM), then tell the study what each job folder's ``summary.json`` says:
COMPLETE with the objective, PRUNED for a job the pruner stopped (``status: pruned``), FAIL for a
failed one. Jobs report each epoch's objective to the study themselves (:mod:`trainrun.cli.trial`)
through the shared storage (:mod:`trainrun.cli.study`), and the pruner (``hydra.sweeper.pruner``)
stops the bad ones.

- **Job folders** are named by trial number (``<sweep>/<trial>``): unique in the study, so
  several drivers can share one sweep folder.
- **n_trials** counts the trials of this sweep folder: running the same command into the same
  folder finishes an interrupted search; a new folder with a stored study adds ``n_trials``.
- **The sampler's seed** continues: with ``n`` trials already stored, a seeded sampler is built
  with ``seed + n``, so a resumed study draws new points while a fresh one is reproducible.
- **Left behind**: trials an interrupted driver left RUNNING are collected or marked failed
  when the next driver starts; a driver stopped by a signal marks its own running trials failed.

Hydra finds sweepers only inside the ``hydra_plugins`` namespace package, hence this module's
place. Optuna is imported only when a search starts (Hydra imports this module in every
``train`` process while it scans plugins).
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without registering them
# in sys.modules, where dataclasses would look the string annotations up.

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("trainrun")


@dataclass
class TrainrunOptunaSweeperConf:
    """The keys of ``hydra.sweeper`` (typos fail at composition)."""

    _target_: str = "hydra_plugins.trainrun_launcher.optuna_sweeper.TrainrunOptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner are built by the sweeper, with the study
    sampler: Any = None
    pruner: Any = None
    direction: str = "minimize"
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 2
    max_failure_rate: float = 1.0
    params: dict[str, str] | None = None
    # A RUNNING trial whose driver (on another host) has not renewed its lease for this long was
    # left behind: the next driver marks it failed.
    stale_after_s: float = 300.0


ConfigStore.instance().store(group="hydra/sweeper", name="trainrun_optuna_schema",
                             node=TrainrunOptunaSweeperConf, provider="trainrun")


class TrainrunOptunaSweeper(Sweeper):
    """Ask, launch, tell; see the module's docstring."""

    def __init__(self, sampler: Any = None, pruner: Any = None, direction: str = "minimize",
                 storage: str | None = None, study_name: str | None = None, n_trials: int = 20,
                 n_jobs: int = 2, max_failure_rate: float = 1.0, params: Any = None,
                 stale_after_s: float = 300.0) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.storage, self.study_name = str(direction), storage, study_name
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.max_failure_rate, self.stale_after_s = float(max_failure_rate), float(stale_after_s)
        self.params: dict[str, str] = {str(k): str(v) for k, v in (params or {}).items()}
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from ._optuna_drive import Drive  # optuna: only now

        assert self.config is not None and self.launcher is not None
        if self.direction not in ("minimize", "maximize"):
            from trainrun.errors import CONFIG_ERROR, TrainrunError

            raise TrainrunError(f"hydra.sweeper.direction={self.direction!r}", key="hydra.sweeper.direction",
                                exit_code=CONFIG_ERROR, fix="minimize or maximize (the presets follow the "
                                "objective: ${direction:${objective}})")
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        drive = Drive(self, sweep_dir, arguments)
        drive.run(self.launcher, self.config)

    # What the drive builds from the config (kept here: they read this sweeper's settings).
    def build_sampler(self, seed_offset: int, grid: dict[str, list[Any]] | None) -> Any:
        if self.sampler_cfg is None:
            return None
        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True) if isinstance(self.sampler_cfg, DictConfig) \
            else dict(self.sampler_cfg)
        assert isinstance(cfg, dict)
        if cfg.get("seed") is not None and seed_offset:
            cfg["seed"] = int(cfg["seed"]) + seed_offset
        if grid is not None:
            cfg["search_space"] = grid
        return instantiate(cfg)

    def build_pruner(self) -> Any:
        return instantiate(self.pruner_cfg) if self.pruner_cfg else None

    def is_grid(self) -> bool:
        target = str((self.sampler_cfg or {}).get("_target_", ""))
        return target.endswith("GridSampler")

