"""``trainer.devices=N``: start N worker processes with torch's elastic launcher, and bring
back rank 0's summary, the first failing rank's error, or the state a signal left.

Workers start their own session so that only the parent receives a terminal's signals and the
elastic agent forwards each one once (a first Ctrl-C stops every rank after a step, a second at
once). Each worker leaves with ``os._exit`` a few seconds after returning: a plain interpreter
exit can abort in gloo's background threads, and an agent shutting down after a signal reads no
return values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from trainrun.cli.group import device_for, process_group, threads_per_process
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.train import run_training

# Under DDP the ranks compare their stop requests (signals) every this many optimizer steps: one
# small all-reduce (about 0.3 ms with gloo on this 2-core machine), so a signal is honoured within
# this many steps. Every rank stops at the same step, which keeps collectives matched.
INTERRUPT_CHECK_EVERY = 10

# Signals the parent of ``trainer.devices`` workers forwards to them (through the elastic agent).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
# How long the parent waits for workers to save and exit after a forwarded signal, then kills.
SHUTDOWN_TIMEOUT_S = 120



def _hydra_context() -> tuple[Any, dict[str, Any] | None, str]:
    """What a worker needs of the parent's Hydra job: its config (so ``HydraConfig`` works there
    too), its logging setup (console and the run folder's log) and the launcher in use."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return None, None, ""
        hydra_cfg = HydraConfig.get()
        logging_cfg = OmegaConf.to_container(hydra_cfg.job_logging, resolve=True)
        launcher = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg.launcher else ""
        return HydraConfig.instance().cfg, logging_cfg, launcher  # type: ignore[return-value]
    except Exception:  # no Hydra around (tests, library use)
        return None, None, ""


def start_workers(cfg: Any, run_dir: Path, devices: int) -> dict[str, Any]:
    """Start ``devices`` workers with torch's elastic launcher and return rank 0's summary."""
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
    control = Path(tempfile.mkdtemp(prefix="trainrun-ddp-"))
    started = time.time()
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=devices,
        run_id=f"trainrun-{os.getpid()}-{time.time_ns()}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0",
        max_restarts=0, monitor_interval=0.1, start_method=start_method,
        signals_to_handle=FORWARDED_SIGNALS, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    # The agent logs each failure with its traceback; trainrun reports the first one itself.
    quiet = {name: logger for name, logger in logging.root.manager.loggerDict.items()
             if name.startswith(("torch.distributed", "torch.multiprocessing")) and isinstance(logger, logging.Logger)}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, _worker)(cfg, str(run_dir), hydra_cfg, logging_cfg, str(control))
        if results.get(0) is not None:
            return results[0]
        return _interrupted_summary(run_dir, None, started)  # workers got a signal directly (srun)
    except ChildFailedError as err:
        raise _worker_error(err, control, devices) from None
    except SignalException as err:
        # The agent forwarded the signal to the workers and waited for them: rank 0 saved
        # last.pt and wrote the summary of the interrupted run.
        at_once = _stop_workers(control, err.sigval)
        return _interrupted_summary(run_dir, signal.Signals(err.sigval), started, at_once)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
        for path in control.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            control.rmdir()


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


def _stop_workers(control: Path, signum: int, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
    """When the agent's wait for the workers was cut short by another signal: forward that
    signal too (a second Ctrl-C stops them at once, as without DDP), forward any further ones,
    and wait for the workers to end. Returns whether any worker was still running."""
    pids = [int(path.read_text()) for path in control.glob("pid-*")]
    alive = [pid for pid in pids if _alive(pid)]
    if not alive:
        return False

    def forward(sig: int, frame: Any) -> None:
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


def _worker_error(err: Any, control: Path, devices: int) -> TrainrunError:
    """The first failing worker's error, as the user should see it."""
    rank, failure = err.get_first_failure()
    saved = control / f"error-{rank}.json"
    if saved.is_file():
        info = json.loads(saved.read_text())
        prefix = f"(process {rank} of {devices}) " if info["exit_code"] == TRAINING_ERROR else ""
        return TrainrunError(prefix + info["message"], key=info["key"], fix=info["fix"],
                             exit_code=info["exit_code"])
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    if failure.signal_name() != "<N/A>" and failure.error_file_data == {}:
        message = f"it was killed by {failure.signal_name()}"
    trace = ""
    if isinstance(failure.error_file_data, dict):
        trace = failure.error_file_data.get("message", {}).get("extraInfo", {}).get("py_callstack", "")
    if trace and os.environ.get("HYDRA_FULL_ERROR") == "1":
        message = f"{message}\n{trace.rstrip()}"
    return TrainrunError(
        f"process {rank} of {devices} failed: {message}",
        fix=None if not trace or os.environ.get("HYDRA_FULL_ERROR") == "1"
        else "HYDRA_FULL_ERROR=1 shows that process's traceback",
        exit_code=TRAINING_ERROR,
    )


def _setup_worker_logging(rank: int, logging_cfg: dict[str, Any] | None) -> None:
    import logging.config

    if rank == 0 and logging_cfg:
        logging.config.dictConfig(logging_cfg)
    else:
        logging.basicConfig(level=logging.WARNING, format="[rank %(process)d] %(message)s")


def _worker(cfg: Any, run_dir: str, hydra_cfg: Any, logging_cfg: dict[str, Any] | None,
            control: str) -> dict[str, Any] | None:
    """One DDP worker (started by :func:`start_workers`): join the group, train, leave."""
    # Own session: the terminal's Ctrl-C reaches the parent only, which forwards it once, so a
    # first Ctrl-C stops gracefully everywhere and a second stops at once (as without DDP).
    with contextlib.suppress(OSError):
        os.setsid()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    Path(control, f"pid-{rank}").write_text(str(os.getpid()))
    _setup_worker_logging(rank, logging_cfg)
    if hydra_cfg is not None:
        from hydra.core.hydra_config import HydraConfig

        with contextlib.suppress(Exception):
            HydraConfig.instance().set_config(hydra_cfg)
    if not cfg.trainer.threads:
        torch.set_num_threads(threads_per_process(local_world))
    try:
        with process_group(cfg, rank, world, local_rank):
            summary = run_training(cfg, Path(run_dir), rank=rank, world_size=world)
    except TrainrunError as err:
        Path(control, f"error-{rank}.json").write_text(json.dumps(
            {"message": err.message, "key": err.key, "fix": err.fix, "exit_code": err.exit_code}
        ))
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
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


