"""Where this process stands among ranks, decided from the environment alone, and the one run
folder all ranks of a launch agree on.

Kept apart from ``launch.py`` because the ``train`` console script asks it before Hydra
composes the config: importing torch here would add a second to every command, the ones that stop
at a config error included.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from trainrun.errors import TrainrunError
from trainrun.owner import BEFORE_RESULTS as BEFORE_TRAINING


@dataclass(frozen=True)
class Place:
    """This process's rank in a group another launcher started."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str  # "torchrun", "submitit" or "slurm"


def first_host(nodelist: str) -> str | None:
    """The first host of a SLURM hostlist, as ``scontrol show hostnames`` would print it first
    (``gpu-a[01-02,07],cpu3`` -> ``gpu-a01``, ``rack[1-2]-n[01-04]`` -> ``rack1-n01``); None for
    an empty list. Read here rather than by running ``scontrol``, which a task may lack."""
    text, depth, end = nodelist.strip(), 0, None
    for i, char in enumerate(text):  # the list's first entry: up to a comma outside brackets
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    first = text[:end]
    # each bracket's first range, first number (zero padding kept: [01-02] -> 01)
    host = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0].strip(), first)
    return host or None


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or ""
    return first_host(nodes) or "127.0.0.1"


# What ``trainer.devices=N``'s train process tells the processes of its launch (environment):
LAUNCH_ENV = "TRAINRUN_LAUNCH"  # its launch folder (the agent's failures, rank 0's summary); it
# holds the run folder's lock and reports for the workers
SWEEP_JOB_ENV = "TRAINRUN_SWEEP_JOB"  # "1": the workers print as a job of a sweep does


def launched_by_train() -> bool:
    """Whether this process is a worker of ``trainer.devices=N``: ``train`` reports for it."""
    return bool(os.environ.get(LAUNCH_ENV))


def owns_run_folder() -> bool:
    """Whether this process takes the run folder's lock and says what a run says before it
    starts: rank 0 of a launch (or the process alone), not a worker of ``trainer.devices=N``."""
    rank = (launched_place() or ALONE).rank
    return rank == 0 and not launched_by_train()


# The agent of trainer.devices=N writes its workers' failures here (in the launch folder), and
# these are the signals a run stops on, which train forwards and torchrun passes on.
FAILURES = "failures.json"
SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

# This process when no launcher started several: rank 0 of 1.
ALONE = Place(rank=0, world_size=1, local_rank=0, local_world_size=1, launcher="none")


def launched_place() -> Place | None:
    """The rank this process holds when a launcher started several (torchrun, a submitit job
    with several tasks, srun with several tasks); None when it runs alone.

    For submitit and srun, ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` are exported
    for ``init_process_group`` (the first node of the job, a port drawn from the job id).
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env):
        world = int(env.get("WORLD_SIZE", "1"))
        if world > 1:
            return Place(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")),
                         int(env.get("LOCAL_WORLD_SIZE", str(world))), "torchrun")
        return None
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            from submitit.helpers import TorchDistributedEnvironment

            dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            return Place(dist_env.rank, dist_env.world_size, dist_env.local_rank,
                         dist_env.local_world_size, "submitit")
        return None
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))  # set inside srun steps only
    if tasks > 1 and "SLURM_PROCID" in env:
        rank, local = int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0"))
        nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_JOB_NUM_NODES", "1")))
        job_id = int(env.get("SLURM_JOB_ID", "0"))
        env.setdefault("MASTER_ADDR", _slurm_master_addr())
        env.setdefault("MASTER_PORT", str(20000 + job_id % 40000))
        env.update({"RANK": str(rank), "WORLD_SIZE": str(tasks), "LOCAL_RANK": str(local)})
        return Place(rank, tasks, local, max(1, tasks // nodes), "slurm")
    return None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: ``sig`` reaches this process when its parent ends, however it ends (a torchrun
    worker whose agent was killed would otherwise train on alone)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() == 1:  # the parent ended before the line above
        os._exit(128 + int(sig))


def resume_command(run_dir: Path, overrides: list[str] | None = None,
                   place: Place | None = None) -> str:
    """The command that continues this run in its own folder, started the way this one was
    (under torchrun or srun, with the same number of processes; another number resumes too,
    keeping the global batch). Defaults: this job's overrides and place."""
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task)
    place = place or launched_place() or ALONE
    kept = [o for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    args = [f"hydra.run.dir={run_dir}", "resume=auto", *kept]
    nodes = max(1, place.world_size // place.local_world_size)
    if place.launcher == "torchrun" and nodes == 1:
        start = ["torchrun", "--standalone", f"--nproc_per_node={place.local_world_size}", "-m", "trainrun.cli"]
    elif place.launcher == "torchrun":
        start = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={place.local_world_size}",
                 "--rdzv-backend=c10d", "--rdzv-endpoint=HOST:PORT", "--rdzv-id=NEW_ID", "-m", "trainrun.cli"]
    elif place.launcher == "slurm":
        start = ["srun", f"--nodes={nodes}", f"--ntasks-per-node={place.local_world_size}", "train"]
    else:
        start = ["train"]
    command = " ".join([*start, *(shlex.quote(w) for w in args)])
    if place.launcher == "torchrun" and nodes > 1:
        command += "\n  (on every node, with your rendezvous endpoint and a new id)"
    return command


def shared_run_name(needed: str = "hydra.run.dir") -> str | None:
    """A folder name every rank of a torchrun / srun launch computes alike (Hydra's default names
    folders by each process's own clock)."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        run_id = env["TORCHELASTIC_RUN_ID"]
        if run_id in ("", "none"):
            raise TrainrunError(
                "under torchrun every process runs `train`, and they need one run folder; this "
                "launch has no unique run id (torchrun without --standalone or --rdzv-id)",
                key=needed,
                fix=f"use torchrun --standalone, pass --rdzv-id=<unique id>, or give {needed}=<folder> "
                "explicitly",
            )
        return f"torchrun-{run_id}"
    if not env.get("SUBMITIT_EXECUTOR") and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        job = env.get("SLURM_ARRAY_JOB_ID") and f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        return f"slurm-{job or env.get('SLURM_JOB_ID', '0')}-{env.get('SLURM_STEP_ID', '0')}"
    return None


def pin_run_dir(argv: list[str]) -> None:
    """Under torchrun or srun, add ``hydra.run.dir`` / ``hydra.sweep.dir`` overrides (unless the
    user gave them) so that every rank writes into the same folder."""
    run_given, sweep_given = (
        any(a.startswith((f"{key}=", f"++{key}=")) for a in argv[1:]) for key in ("hydra.run.dir", "hydra.sweep.dir")
    )
    _resume_when_restarted(argv)
    # A single run needs only its run folder, a sweep only its sweep folder (torchrun's static
    # rendezvous, --node_rank without --rdzv-id, has no id to name the other after).
    multirun = any(a in ("-m", "--multirun") for a in argv[1:])
    needed = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if run_given and sweep_given:
        return
    try:
        name = shared_run_name(needed)
    except TrainrunError:
        if sweep_given if multirun else run_given:
            return  # no id to name the other folder after, and no need of it
        raise
    if name is None:
        return
    if not run_given:
        _refuse_earlier_run(Path("outputs", name), argv)
        argv.append(f"hydra.run.dir=outputs/{name}")
    if not sweep_given:
        argv.append(f"hydra.sweep.dir=multirun/{name}")


def _resume_when_restarted(argv: list[str]) -> None:
    """torchrun restarts every process of a launch after a failure (``--max-restarts``): the
    restarted processes continue the run from its ``last.pt`` unless ``resume=`` was given."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    if restarts > 0 and not any(a.startswith(("resume=", "+resume=", "++resume=")) for a in argv[1:]):
        argv.append("resume=auto")
        if os.environ.get("RANK") == "0":
            print(f"torchrun restarted the processes (restart {restarts}): resume=auto", file=sys.stderr)


def _refuse_earlier_run(folder: Path, argv: list[str]) -> None:
    """A run id used again (``torchrun --rdzv-id=<id>`` twice) names the same folder: refuse to
    train over an earlier run's results unless asked to continue it.

    Race-free among the ranks of this launch: each asks before joining the process group, and
    rank 0 writes nothing beyond what a run leaves before training (``BEFORE_TRAINING``) until
    every rank has joined."""
    if not folder.is_dir() or "resume=auto" in argv[1:]:
        return
    results = sorted(p.name for p in folder.iterdir() if p.name not in BEFORE_TRAINING)
    if results:
        raise TrainrunError(
            f"this launch's run id names the folder {folder}, which holds an earlier run "
            f"({', '.join(results[:4])}{', ...' if len(results) > 4 else ''}): training there would "
            "overwrite it (a torchrun --rdzv-id used again?)",
            key="hydra.run.dir",
            fix="give torchrun a new --rdzv-id (or use --standalone), continue that run with resume=auto, "
            "or name another folder with hydra.run.dir=<folder>",
        )


@contextlib.contextmanager
def exit_as_rank() -> Iterator[None]:
    """Around the console script: a rank that torchrun/srun started flushes and leaves with
    ``os._exit`` (a plain interpreter exit can abort in gloo's background threads)."""
    if launched_place() is None:
        yield
        return
    code: Any = 0
    try:
        yield
    except SystemExit as exit_:
        code = exit_.code
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        logging.shutdown()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
