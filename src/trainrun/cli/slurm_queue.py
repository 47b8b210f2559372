"""SLURM as a sweep meets it: what the partition's nodes can hold, and what a job waits for.

A request no node can hold (``cpus_per_task=4`` on 2-CPU nodes, more memory or GPUs than a node
has, a time limit over the partition's) is accepted by ``sbatch`` and then stays pending for
ever (reason ``PartitionConfig``, ``Resources``...), while ``train -m`` waits in silence. So,
before anything is submitted, :func:`fit_request` reads the partition's nodes with ``sinfo``:

* a value the preset chose (``configs/hydra/launcher/slurm.yaml``: 4 CPUs, 8 GB, 60 minutes)
  and the cluster cannot give is lowered to what its largest node (or the partition's time
  limit) allows, and the header says so;
* a value set on the command line (``hydra.launcher.cpus_per_task=8``) that cannot fit is
  refused, naming the key and what the partition has: we never change what the user typed.

While jobs are queued, :func:`wait_result` replaces submitit's silent ``job.results()``: it
polls the job and says what it waits for (pending, SLURM's reason, for how long), once when the
state changes and then every minute. Without ``sinfo``/``squeue`` (a login node without the
client) nothing is checked and the waiting is submitit's own.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from trainrun.errors import TrainrunError

log = logging.getLogger("trainrun")

# A job not started after this long is mentioned once; then every REPEAT_S while it waits.
FIRST_S, REPEAT_S = 10.0, 60.0
POLL_S = 2.0
# The preset's keys this module may lower to fit, with the sbatch option each becomes.
FITTED = {"cpus_per_task": "--cpus-per-task", "mem_gb": "--mem", "timeout_min": "--time",
          "gpus_per_node": "--gpus-per-node", "nodes": "--nodes", "tasks_per_node": "--ntasks-per-node"}


@dataclass(frozen=True)
class Partition:
    """What ``sinfo`` says of a partition: its nodes' largest CPUs, memory and GPUs, how many
    nodes, and its time limit in minutes (None: infinite)."""

    name: str
    nodes: int
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_min: int | None


def _run(args: list[str]) -> str | None:
    """A SLURM client command's output; None when it is missing or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def minutes(limit: str) -> int | None:
    """SLURM's time format (``infinite``, ``30:00``, ``1-02:00:00``, ``90``) in minutes."""
    limit = limit.strip()
    if limit in ("infinite", "UNLIMITED", "") or limit.startswith("n/a"):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:  # minutes alone
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3], parts[-2], parts[-1]
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


def gpus_of(gres: str) -> int:
    """GPUs in a node's ``sinfo %G`` (``gpu:a100:4(S:0-1)``, ``gpu:2``, ``(null)``)."""
    total = 0
    for item in gres.split(","):
        found = re.match(r"gpu(?::[\w.-]+)?:(\d+)", item.strip())
        if found:
            total += int(found.group(1))
    return total


def partition_info(name: str | None) -> Partition | None:
    """The partition ``name`` (None: the cluster's default, ``*`` in sinfo), or None when sinfo
    cannot say. Raises when the partition does not exist."""
    listed = _run(["sinfo", "-h", "-o", "%P|%l"])
    if listed is None:
        return None
    limits: dict[str, str] = {}
    default = None
    for line in listed.splitlines():
        part, _, limit = line.partition("|")
        if part.endswith("*"):
            part = default = part[:-1]
        limits[part] = limit
    chosen = name or default
    if chosen is None:
        return None
    if chosen not in limits:
        raise TrainrunError(
            f"hydra.launcher.partition={chosen} is not a partition of this cluster (sinfo lists "
            f"{', '.join(sorted(limits)) or 'none'}): its jobs would never start",
            key="hydra.launcher.partition",
            fix=f"use one of: {', '.join(f'hydra.launcher.partition={p}' for p in sorted(limits))}")
    nodes = _run(["sinfo", "-h", "-N", "-p", chosen, "-o", "%N|%c|%m|%G"]) or ""
    seen: dict[str, tuple[int, int, int]] = {}
    for line in nodes.splitlines():
        fields = line.split("|")
        if len(fields) == 4 and fields[1].isdigit():
            memory = int(re.sub(r"\D", "", fields[2]) or 0)
            seen[fields[0]] = (int(fields[1]), memory, gpus_of(fields[3]))
    if not seen:
        return None
    return Partition(name=chosen, nodes=len(seen), cpus=max(c for c, _, _ in seen.values()),
                     memory_mb=max(m for _, m, _ in seen.values()),
                     gpus=max(g for _, _, g in seen.values()), time_limit_min=minutes(limits[chosen]))


def explicit_keys(hydra_overrides: list[str]) -> set[str]:
    """The ``hydra.launcher.<key>`` names set on the command line."""
    keys = set()
    for override in hydra_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.launcher."):
            keys.add(key.removeprefix("hydra.launcher."))
    return keys


def fit_request(params: Mapping[str, Any], explicit: set[str], say: Callable[[str], None]) -> dict[str, Any]:
    """``params`` (the launcher's, as submitit takes them) fitted to the partition they go to;
    see the module's docstring. Returns the params to submit."""
    fitted = dict(params)
    partition = partition_info(fitted.get("partition"))
    if partition is None:
        return fitted
    tasks = int(fitted.get("tasks_per_node") or 1)
    limits: dict[str, tuple[int | None, str]] = {
        "nodes": (partition.nodes, f"{partition.nodes} node(s)"),
        "tasks_per_node": (partition.cpus, f"{partition.cpus} CPUs per node"),
        "cpus_per_task": (max(1, partition.cpus // tasks),
                          f"{partition.cpus} CPUs per node for {tasks} task(s)"),
        "mem_gb": (partition.memory_mb // 1024, f"{partition.memory_mb} MB of memory per node"),
        "gpus_per_node": (partition.gpus, f"{partition.gpus} GPU(s) per node"),
        "timeout_min": (partition.time_limit_min, f"a time limit of {partition.time_limit_min} minutes"),
    }
    lowered = []
    for key, (most, has) in limits.items():
        value = fitted.get(key)
        if value is None or most is None or not isinstance(value, int | float) or value <= most:
            continue
        if key in explicit or most < 1:
            raise TrainrunError(
                f"hydra.launcher.{key}={value:g} asks more than partition {partition.name} has "
                f"({has}): sbatch would accept the jobs and they would stay pending for ever",
                key=f"hydra.launcher.{key}",
                fix=f"set hydra.launcher.{key}={most} or less, or choose another hydra.launcher.partition")
        fitted[key] = most
        lowered.append(f"{key}={most} (the preset's {value:g})")
    if lowered:
        say(f"SLURM: hydra.launcher {', '.join(lowered)} to fit partition {partition.name} (its largest node: "
            f"{partition.cpus} CPUs, {partition.memory_mb // 1024} GB, {partition.gpus} GPUs"
            + (f"; time limit {partition.time_limit_min} min" if partition.time_limit_min else "") + ")")
    return fitted


class QueuedJob(Protocol):
    """What :func:`wait_result` needs of a submitit job."""

    @property
    def job_id(self) -> str: ...

    def done(self) -> bool: ...

    def results(self) -> list[Any]: ...


def queue_state(job_id: str) -> tuple[str, str, str] | None:
    """``(state, reason, for how long)`` from squeue (pending: since its submission; running:
    its elapsed time), or None when squeue has no record (the job ended, or no client here)."""
    out = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%r|%V|%M"])
    line = (out or "").strip().splitlines()
    fields = line[0].split("|") if line else []
    if len(fields) != 4:
        return None
    return fields[0], fields[1], waited(fields[2]) if fields[0] == "PENDING" else fields[3]


def waited(submitted: str, now: float | None = None) -> str:
    """How long since ``submitted`` (squeue's ``%V``, ``2026-12-06T19:55:23``), as ``1 min 5 s``."""
    with contextlib.suppress(ValueError):
        start = time.mktime(time.strptime(submitted, "%Y-%m-%dT%H:%M:%S"))
        seconds = int((now or time.time()) - start)
        return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{max(0, seconds)} s"
    return "?"


def wait_result(job: QueuedJob, label: str, say: Callable[[str], None] = log.info,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                state: Callable[[str], tuple[str, str, str] | None] = queue_state) -> Any:
    """``job.results()[0]``, saying meanwhile what the job waits for: ``job #0 (SLURM 12_0):
    PENDING for 1 min 5 s, reason Resources``, when its state changes and every minute."""
    started = clock()
    last_said, last_seen = -1.0, ""
    while not job.done():
        now = clock()
        if now - started >= FIRST_S:
            seen = state(job.job_id)
            text = f"{seen[0]}/{seen[1]}" if seen else ""
            if seen and (text != last_seen or now - last_said >= REPEAT_S):
                status, reason, how_long = seen
                why = "" if reason in ("None", "") else f", reason {reason}"
                say(f"waiting for {label} (SLURM {job.job_id}): {status} for {how_long}{why}"
                    + (" (squeue shows why; scancel to give up)" if status == "PENDING" else ""))
                last_said, last_seen = now, text
        sleep(POLL_S)
    return job.results()[0]
