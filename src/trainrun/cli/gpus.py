"""A local job's share of the machine: its torch threads, and its own GPUs. How
``hydra/launcher=local`` shares a machine's GPUs among the jobs it runs at once:

The launcher (``hydra_plugins.trainrun_launcher.local``, in the ``train -m`` process) finds the
visible GPUs (``CUDA_VISIBLE_DEVICES``, else torch's count), runs ``gpus // gpus_per_job`` jobs
at once unless ``hydra.launcher.n_jobs`` says otherwise, and hands the list to its worker
processes in ``TRAINRUN_GPUS``. Each worker process, at its first job, claims the first free
*slot* of ``gpus_per_job`` devices (an OS lock in ``<sweep>/.gpus/``, held until the worker
exits, so two workers never share a slot) and sets ``CUDA_VISIBLE_DEVICES`` to it before CUDA
starts: joblib reuses its workers, and CUDA reads the variable only once per process, so a slot
is a worker's for its life. With more workers than slots (an explicit ``n_jobs``), a worker
that finds none free shares one, round robin over the job number.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from trainrun.build.threads import CPUS_ENV, usable_cpus

log = logging.getLogger("trainrun")

GPUS_ENV = "TRAINRUN_GPUS"  # the launcher's visible devices, for its workers
_slot: tuple[list[str], int | None] | None = None  # this worker's devices and the lock's descriptor


def visible_gpus(count: int | None = None) -> list[str]:
    """The GPUs jobs may use: ``CUDA_VISIBLE_DEVICES`` when set (``""`` or ``-1``: none), else
    ``0..count-1`` (``count``: torch's device count, given by the caller)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        devices = [d.strip() for d in given.split(",") if d.strip()]
        return [] if devices[:1] == ["-1"] else devices
    return [str(i) for i in range(count or 0)]


def parallel_jobs(n_jobs: int | None, gpus: int, per_job: int, cpus: int) -> int:
    """How many jobs run at once: ``n_jobs`` as joblib reads it (-1 all cores, -2 all but one),
    or, when it is null, one per slot of ``per_job`` GPUs (all cores when there are none)."""
    if n_jobs is None:
        if gpus and per_job > 0:
            return max(1, gpus // per_job)
        n_jobs = -1
    return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)


def claim_devices(sweep_dir: Path, per_job: int, job_num: int) -> list[str] | None:
    """This worker's GPUs (claimed at its first job, kept for its life), with
    ``CUDA_VISIBLE_DEVICES`` set to them; None when the launcher handed out no GPUs."""
    global _slot
    devices = [d for d in os.environ.get(GPUS_ENV, "").split(",") if d]
    if not devices or per_job <= 0:
        return None
    if _slot is None:
        slots = [devices[i:i + per_job] for i in range(0, len(devices) - per_job + 1, per_job)]
        if not slots:
            raise ValueError(f"hydra.launcher.gpus_per_job={per_job} but only {len(devices)} GPUs are visible")
        folder = sweep_dir / ".gpus"
        folder.mkdir(parents=True, exist_ok=True)
        for k, slot in enumerate(slots):
            fd = os.open(folder / f"slot-{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _slot = (slot, fd)  # held until this process exits
            break
        else:
            slot = slots[job_num % len(slots)]
            log.warning(f"every GPU slot is taken by another job: this one shares {','.join(slot)} "
                        "(more jobs at once than slots: lower hydra.launcher.n_jobs)")
            _slot = (slot, None)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_slot[0])
    return _slot[0]


def _launcher_target() -> str:
    try:
        return str(HydraConfig.get().launcher.get("_target_", ""))
    except ValueError:
        return ""


def in_joblib_worker() -> bool:
    """Whether this job runs in a joblib worker (``hydra/launcher=local`` or ``joblib``)."""
    target = _launcher_target()
    return "joblib" in target or target.endswith("TrainrunLocalLauncher")


def limit_threads(cfg: DictConfig) -> None:
    """Under the joblib launcher, give each job ``usable CPUs // parallel jobs`` torch threads
    (unless ``trainer.threads`` is set), so parallel jobs do not oversubscribe the cores; a job's
    ``trainer.devices`` processes share its CPUs (``TRAINRUN_CPUS``)."""
    if cfg.trainer.get("threads") or not in_joblib_worker():
        return
    launcher = HydraConfig.get().launcher
    cpus, _ = usable_cpus()  # the affinity mask and cgroup quota, not the machine's cores
    gpus = [d for d in os.environ.get(GPUS_ENV, "").split(",") if d]
    n_jobs = launcher.get("n_jobs")
    jobs = parallel_jobs(None if n_jobs is None else int(n_jobs), len(gpus),
                         int(launcher.get("gpus_per_job") or 0), cpus)
    cfg.trainer.threads = max(1, cpus // jobs)
    os.environ[CPUS_ENV] = str(cfg.trainer.threads)
    log.info(f"trainer.threads={cfg.trainer.threads} ({cpus} usable CPUs, {jobs} parallel jobs)")


def assign_devices(run_dir: Path) -> list[str] | None:
    """Under ``hydra/launcher=local`` with GPUs: this job's own (``CUDA_VISIBLE_DEVICES``)."""
    if not _launcher_target().endswith("TrainrunLocalLauncher"):
        return None
    hydra_cfg = HydraConfig.get()
    devices = claim_devices(Path(str(hydra_cfg.sweep.dir)), int(hydra_cfg.launcher.get("gpus_per_job") or 0),
                            int(hydra_cfg.job.num or 0))
    if devices is not None:
        log.info(f"CUDA_VISIBLE_DEVICES={','.join(devices)} (this job's GPUs)")
    return devices
