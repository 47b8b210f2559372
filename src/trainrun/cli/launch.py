"""Launching: where this process stands and how ``train`` runs there.

A run is one of three kinds, decided by :func:`launch`:

* **alone** (``trainer.devices=1``, no launcher around): ``commands.train.run`` in this process;
* **the parent of a launch** (``trainer.devices=N``): :mod:`trainrun.cli.devices` runs the same
  command under torchrun and brings back rank 0's summary;
* **one rank of a group a launcher started**: torchrun (``trainer.devices=N``'s or the user's),
  a submitit job with several tasks, or ``srun`` with several tasks (:mod:`trainrun.cli.ranks`
  tells which, without torch). Every rank runs Hydra; they agree on one run folder through
  ``ranks.pin_run_dir``, join the process group (:mod:`trainrun.cli.group`), and only rank 0
  prints and writes.

Each kind chooses its torch threads the same way (:mod:`trainrun.build.threads`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from omegaconf import DictConfig

from trainrun.build.threads import choose
from trainrun.cli.devices import SUMMARY, run_devices
from trainrun.cli.failures import reworded
from trainrun.cli.group import process_group, sharing_cpus
from trainrun.cli.ranks import LAUNCH_ENV, Place, die_with_parent, launched_place
from trainrun.commands import train
from trainrun.config.choices import text
from trainrun.errors import TrainrunError


def run_as_rank(cfg: DictConfig, run_dir: Path, place: Place) -> dict[str, Any]:
    """Train as one rank of a group that torchrun / submitit / srun started."""
    _check_devices(cfg, place.local_world_size, place.launcher)
    if place.launcher == "torchrun":
        die_with_parent()  # a killed agent takes its workers along, not leaves them training
    try:
        with process_group(cfg, place):
            threads = choose(cfg.trainer.threads, sharing_cpus())
            summary = train.run(cfg, run_dir, rank=place.rank, world_size=place.world_size, threads=threads)
            if place.rank == 0 and os.environ.get(LAUNCH_ENV):  # for the train process that launched it
                (Path(os.environ[LAUNCH_ENV]) / SUMMARY).write_text(json.dumps(summary))
            if summary["status"] == "interrupted":  # leave together: a rank that exits 128+N
                dist.barrier()  # first makes torchrun stop the others, rank 0 before it wrote all
    except TrainrunError as err:  # a collective that timed out or lost its peer says so
        raise reworded(err, cfg.trainer.get("ddp_timeout_s")) from err.__cause__
    return summary


def _check_devices(cfg: DictConfig, processes: int, launcher: str) -> None:
    devices = int(cfg.trainer.devices)
    if devices not in (1, processes):
        raise TrainrunError(
            f"trainer.devices={devices}, but {launcher} started {processes} processes on this node",
            key="trainer.devices",
            fix=f"leave trainer.devices=1 when {launcher} starts the processes",
        )


def launch(cfg: DictConfig, run_dir: Path, judges: Sequence[Callable[[list[dict[str, Any]]], str | None]] = ()
           ) -> dict[str, Any]:
    """Train as this process's place says: one rank of an outside launch, the parent of
    ``trainer.devices`` launch, or alone. Returns rank 0's summary. ``judges`` (a sweep's
    pruner) judge a run of one process only."""
    place = launched_place()
    if place is not None:
        check_supported(cfg)
        return run_as_rank(cfg, run_dir, place)
    if int(cfg.trainer.devices) > 1:
        check_supported(cfg)
        return run_devices(cfg, run_dir, int(cfg.trainer.devices))
    return train.run(cfg, run_dir, threads=choose(cfg.trainer.threads), judges=judges)


def check_supported(cfg: DictConfig) -> None:
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
