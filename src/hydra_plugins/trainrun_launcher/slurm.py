"""trainrun's SLURM launcher: Hydra's submitit SLURM launcher, with one change.

Hydra's launcher waits for each job with ``job.results()``, which raises when the cluster ended
a job without a result (cancelled, killed, out of memory, node failure). That exception aborts
the whole sweep while the other jobs may still run, and the sweep summary is never written.
Here such a job is recorded as failed in its own ``summary.json`` (with the cluster's state and
the path of its log) and the sweep goes on; the sweeper gets ``None`` for it (Optuna records a
failed trial). Everything else (sbatch options, requeue on preemption and time-out through
``checkpoint``) is Hydra's launcher unchanged: ``hydra/launcher=slurm`` in
``configs/hydra/launcher/slurm.yaml`` selects it.

Hydra discovers launchers only inside the ``hydra_plugins`` namespace package, hence this
module's place. It imports nothing heavy, and nothing at all when hydra-submitit-launcher is
not installed (``pip install 'trainrun[slurm]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _SubmititSlurmLauncher,
    )
except ImportError:  # the optional extra is not installed: no launcher to offer
    _SubmititSlurmLauncher = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)


if _SubmititSlurmLauncher is not None:

    class TrainrunSlurmLauncher(_SubmititSlurmLauncher):  # type: ignore[misc,valid-type]
        """``hydra/launcher=slurm``: a job the cluster killed is a failed row, not an abort."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            # The same submission as hydra-submitit-launcher 1.2's BaseSubmititLauncher.launch.
            import submitit

            assert self.config is not None
            assert len(job_overrides) > 0
            init_keys = {"submitit_folder", "max_num_timeout"}
            init_params: dict[str, Any] = {"folder": self.params["submitit_folder"]}
            if "max_num_timeout" in self.params:
                init_params[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
            from trainrun.cli.slurm_queue import explicit_keys, fit_request, wait_result

            # a request no node can hold would stay pending for ever: fit the preset, refuse the user's
            params: dict[str, Any] = fit_request(dict(self.params),
                                                 explicit_keys(list(self.config.hydra.overrides.hydra)), say=log.info)
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in params.items() if k not in init_keys
            })

            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

            job_params: list[Any] = []
            for idx, overrides in enumerate(job_overrides, initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", idx,
                                   f"job_id_for_{idx}", Singleton.get_state()))
            jobs = executor.map_array(self, *zip(*job_params, strict=True))

            returns: list[JobReturn] = []
            for params, job in zip(job_params, jobs, strict=True):
                try:
                    returns.append(wait_result(job, f"job #{params[2]}"))  # says what it waits for
                except Exception as err:  # UncompletedJobError, FailedJobError
                    returns.append(self._failed(params[0], params[2], job, err))
            return returns

        def _failed(self, overrides: list[str], idx: int, job: Any, err: Exception) -> JobReturn:
            """Record a job that ended without a result; the sweep goes on without it."""
            from trainrun.report.sweep import mark_failed, read_summary

            run_dir = self._job_dir(overrides, idx, job.job_id)
            try:
                state = job.state
            except Exception:
                state = "UNKNOWN"
            kind = type(err).__name__
            reason = (f"SLURM job {job.job_id} ended without a result (state {state}, "
                      f"submitit {kind}); log: {job.paths.stdout}")
            if kind == "FailedJobError":  # the job raised outside trainrun's task
                lines = [line for line in str(err).splitlines() if line.strip()]
                last = next((line for line in reversed(lines) if "Error" in line
                             and not line.startswith("You can check")), "")
                reason = f"SLURM job {job.job_id} failed: {last.strip()}; log: {job.paths.stderr}"
            log.error(f"job #{idx}: {reason}")
            previous = read_summary(run_dir) or {}
            mark_failed(run_dir, reason, job=idx, overrides=overrides,
                        slurm_job_id=job.job_id, slurm_state=state,
                        **({"interrupted_by": previous.get("signal")}
                           if previous.get("status") == "interrupted" else {}))
            ret = JobReturn(overrides=overrides, working_dir=str(run_dir), status=JobStatus.COMPLETED)
            ret.return_value = None
            return ret

        def _job_dir(self, overrides: list[str], idx: int, job_id: str) -> Path:
            """The job's output folder, computed as Hydra's ``run_job`` does."""
            assert self.config is not None and self.hydra_context is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                with open_dict(cfg.hydra.job):
                    cfg.hydra.job.id = job_id
                    cfg.hydra.job.num = idx
                return sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            except Exception:
                return sweep_dir / str(idx)
