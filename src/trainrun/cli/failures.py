"""A DDP launch that fails: ended within seconds, and reported as one paragraph naming the process
that caused it.

The workers of ``trainer.devices=N`` and their parent talk through files in a private control
folder (:class:`Control`): each worker records its pid, then either ``done-<rank>`` or its error
(``error-<rank>.json``: the paragraph, whether a collective timed out, when). From these:

* :class:`Watchdog` (in the parent): once one worker has failed, the others get
  :data:`GRACE_S` seconds to end (a peer's death breaks their next collective at once), then are
  killed. Without it a process that hangs would keep the job alive for another 30 s (the elastic
  agent's own stop timeout), and one stuck outside Python would not even see the agent's SIGTERM;
* :func:`worker_error` (in the parent): the cause, not its echoes. A process that died without
  an error (``os._exit``, SIGKILL, a crash in native code) comes first, since the others only saw
  their peer vanish; then the earliest error that is not a lost connection; a collective that
  timed out names the processes that were still running (hung) instead of the one that waited;
* :func:`reworded` (in every rank, torchrun's and srun's too): a collective timeout becomes a
  paragraph about ``trainer.ddp_timeout_s`` instead of gloo's socket message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainrun.errors import TRAINING_ERROR, TrainrunError

if TYPE_CHECKING:  # torch's launcher is imported only where workers start
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

# Once a worker failed, how long the others may take to end by themselves before they are killed.
GRACE_S = 5.0
# A collective gave up waiting: gloo ("Timed out waiting 20000ms for recv operation to complete"),
# nccl's watchdog ("Watchdog caught collective operation timeout"), the rendezvous store.
_TIMEOUT = re.compile(r"timed out waiting|collective operation timeout|socket timeout|wait timeout", re.I)
# The echo of another process's death in a collective.
_PEER_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|connection refused", re.I)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _matching(err: BaseException, pattern: re.Pattern[str]) -> BaseException | None:
    """The innermost error of ``err``'s chain whose text matches (the backend's own)."""
    found = [e for e in _chain(err) if pattern.search(str(e))]
    return found[-1] if found else None


def _plain(err: BaseException) -> str:
    """The first line of a backend's message without its ``[file.cc:78]`` prefix."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text)


def timeout_text(seconds: float | None) -> str:
    if seconds is None:
        return "torch's default time (trainer.ddp_timeout_s=null: 30 min with gloo, 10 with nccl)"
    return f"{seconds:g} s (trainer.ddp_timeout_s={seconds:g})"


def reworded(err: TrainrunError, timeout_s: float | None) -> TrainrunError:
    """``err`` itself, unless a collective timed out underneath: then a paragraph saying so,
    with the key that sets the time. (This process cannot see which other one hung.)"""
    timed_out = _matching(err, _TIMEOUT)
    if timed_out is None or err.key == "trainer.ddp_timeout_s":
        return err
    new = TrainrunError(
        f"{_what(err.message)} failed: a collective waited {timeout_text(timeout_s)} for the other "
        f"processes and gave up ({_plain(timed_out)}); another process stopped responding: it "
        "hangs, or is that much slower",
        key="trainer.ddp_timeout_s",
        fix="find what the other process was doing (its own error, a deadlock or a stalled read in "
        "your code or data); if it is only slower (a long first step, a slow disk), raise "
        "trainer.ddp_timeout_s",
        exit_code=err.exit_code,
    )
    new.__cause__ = err
    return new


def _what(message: str) -> str:
    """The phase of a boundary's paragraph (``training (epoch 1, batch 4)``)."""
    return message.partition(" failed: ")[0] if " failed: " in message else "a collective"


class Control:
    """The control folder a parent shares with its ``trainer.devices`` workers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record_pid(self, rank: int) -> None:
        (self.folder / f"pid-{rank}").write_text(str(os.getpid()))

    def record_done(self, rank: int) -> None:
        (self.folder / f"done-{rank}").touch()

    def record_error(self, rank: int, err: TrainrunError) -> None:
        timed_out = _matching(err, _TIMEOUT)
        info = {"message": err.message, "key": err.key, "fix": err.fix, "exit_code": err.exit_code,
                "time": time.time(), "what": _what(err.message),
                "timed_out": _plain(timed_out) if timed_out is not None else None,
                "peer_lost": _matching(err, _PEER_LOST) is not None}
        tmp = self.folder / f".error-{rank}.json"
        tmp.write_text(json.dumps(info))
        tmp.replace(self.folder / f"error-{rank}.json")  # whole or absent for the parent

    def pids(self) -> dict[int, int]:
        found = {}
        for path in self.folder.glob("pid-*"):
            with contextlib.suppress(ValueError, OSError):
                found[int(path.name[4:])] = int(path.read_text())
        return found

    def errors(self) -> dict[int, dict[str, Any]]:
        found = {}
        for path in self.folder.glob("error-*.json"):
            with contextlib.suppress(ValueError, OSError):
                found[int(path.name[6:-5])] = json.loads(path.read_text())
        return found

    def done(self, rank: int) -> bool:
        return (self.folder / f"done-{rank}").exists()


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from ``/proc/<pid>/stat``; None when the process is gone. Read
    without reaping: the elastic agent must still collect its workers' exit statuses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _running(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state[0] != "Z" and state[1] == os.getpid()


class Watchdog:
    """In the parent, around the elastic launch: once a worker has failed (its error recorded, or
    ended without ``done``), kill the workers still running :data:`GRACE_S` seconds later.
    ``killed`` lists their ranks. Does nothing where ``/proc`` is absent."""

    def __init__(self, control: Control, grace: float = GRACE_S, every: float = 0.05) -> None:
        self.control, self.grace, self.every = control, grace, every
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="trainrun-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        if Path("/proc/self/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _failed(self) -> bool:
        if self.control.errors():
            return True
        return any(not _running(pid) and not self.control.done(rank)
                   for rank, pid in self.control.pids().items())

    def _watch(self) -> None:
        failed_at = None
        while not self._stop.wait(self.every):
            if failed_at is None:
                failed_at = time.monotonic() if self._failed() else None
            elif time.monotonic() - failed_at >= self.grace:
                for rank, pid in sorted(self.control.pids().items()):
                    if _running(pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        self.killed.append(rank)
                return


def _ranks(ranks: list[int]) -> str:
    return f"process {ranks[0]}" if len(ranks) == 1 else "processes " + ", ".join(map(str, ranks))


def _died(rank: int, failure: ProcessFailure, devices: int) -> TrainrunError:
    """A worker that ended without an error of its own: killed, or an exit no Python error made."""
    if failure.exitcode < 0:
        name = failure.signal_name()
        how = f"was killed by {name}" if name != "<N/A>" else f"was killed by signal {-failure.exitcode}"
        hint = (" (sent by another program, or by the kernel when memory ran out: see `dmesg`)"
                if name == "SIGKILL" else "")
        return TrainrunError(
            f"process {rank} of {devices} {how}{hint}; the other processes were stopped",
            fix="find what ended it; resume=auto continues from the last checkpoint",
            exit_code=TRAINING_ERROR,
        )
    return TrainrunError(
        f"process {rank} of {devices} exited with status {failure.exitcode} without reporting an error "
        "(an os._exit() or sys.exit() in your code, or a crash in native code); the other processes "
        "were stopped",
        fix="find what ended it; resume=auto continues from the last checkpoint",
        exit_code=TRAINING_ERROR,
    )


def _recorded(failure: ProcessFailure) -> dict[str, Any] | None:
    """torch's own error record of a worker (an error raised outside trainrun's boundary), or
    None when it left none (``{"message": "<NONE>"}``: killed, or ``os._exit``)."""
    data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
    record = data.get("message")
    return record if isinstance(record, dict) and record.get("message") else None


def worker_error(err: ChildFailedError, control: Control, devices: int, killed: list[int],
                 timeout_s: float | None) -> TrainrunError:
    """The one paragraph for a failed launch (``err``: torch's ``ChildFailedError``)."""
    errors = control.errors()
    died = {rank: f for rank, f in err.failures.items()
            if rank not in errors and rank not in killed and _recorded(f) is None}
    if died:  # the others only saw this one vanish
        rank = min(died, key=lambda r: (died[r].timestamp, r))
        return _died(rank, died[rank], devices)
    if errors:
        rank = min(errors, key=lambda r: (errors[r]["peer_lost"], errors[r]["time"], r))
        info = errors[rank]
        if info["timed_out"] and killed:
            hung = _ranks(killed)
            return TrainrunError(
                f"{hung} of {devices} stopped responding: process {rank} waited "
                f"{timeout_text(timeout_s)} for it in a collective during {info['what']} and gave up "
                f"({info['timed_out']}); {hung} was still running {GRACE_S:g} s later and was killed",
                key="trainer.ddp_timeout_s",
                fix=f"find where {hung} stalls (a deadlock, an endless loop, a stalled read in your "
                "code or data); if its steps are only slower, raise trainer.ddp_timeout_s",
                exit_code=TRAINING_ERROR,
            )
        prefix = f"(process {rank} of {devices}) " if info["exit_code"] == TRAINING_ERROR else ""
        return TrainrunError(prefix + info["message"], key=info["key"], fix=info["fix"],
                             exit_code=info["exit_code"])
    rank, failure = err.get_first_failure()  # raised outside trainrun's boundary
    record = _recorded(failure) or {}
    message = str(record.get("message", "")) or f"exit status {failure.exitcode}"
    trace = record.get("extraInfo", {}).get("py_callstack", "")
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if trace and full:
        message = f"{message}\n{trace.rstrip()}"
    return TrainrunError(
        f"process {rank} of {devices} failed: {message}",
        fix="HYDRA_FULL_ERROR=1 shows that process's traceback" if trace and not full else None,
        exit_code=TRAINING_ERROR,
    )
