"""trainrun's Optuna sweeper: Hydra's Optuna sweeper, except that a stored study continues its
search instead of repeating it.

The ``hparams_search`` presets fix the sampler's seed (``hydra.sweeper.sampler.seed: 0``) so a
search can be reproduced. Hydra's sweeper builds that sampler afresh on every ``train -m``, so
running the same command again against a stored study (``hydra.sweeper.storage=sqlite:///...``)
drew the very same points as the first time: the random start-up trials of TPE, every trial of
the random sampler, repeated exactly. Here, when the stored study already holds ``n`` trials,
the sampler is built again from its own config with seed ``seed + n``: a fresh study still
starts from ``seed`` (reproducible), a resumed one draws new points (and TPE learns from all
the stored trials, as before). Samplers without a seed (grid) are left alone.

Hydra finds sweepers only inside the ``hydra_plugins`` namespace package, hence this module's
place; ``configs/hydra/sweeper/trainrun_optuna.yaml`` selects it. Optuna itself is imported only
when a sweep starts: Hydra imports this module in every ``train`` process while it scans plugins.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _HydraOptunaSweeper
except ImportError:  # the sweep extra is not installed: no sweeper to offer
    _HydraOptunaSweeper = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)


def stored_trials(storage: Any, study_name: str) -> int:
    """How many trials the study ``study_name`` already holds in ``storage`` (0 when it does not
    exist yet, or when the storage cannot be read: the sweeper itself then reports why)."""
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(storage=storage)
    except Exception:
        return 0
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)


if _HydraOptunaSweeper is not None:

    class TrainrunOptunaSweeper(_HydraOptunaSweeper):
        """``hydra/sweeper=trainrun_optuna``: a resumed study continues its search."""

        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            impl = self.sweeper  # Hydra's OptunaSweeperImpl: storage, study_name, sampler
            sampler = config.hydra.sweeper.get("sampler")
            seed = sampler.get("seed") if sampler is not None else None
            if seed is None or not impl.storage or not impl.study_name:
                return  # nothing fixed the stream, or nothing can be resumed
            done = stored_trials(impl.storage, impl.study_name)
            if done:
                impl.sampler = instantiate(sampler, seed=int(seed) + done)
                log.info(f"study {impl.study_name} holds {done} trials: the sampler continues with "
                         f"seed {seed}+{done}, so this sweep draws new points")
