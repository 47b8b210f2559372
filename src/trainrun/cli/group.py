"""Joining the default process group for a run: the backend for the device (gloo on CPU, nccl
on CUDA), the device of each local rank, the processes this one shares its CPUs with, and what
happens when another process of the group fails.

A failed process makes the others fail at their next collective, except one that hangs outside
any collective (a stalled read, an endless loop): torchrun's agent stops it only 30 s later, and
an agent of another node not at all. So a process that fails says so in the rendezvous store
(``trainrun/failed``), and every process watches that key from a thread: :data:`GRACE_S` after
it appears, a process still running records that it hung and leaves.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.distributed.constants import default_pg_timeout

from trainrun.build.devices import resolve_device
from trainrun.cli.failures import GRACE_S, record
from trainrun.cli.ranks import Place
from trainrun.config.choices import text
from trainrun.errors import TRAINING_ERROR, TrainrunError, phase


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(cfg: DictConfig, local_rank: int) -> torch.device:
    return resolve_device(text(cfg.device.type), local_rank)


def ddp_timeout(cfg: DictConfig) -> datetime.timedelta | None:
    """``trainer.ddp_timeout_s`` as torch takes it (None: torch's default for the backend)."""
    seconds = cfg.trainer.get("ddp_timeout_s")
    return None if seconds is None else datetime.timedelta(seconds=float(seconds))


@contextlib.contextmanager
def process_group(cfg: DictConfig, place: Place) -> Iterator[None]:
    """Join the default process group (``env://``: MASTER_ADDR/MASTER_PORT) for the run.

    ``trainer.ddp_timeout_s`` bounds the join and every collective after it (gloo raises in the
    waiting process; nccl's watchdog aborts it); null keeps torch's default."""
    device = device_for(cfg, place.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with phase(f"joining the other {place.world_size - 1} process(es) (init_process_group)", "trainer.ddp_timeout_s",
               fix="check that every process started (its own output) and can reach MASTER_ADDR:MASTER_PORT; "
               "a process that starts much later than the others needs a longer trainer.ddp_timeout_s"):
        dist.init_process_group(backend_for(device), rank=place.rank, world_size=place.world_size,
                                timeout=ddp_timeout(cfg), device_id=device if device.type == "cuda" else None,
                                store=_attempt_store(cfg))
    watch = PeerWatch(place)
    try:
        yield
    except BaseException:
        watch.failed()
        raise
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def sharing_cpus() -> int:
    """How many processes of the group run on this host with CPUs in common with this one
    (itself included): a collective, once, after joining. Two torchrun agents on one machine
    (the loopback multi-node setup) each say ``LOCAL_WORLD_SIZE=1``; this counts both."""
    try:
        mine = (socket.gethostname(), sorted(os.sched_getaffinity(0)))
    except AttributeError:
        mine = (socket.gethostname(), [])
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return sum(1 for host, cpus in everyone
               if host == mine[0] and (not cpus or not mine[1] or set(cpus) & set(mine[1])))


def _attempt_store(cfg: DictConfig) -> dist.Store | None:
    """Under torchrun's agent store, this attempt's keys under a prefix of their own; else None
    (``env://`` as usual). torchrun keeps one store for every restart of the group
    (``--max-restarts``), so a restarted group found the dead group's keys there: a process
    read a dead peer's gloo address for a new group (DCP's) and failed to connect."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return None
    timeout = ddp_timeout(cfg) or default_pg_timeout
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timeout)
    return dist.PrefixStore(f"trainrun/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", client)


def _store() -> dist.TCPStore:
    """A client of the launch's store (torchrun's agent, or rank 0's under srun/submitit)."""
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         wait_for_workers=False, timeout=datetime.timedelta(seconds=30))


class PeerWatch:
    """The key a failing process sets, and the thread that waits for it (each with a store
    client of its own: one client cannot wait and set at once)."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.key = f"trainrun/failed/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        threading.Thread(target=self._watch, name="trainrun-peers", daemon=True).start()

    def failed(self) -> None:
        with contextlib.suppress(Exception):
            _store().set(self.key, str(self.place.rank))

    def _watch(self) -> None:
        try:
            store = _store()
            store.wait([self.key], datetime.timedelta(days=365))
            first = int(store.get(self.key))
        except Exception:  # the store ended with the launch: nothing failed
            return
        time.sleep(GRACE_S)
        record(TrainrunError(
            f"process {self.place.rank} was still running {GRACE_S:g} s after process {first} failed, "
            "and was stopped", exit_code=TRAINING_ERROR), hung=True)
        os._exit(TRAINING_ERROR)
