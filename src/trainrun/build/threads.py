"""How many torch threads a process takes: from the CPUs it may actually use, shared with the
processes beside it, said in one line of the header.

torch's default is the CPUs in the process's affinity mask. It ignores a cgroup CPU quota (a
container or a SLURM job limited to 4 CPUs of a 64-core node gets 64 threads, throttled to 4),
and every process of a node takes them all: two ranks on two CPUs run four threads, and
OpenMP's barriers then wait on threads that are not scheduled (the collapse measured by
``scripts/bench_threads.py``). So the count is

    usable CPUs (affinity mask, capped by the cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``)
    // the processes that share them (the ranks on this host whose masks overlap)

unless the user chose: ``trainer.threads``, or an ``OMP_NUM_THREADS`` of their own (torchrun's
own default of 1, set when it starts several processes, is not the user's choice).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# What a launcher that shares this machine between jobs gives each one (the joblib launcher:
# usable CPUs // parallel jobs), passed to the processes it starts.
CPUS_ENV = "TRAINRUN_CPUS"


@dataclass(frozen=True)
class Threads:
    count: int
    why: str

    def line(self) -> str:
        return f"threads: {self.count} ({self.why})"


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use per period (the tightest limit up its tree), or
    None without a limit. cgroup v2 (``cpu.max``: "max 100000" or "150000 100000") and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 for none)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    files: tuple[str, ...]
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified hierarchy
            base, files = root, ("cpu.max",)
        elif "cpu" in controllers.split(","):
            base, files = root / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limits += _limit_in(folder, files)
            if folder == base or not folder.is_relative_to(base):
                break
            folder = folder.parent
    return min(limits) if limits else None


def _limit_in(folder: Path, files: tuple[str, ...]) -> list[float]:
    try:
        if len(files) == 1:
            quota, period = (folder / files[0]).read_text().split()[:2]
        else:
            quota, period = ((folder / name).read_text().strip() for name in files)
    except (OSError, ValueError):
        return []
    if quota in ("max", "-1") or float(period) <= 0:
        return []
    return [float(quota) / float(period)]


def usable_cpus() -> tuple[int, str]:
    """The CPUs this process may use, and how that was decided (for the header)."""
    try:
        mask = len(os.sched_getaffinity(0))
        cpus, how = mask, f"{mask} in its CPU affinity"
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
        how = f"{cpus} cores"
    quota = _cgroup_quota()
    if quota is not None and math.ceil(quota) < cpus:
        cpus, how = max(1, math.ceil(quota)), f"{how}, cgroup quota {quota:g}"
    given = os.environ.get(CPUS_ENV, "")
    if given.isdigit() and 0 < int(given) < cpus:
        cpus, how = int(given), f"{how}, {given} given to this job by the launcher"
    return cpus, how


def omp_set_by_user() -> bool:
    """Whether ``OMP_NUM_THREADS`` is the user's. torchrun sets it to 1 for its workers when it
    starts several and the variable is unset; the agent's own environment (its parent's, at
    exec) then lacks it."""
    if "OMP_NUM_THREADS" not in os.environ:
        return False
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return True
    try:
        agent = Path(f"/proc/{os.getppid()}/environ").read_bytes().split(b"\0")
    except OSError:
        return True
    return any(entry.startswith(b"OMP_NUM_THREADS=") for entry in agent)


def choose(configured: int | None, sharing: int = 1) -> Threads:
    """The thread count for this process, applied: ``configured`` (``trainer.threads``) wins,
    then a user's ``OMP_NUM_THREADS``, else usable CPUs // ``sharing`` processes."""
    import torch  # here: the sweep callback reads usable_cpus() in processes that never train

    if configured:
        count, why = int(configured), "trainer.threads"
    elif omp_set_by_user():
        count, why = torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    else:
        cpus, how = usable_cpus()
        count = max(1, cpus // max(1, sharing))
        why = f"{cpus} usable CPUs: {how}" + (f"; shared by {sharing} processes" if sharing > 1 else "")
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return Threads(count, why)
