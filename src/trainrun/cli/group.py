"""Joining the default process group for a run: the backend for the device (gloo on CPU, nccl
on CUDA), the device of each local rank, and torch threads per process."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from trainrun.build.devices import resolve_device
from trainrun.config.choices import text
from trainrun.errors import phase


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(cfg: Any, local_rank: int) -> torch.device:
    return resolve_device(text(cfg.device.type), local_rank)


@contextlib.contextmanager
def process_group(cfg: Any, rank: int, world_size: int, local_rank: int) -> Iterator[None]:
    """Join the default process group (``env://``: MASTER_ADDR/MASTER_PORT) for the run.

    ``trainer.ddp_timeout_s`` bounds the join and every collective after it (gloo raises in the
    waiting process; nccl's watchdog aborts it); null keeps torch's default."""
    device = device_for(cfg, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with phase(f"joining the other {world_size - 1} process(es) (init_process_group)", "trainer.ddp_timeout_s",
               fix="check that every process started (its own output) and can reach MASTER_ADDR:MASTER_PORT; "
               "a process that starts much later than the others needs a longer trainer.ddp_timeout_s"):
        dist.init_process_group(backend_for(device), rank=rank, world_size=world_size,
                                timeout=ddp_timeout(cfg))
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def ddp_timeout(cfg: Any) -> datetime.timedelta | None:
    """``trainer.ddp_timeout_s`` as torch takes it (None: torch's default for the backend)."""
    seconds = cfg.trainer.get("ddp_timeout_s")
    return None if seconds is None else datetime.timedelta(seconds=float(seconds))


def threads_per_process(local_world_size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))
