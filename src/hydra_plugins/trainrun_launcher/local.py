"""``hydra/launcher=local``: Hydra's joblib launcher (worker processes on this machine), with one
device per job: ``n_jobs`` defaults to the number of GPUs (``// gpus_per_job``; all CPU cores
when there are none), and each worker process gets its own GPUs (:mod:`trainrun.cli.gpus`).

Hydra discovers launchers only inside the ``hydra_plugins`` namespace package, hence this
module's place. It imports nothing heavy, and nothing at all without hydra-joblib-launcher.
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without registering them
# in sys.modules, where dataclasses would look the string annotations up.

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn

from trainrun.cli.gpus import GPUS_ENV, parallel_jobs, visible_gpus

try:
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
except ImportError:  # the sweep extra is not installed: no launcher to offer
    JoblibLauncher = None

log = logging.getLogger("trainrun")


def _gpu_count() -> int:
    """torch's count of CUDA devices (through NVML: no CUDA context in this process)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return 0  # visible_gpus reads the variable itself
    if not glob.glob("/dev/nvidia[0-9]*"):
        return 0  # no NVIDIA device on this machine: no torch import in the driver
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:
        return 0


if JoblibLauncher is not None:

    @dataclass
    class TrainrunLocalLauncherConf(JobLibLauncherConf):
        _target_: str = "hydra_plugins.trainrun_launcher.local.TrainrunLocalLauncher"
        # Jobs at once: null = one per gpus_per_job GPUs, or all CPU cores without GPUs.
        n_jobs: int | None = None
        # GPUs each job gets (CUDA_VISIBLE_DEVICES); 0 leaves the variable alone.
        gpus_per_job: int = 1

    ConfigStore.instance().store(group="hydra/launcher", name="trainrun_local_schema",
                                 node=TrainrunLocalLauncherConf, provider="trainrun")

    class TrainrunLocalLauncher(JoblibLauncher):
        """Joblib's launcher with one device per job."""

        def __init__(self, gpus_per_job: int = 1, n_jobs: int | None = None, **kwargs: Any) -> None:
            self.gpus_per_job = int(gpus_per_job)
            self.gpus = visible_gpus(_gpu_count()) if self.gpus_per_job > 0 else []
            jobs = parallel_jobs(n_jobs, len(self.gpus), self.gpus_per_job, os.cpu_count() or 1)
            super().__init__(n_jobs=jobs, **kwargs)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            if self.gpus:
                # The workers start with this process's environment: they take their GPUs from it.
                os.environ[GPUS_ENV] = ",".join(self.gpus)
                log.info(f"{self.joblib['n_jobs']} jobs at once, {self.gpus_per_job} of the GPUs "
                         f"{','.join(self.gpus)} each")
            return super().launch(job_overrides, initial_job_idx)
