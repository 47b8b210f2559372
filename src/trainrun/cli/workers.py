"""``trainer.devices=N``: start N worker processes with torch's elastic launcher, and bring
back rank 0's summary, the first failing rank's error, or the state a signal left.

Workers start their own session so that only the parent receives a terminal's signals and the
elastic agent forwards each one once (a first Ctrl-C stops every rank after a step, a second at
once). Each worker leaves with ``os._exit`` a few seconds after returning: a plain interpreter
exit can abort in gloo's background threads, and an agent shutting down after a signal reads no
return values. A failure is bounded and reported by :mod:`trainrun.cli.failures`; the signal
handlers the agent replaced (submitit's requeue handler among them) are put back after it, and
its temporary files (error records, logs) live in one folder removed however the run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from omegaconf import DictConfig

from trainrun.cli.failures import Control, Watchdog, reworded, worker_error
from trainrun.cli.group import device_for, process_group, threads_per_process
from trainrun.commands import train
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.report.echo import guard_console, mark_rank

# Under DDP the ranks compare their stop requests (signals) every this many optimizer steps: one
# small all-reduce (about 0.3 ms with gloo on this 2-core machine), so a signal is honoured within
# this many steps. Every rank stops at the same step, which keeps collectives matched.
INTERRUPT_CHECK_EVERY = 10

# Signals the parent of ``trainer.devices`` workers forwards to them (through the elastic agent).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
# How long the parent waits for workers to save and exit after a forwarded signal, then kills.
SHUTDOWN_TIMEOUT_S = 120



def _hydra_context() -> tuple[dict[Any, Any] | None, dict[Any, Any] | None, str]:
    """What a worker needs of the parent's Hydra job: its config (so ``HydraConfig`` works there
    too), its logging setup (console and the run folder's log) and the launcher in use.

    The config travels as plain containers: under submitit its launcher node is typed by a class
    of Hydra's plugin package that pickle cannot find again (a PicklingError in every worker)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return None, None, ""
        hydra_cfg = HydraConfig.get()
        logging_cfg = OmegaConf.to_container(hydra_cfg.job_logging, resolve=True)
        launcher = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg.launcher else ""
        plain = OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False)
        assert isinstance(plain, dict) and isinstance(logging_cfg, dict)  # DictConfigs give dicts
        return plain, logging_cfg, launcher
    except Exception:  # no Hydra around (tests, library use)
        return None, None, ""


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """The elastic agent installs its handlers for the forwarded signals and never puts the old
    ones back; put them back (submitit's SIGUSR2 handler, which requeues the job, among them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [getattr(signal, name) for name in FORWARDED_SIGNALS.split(",")]
    handlers = {sig: signal.getsignal(sig) for sig in sigs}
    env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        if env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = env


@contextlib.contextmanager
def _temporary_files_in(folder: Path) -> Iterator[None]:
    """torch.multiprocessing names a ``pytorch-errorfile-*.pickle`` per worker in the temporary
    folder and never removes the ones a failing worker wrote: have them made in ``folder``.
    (This process only launches meanwhile; the workers keep the usual temporary folder.)"""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def start_workers(cfg: DictConfig, run_dir: Path, devices: int) -> dict[str, Any]:
    """Start ``devices`` workers with torch's elastic launcher and return rank 0's summary."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    device = device_for(cfg, 0)
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise TrainrunError(
            f"trainer.devices={devices}, but this machine has {torch.cuda.device_count()} CUDA device(s)",
            key="trainer.devices",
            fix=f"use trainer.devices={torch.cuda.device_count()} or fewer",
        )
    hydra_cfg, logging_cfg, launcher = _hydra_context()
    # Spawn needs the worker importable (it is: this module). Inside joblib's worker processes
    # spawn fails to bootstrap; fork works there.
    start_method = "fork" if "joblib" in launcher else "spawn"
    # The control files and torch's per-worker error files (torch would make a torchelastic_*
    # folder of its own): one temporary folder, removed however the run ends.
    control = Control(Path(tempfile.mkdtemp(prefix="trainrun-ddp-")))
    started = time.time()
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=devices,
        run_id=f"trainrun-{os.getpid()}-{time.time_ns()}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0",
        max_restarts=0, monitor_interval=0.1, start_method=start_method,
        signals_to_handle=FORWARDED_SIGNALS, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        logs_specs=DefaultLogsSpecs(log_dir=str(control.folder / "elastic")),
    )
    # The agent logs each failure with its traceback; trainrun reports the first one itself.
    quiet = {name: logger for name, logger in logging.root.manager.loggerDict.items()
             if name.startswith(("torch.distributed", "torch.multiprocessing")) and isinstance(logger, logging.Logger)}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.CRITICAL)
    watchdog = Watchdog(control)
    try:
        with _own_signal_handlers(), _temporary_files_in(control.folder), watchdog:
            results = elastic_launch(config, _worker)(
                cfg, str(run_dir), hydra_cfg, logging_cfg, str(control.folder))
        if results.get(0) is not None:
            return results[0]
        return _interrupted_summary(run_dir, None, started)  # workers got a signal directly (srun)
    except ChildFailedError as err:
        raise worker_error(err, control, devices, watchdog.killed,
                           cfg.trainer.get("ddp_timeout_s")) from None
    except SignalException as err:
        # The agent forwarded the signal to the workers and waited for them: rank 0 saved
        # last.pt and wrote the summary of the interrupted run.
        at_once = _stop_workers(control, err.sigval)
        return _interrupted_summary(run_dir, signal.Signals(err.sigval), started, at_once)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
        shutil.rmtree(control.folder, ignore_errors=True)


def _interrupted_summary(run_dir: Path, signum: signal.Signals | None, since: float,
                         at_once: bool = False) -> dict[str, Any]:
    """The summary rank 0 wrote (after ``since``) when a signal stopped the workers."""
    summary_file = run_dir / "summary.json"
    if summary_file.is_file() and summary_file.stat().st_mtime >= since:
        summary = json.loads(summary_file.read_text())
        if summary.get("status") == "interrupted":
            return summary
    name = signum.name if signum else "a signal"
    how = f"stopped at once by a second {name}" if at_once else f"stopped by {name}"
    raise TrainrunError(
        f"{how} before the workers saved the run's state; checkpoints/last.pt, if present, "
        "holds the last state saved before",
        exit_code=128 + int(signum) if signum else TRAINING_ERROR,
    )


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # the workers are this process's children
    except ChildProcessError:
        return False  # reaped already
    return done == 0


def _stop_workers(control: Control, signum: int, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
    """When the agent's wait for the workers was cut short by another signal: forward that
    signal too (a second Ctrl-C stops them at once, as without DDP), forward any further ones,
    and wait for the workers to end. Returns whether any worker was still running."""
    alive = [pid for pid in control.pids().values() if _alive(pid)]
    if not alive:
        return False

    def forward(sig: int, frame: FrameType | None) -> None:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    names = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
    previous = {sig: signal.signal(sig, forward) for sig in (getattr(signal, n) for n in names)}
    try:
        forward(signum, None)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        forward(signal.SIGKILL, None)
        for pid in alive:
            _alive(pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return True


def _setup_worker_logging(rank: int, logging_cfg: dict[str, Any] | None) -> None:
    import logging.config

    if rank == 0 and logging_cfg:
        guard_console()  # before the config takes sys.stdout: a closed pipe ends quietly
        logging.config.dictConfig(logging_cfg)
    else:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        mark_rank(rank)  # "[rank 1] ..." (the rank, not the pid), Python warnings included


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the process that started it dies (a parent killed by
    SIGKILL or the OOM killer would otherwise leave it training, alone, in the run folder)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _worker(cfg: DictConfig, run_dir: str, hydra_cfg: dict[str, Any] | None,
            logging_cfg: dict[str, Any] | None, control_dir: str) -> dict[str, Any] | None:
    """One DDP worker (started by :func:`start_workers`): join the group, train, leave."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(TRAINING_ERROR)
    # Own session: the terminal's Ctrl-C reaches the parent only, which forwards it once, so a
    # first Ctrl-C stops gracefully everywhere and a second stops at once (as without DDP).
    with contextlib.suppress(OSError):
        os.setsid()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    control = Control(Path(control_dir))
    control.record_pid(rank)
    _setup_worker_logging(rank, logging_cfg)
    if hydra_cfg is not None:
        from hydra.conf import HydraConf
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        with contextlib.suppress(Exception):  # typed again: HydraConfig takes only a HydraConf
            typed = OmegaConf.merge(OmegaConf.structured(HydraConf), hydra_cfg["hydra"])
            HydraConfig.instance().set_config(OmegaConf.create({"hydra": typed}))
    if not cfg.trainer.threads:
        torch.set_num_threads(threads_per_process(local_world))
    try:
        with process_group(cfg, rank, world, local_rank):
            summary = train.run(cfg, Path(run_dir), rank=rank, world_size=world)
    except TrainrunError as err:
        err = reworded(err, cfg.trainer.get("ddp_timeout_s"))
        control.record_error(rank, err)
        raise err
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    control.record_done(rank)
    _leave_soon()
    return summary if rank == 0 else None


def _leave_soon(seconds: float = 3.0) -> None:
    """After returning, a worker waits until the agent has read every worker's return value. An
    agent shutting down after forwarding a signal reads none, and would wait for the workers to
    exit until its timeout. So leave a few seconds after returning, read or not (the value is
    already written to the agent's pipe, and rank 0 wrote summary.json)."""

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()


