"""A multi-process run that fails: each process's error as one paragraph that says what happened
in the group, recorded where torchrun collects it, and the one paragraph ``trainer.devices=N``
prints for the whole launch.

* :func:`reworded` (in every rank): a collective that timed out becomes a paragraph about
  ``trainer.ddp_timeout_s``, one that lost its peer says that another process ended first,
  instead of gloo's socket message blamed on the model;
* :func:`record` (in every rank under torchrun): the paragraph, written to torchrun's per-rank
  error file (``TORCHELASTIC_ERROR_FILE``, torch's format plus trainrun's fields);
* :func:`launch_error` (in ``train``, from the agent's failures): the cause, not its echoes. A
  process that died without an error (``os._exit``, SIGKILL, a crash in native code) comes first,
  since the others only saw their peer vanish; then the earliest error that is not a lost
  connection; a collective that timed out names the process that hung.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import atomic_write_json

# Once a process of the group failed, how long the others may take to end by themselves.
GRACE_S = 5.0
# A collective gave up waiting: gloo ("Timed out waiting 20000ms for recv operation to complete"),
# nccl's watchdog ("Watchdog caught collective operation timeout"), the rendezvous store.
_TIMEOUT = re.compile(r"timed out waiting|collective operation timeout|socket timeout|wait timeout", re.I)
# The echo of another process's death in a collective.
_PEER_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|connection refused", re.I)


def _matching(err: BaseException, pattern: re.Pattern[str]) -> BaseException | None:
    """The innermost error of ``err``'s chain whose text matches (the backend's own)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    found = [e for e in chain if pattern.search(str(e))]
    return found[-1] if found else None


def _plain(err: BaseException) -> str:
    """The first line of a backend's message without its ``[file.cc:78]`` prefix."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text)


def timeout_text(seconds: float | None) -> str:
    if seconds is None:
        return "torch's default time (trainer.ddp_timeout_s=null: 30 min with gloo, 10 with nccl)"
    return f"{seconds:g} s (trainer.ddp_timeout_s={seconds:g})"


def _what(message: str) -> str:
    """The phase of a boundary's paragraph (``training (epoch 1, batch 4)``)."""
    return message.partition(" failed: ")[0] if " failed: " in message else "a collective"


def reworded(err: TrainrunError, timeout_s: float | None) -> TrainrunError:
    """``err`` itself, unless a collective timed out or lost its peer underneath: then a
    paragraph saying so. (This process cannot see which other one hung or died.)"""
    timed_out, lost = _matching(err, _TIMEOUT), _matching(err, _PEER_LOST)
    if timed_out is not None and err.key != "trainer.ddp_timeout_s":
        new = TrainrunError(
            f"{_what(err.message)} failed: a collective waited {timeout_text(timeout_s)} for the other "
            f"processes and gave up ({_plain(timed_out)}); another process stopped responding: it "
            "hangs, or is that much slower",
            key="trainer.ddp_timeout_s",
            fix="find what the other process was doing (its own error, a deadlock or a stalled read in "
            "your code or data); if it is only slower (a long first step, a slow disk), raise "
            "trainer.ddp_timeout_s",
            exit_code=err.exit_code)
    elif lost is not None and timed_out is None:
        new = TrainrunError(
            f"{_what(err.message)} failed: another process of the group ended or lost its connection "
            f"({_plain(lost)}); this one stopped with it",
            fix="the other processes' output says why the first one ended; resume=auto continues from "
            "the last checkpoint", exit_code=err.exit_code)
    else:
        return err
    new.__cause__ = err
    return new


def record(err: TrainrunError, *, hung: bool = False) -> None:
    """Write ``err`` where torchrun collects this rank's error (nothing outside torchrun)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    timed_out = _matching(err, _TIMEOUT)
    info: dict[str, Any] = {"message": err.message, "key": err.key, "fix": err.fix, "exit_code": err.exit_code,
            "time": time.time(), "what": _what(err.message), "hung": hung,
            "timed_out": _plain(timed_out) if timed_out is not None else None,
            "peer_lost": _matching(err, _PEER_LOST) is not None}
    # torch's own format (message, timestamp) and trainrun's fields, written whole or not at all:
    # the agent parses every failed rank's file and stops on a half-written one (a rank ended by
    # the agent's SIGTERM while writing), losing every rank's report.
    atomic_write_json(path, {"message": str(err), "timestamp": int(info["time"]), "trainrun": info})


def _ranks(ranks: list[int]) -> str:
    return f"process {ranks[0]}" if len(ranks) == 1 else "processes " + ", ".join(map(str, ranks))


def launch_error(failures: dict[int, dict[str, Any]], devices: int, timeout_s: float | None) -> TrainrunError:
    """The one paragraph for a failed launch. ``failures``: rank -> the agent's ``exitcode``,
    ``signal`` and the rank's error file ``data`` (see :mod:`trainrun.cli.agent`)."""
    ours = {r: f["data"]["trainrun"] for r, f in failures.items()
            if isinstance((f.get("data") or {}).get("trainrun"), dict)}
    hung = sorted(r for r, info in ours.items() if info["hung"])
    errors = {r: info for r, info in ours.items() if not info["hung"]}
    died = {r: f for r, f in failures.items() if r not in ours}
    stopped: list[int] = []  # torchrun's SIGTERM to the others after a rank's error: echoes, not the
    if errors and all(f.get("signal") == "SIGTERM" for f in died.values()):  # cause (but see below)
        stopped, died = sorted(died), {}
    fix = "find what ended it; resume=auto continues from the last checkpoint"
    if died:  # the others only saw this one vanish
        # torchrun stops the others with SIGTERM: a rank ended by it is an echo of the cause
        rank = min(died, key=lambda r: (died[r].get("signal") == "SIGTERM", died[r].get("time", 0), r))
        code, name = died[rank]["exitcode"], died[rank].get("signal", "")
        if code < 0:
            how = f"was killed by {name}" if name and name != "<N/A>" else f"was killed by signal {-code}"
            hint = (" (sent by another program, or by the kernel when memory ran out: see `dmesg`)"
                    if name == "SIGKILL" else "")
            return TrainrunError(f"process {rank} of {devices} {how}{hint}; the other processes were stopped",
                                 fix=fix, exit_code=TRAINING_ERROR)
        return TrainrunError(
            f"process {rank} of {devices} exited with status {code} without reporting an error (an "
            "os._exit() or sys.exit() in your code, or a crash in native code); the other processes were "
            "stopped", fix=fix, exit_code=TRAINING_ERROR)
    if not errors:
        return TrainrunError(f"{_ranks(hung or sorted(failures))} of {devices} failed without a message",
                             fix=fix, exit_code=TRAINING_ERROR)
    quit_early = sorted(set(range(devices)) - set(failures))  # exit 0: torchrun counts no failure
    if quit_early and all(info["peer_lost"] for info in errors.values()):
        return TrainrunError(
            f"{_ranks(quit_early)} of {devices} exited with status 0 before the run ended (an os._exit(0) in "
            "your code, or a library that ended the process), and the others lost their connection to it",
            fix=fix, exit_code=TRAINING_ERROR)
    rank = min(errors, key=lambda r: (errors[r]["peer_lost"], errors[r]["time"], r))
    info = errors[rank]
    if info["timed_out"] and (hung or stopped):  # who it waited for: a rank that said so, else one
        who = _ranks(hung or stopped)  # torchrun stopped before its own signal handling was set up
        end = f"still running {GRACE_S:g} s later and was killed" if hung else "stopped by torchrun"
        return TrainrunError(
            f"{who} of {devices} stopped responding: process {rank} waited {timeout_text(timeout_s)} "
            f"for it in a collective during {info['what']} and gave up ({info['timed_out']}); {who} was {end}",
            key="trainer.ddp_timeout_s",
            fix=f"find where {who} stalls (a deadlock, an endless loop, a stalled read in your code or "
            "data); if its steps are only slower, raise trainer.ddp_timeout_s",
            exit_code=TRAINING_ERROR)
    prefix = f"(process {rank} of {devices}) " if info["exit_code"] == TRAINING_ERROR else ""
    return TrainrunError(prefix + info["message"], key=info["key"], fix=info["fix"], exit_code=info["exit_code"])
