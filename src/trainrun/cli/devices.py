"""``trainer.devices=N``: the same command again, under torch's own launcher.

``train`` starts ``torchrun --standalone --nproc-per-node=N`` (through :mod:`trainrun.cli.agent`)
on ``python -m trainrun.cli`` with this job's overrides and its run folder pinned, so every
multi-process run takes the path torchrun users take; torchrun gives each worker a session of
its own, forwards signals, bounds the shutdown and collects each rank's error. ``train`` keeps
what a single run has: it holds the run folder's lock (the workers do not take it), forwards
the signals it receives to the agent, and turns the outcome into rank 0's summary, the first
failure's paragraph, or the state a signal left. Everything the launch writes (the agent's
failures, rank 0's summary, torch's per-rank error files) lives in one temporary folder,
removed however the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from trainrun.cli.failures import launch_error
from trainrun.cli.group import device_for
from trainrun.cli.ranks import FAILURES, LAUNCH_ENV, SIGNALS, SWEEP_JOB_ENV
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import SUMMARY_JSON, written_as

SUMMARY = "summary.json"  # rank 0's summary, in the launch folder
# How long the workers have to save and exit after a forwarded signal, before torchrun kills them.
SHUTDOWN_TIMEOUT_S = 120
# Command-line options that choose the config files (kept for the workers, with their values).
CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
# Hydra overrides a single run of the same job needs (the rest is the sweep's or the launcher's).
KEPT_HYDRA = ("hydra.searchpath", "hydra/job_logging", "hydra/hydra_logging", "hydra.job_logging",
              "hydra.hydra_logging", "hydra.verbose", "hydra.job.env_set")


def python(module: str) -> list[str]:
    """``python -m module`` without the working folder first on ``sys.path`` (a ``torch.py``
    lying there must not shadow torch)."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module]
    return [sys.executable, "-c", f"import sys, runpy; sys.path.pop(0); runpy.run_module({module!r}, "
            "run_name='__main__', alter_sys=True)"]


def worker_overrides(run_dir: Path) -> list[str]:
    """The command line of this job as a single run in ``run_dir``: the config-file options
    given to ``train``, the Hydra overrides a run needs and the job's own overrides. A single
    run even where the job's overrides make a sweep (``hparams_search=lr`` sets
    ``hydra.mode: MULTIRUN``), and one that leaves the job's ``.hydra/`` as this process wrote
    it (a sweep's job number is there)."""
    argv, flags = sys.argv[1:], []
    for i, arg in enumerate(argv):
        if arg.split("=", 1)[0] in CONFIG_FLAGS:
            flags += [arg] if "=" in arg else argv[i:i + 2]
    hydra_cfg = HydraConfig.get()
    kept = [o for o in hydra_cfg.overrides.hydra if o.lstrip("+~").startswith(KEPT_HYDRA)]
    quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")  # Hydra's quoted string: a comma, é
    return [*flags, *kept, *hydra_cfg.overrides.task, f"hydra.run.dir='{quoted}'", "hydra.mode=RUN",
            "hydra.output_subdir=null"]


def run_devices(cfg: Any, run_dir: Path, devices: int) -> dict[str, Any]:
    """Run ``devices`` workers under torchrun; rank 0's summary."""
    if device_for(cfg, 0).type == "cuda" and devices > torch.cuda.device_count():
        raise TrainrunError(
            f"trainer.devices={devices}, but this machine has {torch.cuda.device_count()} CUDA device(s)",
            key="trainer.devices", fix=f"use trainer.devices={torch.cuda.device_count()} or fewer")
    folder = Path(tempfile.mkdtemp(prefix="trainrun-launch-"))
    sweep_job = HydraConfig.get().mode == RunMode.MULTIRUN and not os.environ.get("SUBMITIT_EXECUTOR")
    env = {**os.environ, LAUNCH_ENV: str(folder), SWEEP_JOB_ENV: "1" if sweep_job else ""}
    command = [*python("trainrun.cli.agent"), "--standalone", f"--nproc-per-node={devices}",
               "--max-restarts=0", "--monitor-interval=0.1", f"--log-dir={folder / 'logs'}",
               f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "--no-python",
               *python("trainrun.cli"), *worker_overrides(run_dir)]
    before = written_as(run_dir / SUMMARY_JSON)  # the run folder's summary.json before the launch
    agent = subprocess.Popen(command, env=env, start_new_session=True)  # our signals only
    try:
        with _forwarded(agent) as received:
            code = agent.wait()
        now = written_as(run_dir / SUMMARY_JSON)
        return _outcome(folder, code, received, devices, cfg.trainer.get("ddp_timeout_s"),
                        completed=run_dir / SUMMARY_JSON if now not in (None, before) else None)
    finally:
        if agent.poll() is None:  # this process is leaving abnormally: the workers with it
            agent.kill()
            agent.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _forwarded(agent: subprocess.Popen[bytes]) -> Iterator[list[int]]:
    """While the agent runs, the signals this process gets go to it (a terminal's Ctrl-C, a
    ``kill`` of ``train``, a cluster's notice); the handlers before (submitit's) come back
    after. Yields the signals received, in order."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.pid, signum)

    sigs = [getattr(signal, name) for name in SIGNALS]
    previous = {sig: signal.signal(sig, forward) for sig in sigs}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _outcome(folder: Path, code: int, received: list[int], devices: int,
             timeout_s: float | None, completed: Path | None = None) -> dict[str, Any]:
    """Rank 0's summary (done, or interrupted by a signal after saving), else the error. Rank 0
    writes it once ``train.run`` returned, past the run's last collective: its status stands
    whatever the agent's exit says (a signal the agent took as the workers finished: 128+N).
    ``completed``: the run folder's ``summary.json`` rank 0 wrote during this launch, which
    stands for a run that completed when the signal ended rank 0 before its summary came back."""
    summary_file = folder / SUMMARY
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    if summary is not None:
        return summary
    failures_file = folder / FAILURES
    if failures_file.is_file() and not received:
        failures = {int(rank): f for rank, f in json.loads(failures_file.read_text()).items()}
        raise launch_error(failures, devices, timeout_s)
    if completed is not None and received:  # the signal came after the run's end
        with contextlib.suppress(OSError, ValueError):
            written = json.loads(completed.read_text())
            if isinstance(written, dict) and written.get("status") == "completed":
                return written
    name = signal.Signals(received[-1]).name if received else None
    if name == "SIGINT" and received.count(signal.SIGINT) > 1:
        raise KeyboardInterrupt  # main says: stopped at once, nothing saved
    how = f"stopped by {name}" if name else f"torch's launcher ended with status {code}"
    raise TrainrunError(
        f"{how} before the workers saved the run's state; checkpoints/last.pt, if present, holds the "
        "last state saved before",
        exit_code=128 + received[-1] if received else TRAINING_ERROR)
