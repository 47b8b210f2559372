"""A sweep's jobs, run one after another in one process, without its memory growing from job to
job: the Hydra callback :class:`ReleaseJobConfigs` (``hydra.callbacks`` in ``configs/train.yaml``)."""

from __future__ import annotations

import gc
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig


class ReleaseJobConfigs(Callback):
    """Hydra callback: the jobs of a sweep run one after another in one process without its
    memory growing from job to job (measured in docs/cluster.md, "What a sweep costs").

    * A finished job's return keeps its result, not its configs: Hydra's basic sweeper keeps
      every job's ``JobReturn`` until the sweep ends, each holding the job's whole config and
      Hydra config (about 56 OmegaConf nodes a job). Listed first in ``hydra.callbacks``, so
      Hydra, which calls ``on_job_end`` in reverse order, calls it after every other callback has
      seen them; the sweepers read only ``return_value`` and ``status`` after a job.
    * After the first job, what is still alive (torch, Hydra, the modules and caches every job
      shares: about 315,000 objects) is collected once and frozen (``gc.freeze``). Python's
      collector otherwise left the cycles of each job's configs and objects waiting for a full
      pass over all of them, which came rarely, and the heap grew by about 0.2 MB a job; a full
      pass after every job would cost 160-180 ms. With the shared objects frozen, the automatic
      passes cover only the jobs' own objects."""

    def __init__(self) -> None:
        self.frozen = False

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        sweeping = job_return.hydra_cfg is not None and job_return.hydra_cfg.hydra.mode == RunMode.MULTIRUN
        job_return.cfg = None
        job_return.hydra_cfg = None
        if sweeping and not self.frozen:
            self.frozen = True
            gc.collect()
            gc.freeze()
