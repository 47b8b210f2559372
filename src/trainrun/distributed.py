"""Distributed data parallel: where this process stands, starting workers, and the reductions
and agreements the loop needs under DDP.

A run is one of three kinds, decided by :func:`launch`:

* **alone** (``trainer.devices=1``, no launcher around): ``run_training`` in this process;
* **the parent of workers** (``trainer.devices=N``): torch's elastic launcher starts ``N`` worker
  processes (:func:`_worker`, spawn start method; fork under the joblib launcher), each joins the
  process group (gloo on CPU, nccl on CUDA) and trains its shard; rank 0 returns the summary;
* **one rank of a group someone else started**: ``torchrun`` (``RANK``/``WORLD_SIZE`` in the
  environment), a submitit job with several tasks (``submitit.JobEnvironment``), or ``srun`` with
  several tasks (``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``). Every rank runs Hydra; they agree on
  one run folder through :func:`pin_run_dir`.

Only rank 0 prints and writes (the reporter and checkpoints check ``rank``). A rank that raises
ends the whole group: under the elastic launcher (ours or torchrun's) the agent stops the other
workers; elsewhere gloo's closed connections make the peers' next collective fail. Signals reach
every worker once (the workers live in their own session, and the agent forwards what the
parent receives); all ranks then stop at the same optimizer step because the stop request is
reduced across ranks every :data:`INTERRUPT_CHECK_EVERY` steps (:class:`AgreedInterrupt`).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.ranks import Place, launched_place

log = logging.getLogger("trainrun")

# Under DDP the ranks compare their stop requests (signals) every this many optimizer steps: one
# small all-reduce (about 0.3 ms with gloo on this 2-core machine), so a signal is honoured within
# this many steps. Every rank stops at the same step, which keeps collectives matched.
INTERRUPT_CHECK_EVERY = 10

# Signals the parent of ``trainer.devices`` workers forwards to them (through the elastic agent).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
# How long the parent waits for workers to save and exit after a forwarded signal, then kills.
SHUTDOWN_TIMEOUT_S = 120


# --------------------------------------------------------------------------- where this process stands


# --------------------------------------------------------------------------- the process group


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _device_for(cfg: Any, local_rank: int) -> torch.device:
    from trainrun.build import _text, resolve_device

    return resolve_device(_text(cfg.device.type), local_rank)


@contextlib.contextmanager
def process_group(cfg: Any, rank: int, world_size: int, local_rank: int) -> Iterator[None]:
    """Join the default process group (``env://``: MASTER_ADDR/MASTER_PORT) for the run."""
    device = _device_for(cfg, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=rank, world_size=world_size)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def threads_per_process(local_world_size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def run_as_rank(cfg: Any, run_dir: Path, place: Place) -> dict[str, Any]:
    """Train as one rank of a group that torchrun / submitit / srun started."""
    from trainrun.train import run_training

    _check_devices(cfg, place.local_world_size, place.launcher)
    if not cfg.trainer.threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_process(place.local_world_size))
    with process_group(cfg, place.rank, place.world_size, place.local_rank):
        return run_training(cfg, run_dir, rank=place.rank, world_size=place.world_size)


def _check_devices(cfg: Any, processes: int, launcher: str) -> None:
    devices = int(cfg.trainer.devices)
    if devices not in (1, processes):
        raise TrainrunError(
            f"trainer.devices={devices}, but {launcher} started {processes} processes on this node",
            key="trainer.devices",
            fix=f"leave trainer.devices=1 when {launcher} starts the processes",
        )


# --------------------------------------------------------------------------- starting workers ourselves


def launch(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train as this process's place says: one rank of an outside launch, the parent of
    ``trainer.devices`` workers, or alone. Returns rank 0's summary."""
    place = launched_place()
    if place is not None:
        check_supported(cfg)
        return run_as_rank(cfg, run_dir, place)
    if int(cfg.trainer.devices) > 1:
        check_supported(cfg)
        return start_workers(cfg, run_dir, int(cfg.trainer.devices))
    from trainrun.train import run_training

    return run_training(cfg, run_dir)


def check_supported(cfg: Any) -> None:
    """Settings DDP cannot honour exactly, refused before any process starts."""
    skip = str(getattr(cfg.trainer.on_nonfinite, "value", cfg.trainer.on_nonfinite)) == "skip"
    if skip and int(cfg.trainer.accumulate_grad_batches) > 1:
        raise TrainrunError(
            "trainer.on_nonfinite=skip with trainer.accumulate_grad_batches>1 is not supported "
            "with several processes: skipping the last batch of a window would skip the gradient "
            "all-reduce (DDP syncs on that batch), and the processes' weights would drift apart",
            key="trainer.on_nonfinite",
            fix="use trainer.on_nonfinite=stop, or trainer.accumulate_grad_batches=1, or one process",
        )


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

    device = _device_for(cfg, 0)
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
    from trainrun.train import run_training

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


# --------------------------------------------------------------------------- what the loop needs


def all_reduce_sum(tensor: torch.Tensor, run: Any) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op on one process) and return it."""
    if run.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_finite(loss: torch.Tensor, run: Any) -> bool:
    """Whether the loss is finite on every rank (one sync; used by ``on_nonfinite=skip`` only,
    so that all ranks skip the same batch and DDP's collectives stay matched)."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if run.world_size > 1 and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def micro_batch_weights(sizes: torch.Tensor, k: int, run: Any) -> list[float]:
    """The factor each batch's mean loss is multiplied by before ``backward``.

    An optimizer step sees the batches of its accumulation window (``k`` batches) on every rank;
    DDP averages gradients over ranks. Weighting batch ``i`` by ``local_size_i * world_size /
    samples in its window over all ranks`` makes the step's gradient the mean over exactly the
    samples it saw: ``k`` batches of ``B`` equal one batch of ``kB``, ``N`` ranks with ``B/N``
    equal one process with ``B``, and a short last batch or window counts each sample once.
    All 1.0 for plain single-process training (the loop then skips the multiply).
    """
    local = sizes.tolist()
    totals = all_reduce_sum(sizes.detach().clone(), run).tolist() if run.world_size > 1 else local
    weights: list[float] = []
    for start in range(0, len(local), k):
        window = sum(totals[start:start + k])
        weights += [size * run.world_size / window for size in local[start:start + k]]
    return weights


def gather_rows(tensor: torch.Tensor | None, run: Any) -> torch.Tensor | None:
    """Stack every rank's copy of ``tensor`` (same shape on each) into ``[world_size, ...]`` on
    every rank; the tensor itself on one process. A collective: all ranks must call it."""
    if tensor is None or run.world_size == 1 or not dist.is_initialized():
        return tensor
    rows = [torch.empty_like(tensor) for _ in range(run.world_size)]
    dist.all_gather(rows, tensor.contiguous())
    return torch.stack(rows)


class AgreedInterrupt:
    """A :class:`trainrun.checkpoint.Interrupt` whose stop request all ranks agree on.

    Signals reach the ranks at slightly different steps; a rank that stopped alone would leave
    the others waiting in a collective. Every :data:`INTERRUPT_CHECK_EVERY` optimizer steps the
    ranks reduce their requests (max of the signal numbers), and all stop at that same step.
    """

    def __init__(self, interrupt: Any, run: Any, every: int = INTERRUPT_CHECK_EVERY) -> None:
        self.interrupt, self.run, self.every = interrupt, run, every
        interrupt.quiet = run.rank != 0
        self.agreed: int | None = None
        self._checks = 0
        self._flag = torch.zeros(1, dtype=torch.int64, device=run.device)

    def __enter__(self) -> AgreedInterrupt:
        self.interrupt.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.interrupt.__exit__(*exc)

    def stop_requested(self) -> bool:
        """Called once per optimizer step on every rank (a collective every ``every`` calls)."""
        if self.agreed is None:
            self._checks += 1
            if self._checks % self.every == 0:
                self._flag.fill_(self.interrupt.signum or 0)
                dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
                agreed = int(self._flag.item())
                self.agreed = agreed or None
        return self.agreed is not None

    @property
    def signum(self) -> int | None:
        return self.agreed or self.interrupt.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def rank_row(saved: torch.Tensor | None, run: Any) -> torch.Tensor | None:
    """This rank's row of per-rank values a checkpoint saved under DDP (``[world_size, n]``, see
    :func:`gather_rows`); a 1-D tensor is a single process's. A different number of processes
    cannot continue an unfinished epoch (each rank's batches would differ)."""
    if saved is None:
        return None
    saved_world = saved.shape[0] if saved.dim() == 2 else 1
    if saved_world != run.world_size:
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch by {saved_world} process(es); "
            f"this run has {run.world_size}, which splits the epoch's batches differently",
            key="trainer.devices",
            fix=f"resume with trainer.devices={saved_world} (or from a checkpoint saved at the "
            "end of an epoch, which any number of processes can continue)",
        )
    return saved[run.rank] if saved.dim() == 2 else saved
