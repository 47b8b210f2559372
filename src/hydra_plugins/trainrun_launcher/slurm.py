"""trainrun's SLURM launcher: Hydra's submitit SLURM launcher, with three changes.

Hydra's launcher waits for each job with ``job.results()``, which raises when the cluster ended
a job without a result (cancelled, killed, out of memory, node failure). That exception aborts
the whole sweep while the other jobs may still run, and the sweep summary is never written.
Here such a job is recorded as failed in its own ``summary.json`` (with the cluster's state and
the path of its log) and the sweep goes on; the sweeper gets ``None`` for it (Optuna records a
failed trial). Everything else (sbatch options, requeue on preemption and time-out through
``checkpoint``) is Hydra's launcher unchanged: ``hydra/launcher=slurm`` in
``configs/hydra/launcher/slurm.yaml`` selects it.

The sweep run again (the same command into the same ``hydra.sweep.dir``) submits only what is
left to do: a job whose folder holds a run that finished with the same config is not submitted
again (its result is read from its folder), and a job an earlier driver submitted that SLURM
still runs or holds pending (the driver died, the jobs did not) is waited for again through
submitit, not re-run: each driver records what it submitted in ``.submitit/submitted.json``.

Hydra discovers launchers only inside the ``hydra_plugins`` namespace package, hence this
module's place. It imports nothing heavy, and nothing at all when hydra-submitit-launcher is
not installed (``pip install 'trainrun[slurm]'``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _SubmititSlurmLauncher,
    )
except ImportError:  # the optional extra is not installed: no launcher to offer
    _SubmititSlurmLauncher = None

if TYPE_CHECKING:  # submitit is imported when a sweep is submitted
    from submitit import Job

log = logging.getLogger(__name__)


if _SubmititSlurmLauncher is not None:

    class TrainrunSlurmLauncher(_SubmititSlurmLauncher):
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

            submitted = self._submitted(sweep_dir)
            job_params: list[Any] = []
            attached: dict[int, Any] = {}
            skipped: dict[int, JobReturn] = {}
            for idx, overrides in enumerate(job_overrides, initial_job_idx):
                done = self._finished(list(overrides), idx)
                if done is not None:
                    log.info(f"\t#{idx} : finished before with this config, not submitted again")
                    skipped[idx] = done
                    continue
                alive = self._still_queued(submitted.get(str(idx)), list(overrides))
                if alive is not None:
                    log.info(f"\t#{idx} : SLURM job {alive.job_id} (submitted by an earlier driver) "
                             "still runs: waiting for it")
                    attached[idx] = alive
                    continue
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", idx,
                                   f"job_id_for_{idx}", Singleton.get_state()))
            jobs = executor.map_array(self, *zip(*job_params, strict=True)) if job_params else []
            for job_param, job in zip(job_params, jobs, strict=True):
                submitted[str(job_param[2])] = {"job_id": job.job_id, "overrides": job_param[0]}
            if job_params:
                from trainrun.files import atomic_write_json

                atomic_write_json(sweep_dir / ".submitit" / "submitted.json", submitted)

            waiting = [(p[0], p[2], j) for p, j in zip(job_params, jobs, strict=True)]
            waiting += [(list(job_overrides[i - initial_job_idx]), i, j) for i, j in attached.items()]
            returns: dict[int, JobReturn] = dict(skipped)
            for overrides, idx, job in waiting:
                try:
                    returns[idx] = wait_result(job, f"job #{idx}")  # says what it waits for
                except Exception as err:  # UncompletedJobError, FailedJobError
                    returns[idx] = self._failed(overrides, idx, job, err)
            return [returns[i] for i in sorted(returns)]

        def _submitted(self, sweep_dir: Path) -> dict[str, Any]:
            try:
                value = json.loads((sweep_dir / ".submitit" / "submitted.json").read_text())
            except (OSError, ValueError):
                return {}
            return value if isinstance(value, dict) else {}

        def _still_queued(self, record: object, overrides: list[str]) -> Any:
            """The earlier driver's job for these overrides, if SLURM still runs or holds it."""
            import submitit

            if not isinstance(record, dict) or record.get("overrides") != overrides:
                return None
            job: Any = submitit.SlurmJob(folder=self.params["submitit_folder"], job_id=str(record["job_id"]))
            try:
                state = str(job.state)
            except Exception:
                return None
            return job if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING",
                                    "SUSPENDED", "RESIZING") else None

        def _finished(self, overrides: list[str], idx: int) -> JobReturn | None:
            """A JobReturn read from the job's folder when it holds a run that finished with the
            same config (the job itself would only skip it)."""
            from trainrun.cli.rerun import decide

            assert self.config is not None and self.hydra_context is not None
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                with open_dict(cfg.hydra.job):
                    cfg.hydra.job.num = idx
                    cfg.hydra.job.id = f"job_id_for_{idx}"
                run_dir = Path(str(self.config.hydra.sweep.dir)) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
                with open_dict(cfg):
                    del cfg["hydra"]
                decision, summary = decide(cfg, run_dir)
            except Exception as err:
                log.debug(f"job #{idx}: {err}")
                return None
            if decision != "skip" or summary is None:
                return None
            from trainrun.report.sweep import finite_or_none

            ret = JobReturn(overrides=overrides, working_dir=str(run_dir), status=JobStatus.COMPLETED)
            ret.return_value = finite_or_none((summary.get("objective") or {}).get("value"))
            return ret

        def _failed(self, overrides: list[str], idx: int, job: Job[Any], err: Exception) -> JobReturn:
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
