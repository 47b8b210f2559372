"""Launching: where this process stands and how ``train`` runs there.

A run is one of three kinds, decided by :func:`launch`:

* **alone** (``trainer.devices=1``, no launcher around): ``commands.train.run`` in this process;
* **the parent of workers** (``trainer.devices=N``): :mod:`trainrun.cli.workers` starts ``N``
  worker processes with torch's elastic launcher; rank 0 returns the summary;
* **one rank of a group someone else started**: ``torchrun``, a submitit job with several
  tasks, or ``srun`` with several tasks (:mod:`trainrun.cli.ranks` tells which, without torch).
  Every rank runs Hydra; they agree on one run folder through ``ranks.pin_run_dir``.

Each rank joins the default process group (gloo on CPU, nccl on CUDA) for the run
(:func:`process_group`); only rank 0 prints and writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainrun.cli.failures import reworded
from trainrun.cli.group import process_group, threads_per_process
from trainrun.cli.ranks import Place, launched_place
from trainrun.cli.workers import start_workers
from trainrun.commands import train
from trainrun.config.choices import text
from trainrun.errors import TrainrunError


def run_as_rank(cfg: Any, run_dir: Path, place: Place) -> dict[str, Any]:
    """Train as one rank of a group that torchrun / submitit / srun started."""
    _check_devices(cfg, place.local_world_size, place.launcher)
    if not cfg.trainer.threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_process(place.local_world_size))
    try:
        with process_group(cfg, place.rank, place.world_size, place.local_rank):
            return train.run(cfg, run_dir, rank=place.rank, world_size=place.world_size)
    except TrainrunError as err:  # a collective that timed out says so, with its key
        raise reworded(err, cfg.trainer.get("ddp_timeout_s")) from err.__cause__


def _check_devices(cfg: Any, processes: int, launcher: str) -> None:
    devices = int(cfg.trainer.devices)
    if devices not in (1, processes):
        raise TrainrunError(
            f"trainer.devices={devices}, but {launcher} started {processes} processes on this node",
            key="trainer.devices",
            fix=f"leave trainer.devices=1 when {launcher} starts the processes",
        )


def launch(cfg: Any, run_dir: Path, judges: Sequence[Callable[[list[dict[str, Any]]], str | None]] = ()
           ) -> dict[str, Any]:
    """Train as this process's place says: one rank of an outside launch, the parent of
    ``trainer.devices`` workers, or alone. Returns rank 0's summary. ``judges`` (a sweep's
    pruner) judge a run of one process only."""
    place = launched_place()
    if place is not None:
        check_supported(cfg)
        return run_as_rank(cfg, run_dir, place)
    if int(cfg.trainer.devices) > 1:
        check_supported(cfg)
        return start_workers(cfg, run_dir, int(cfg.trainer.devices))
    return train.run(cfg, run_dir, judges=judges)


def check_supported(cfg: Any) -> None:
    """Settings DDP cannot honour exactly, refused before any process starts."""
    skip = text(cfg.trainer.on_nonfinite) == "skip"
    if skip and int(cfg.trainer.accumulate_grad_batches) > 1:
        raise TrainrunError(
            "trainer.on_nonfinite=skip with trainer.accumulate_grad_batches>1 is not supported "
            "with several processes: skipping the last batch of a window would skip the gradient "
            "all-reduce (DDP syncs on that batch), and the processes' weights would drift apart",
            key="trainer.on_nonfinite",
            fix="use trainer.on_nonfinite=stop, or trainer.accumulate_grad_batches=1, or one process",
        )


