"""The DataLoader path: a map-style data set (a user's ``Dataset``, or rows read from disk) in
batches, moved to the device.

The order comes from :mod:`trainrun.data.order` (one permutation per epoch for the whole job,
each rank its share of every global batch; a resume starts the batch sampler at the next batch,
reading nothing it skips). The loader's levers are the config's: ``data.num_workers`` worker
processes, ``data.persistent_workers`` (kept between epochs), ``data.prefetch_factor`` (batches
each worker prepares ahead), ``data.pin_memory`` (page-locked host batches, so the copy to a
CUDA device is asynchronous: ``non_blocking=True``). Each batch's labels are checked on the host
before they move (a Dataset's classes may have been guessed from a few samples).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from trainrun.data.order import GlobalBatchSampler, SeededSamples
from trainrun.errors import TrainrunError
from trainrun.files import LOCK


def drop_run_lock(worker_id: int = 0) -> None:
    """``worker_init_fn``: a forked worker closes its copy of the run folder's lock (an ``flock``
    shared by every copy of the descriptor): a ``train`` killed by SIGKILL would otherwise stay
    locked until its orphaned workers notice, seconds later, and a resume at once be refused."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return
    for fd in fds.iterdir():
        with contextlib.suppress(OSError, ValueError):
            if os.readlink(fd).endswith("/" + LOCK):
                os.close(int(fd.name))


def as_batch(batch: Any) -> Any:
    """``collate_fn`` for data sets that fetch a whole batch themselves (rows read from disk)."""
    return batch


class LoaderBatches:
    """Batches of a map-style data set through a ``DataLoader``; ``len`` and ``sizes`` are this
    rank's, the same number of batches on every rank."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        device: torch.device,
        prepare_targets: Callable[[torch.Tensor], torch.Tensor],
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
        flat: bool = False,
        check_targets: Callable[[torch.Tensor], None] | None = None,
        streams: Sequence[str] = (),
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        batched: bool = False,
        whole: bool = False,
    ) -> None:
        if limit is not None and limit < 1:
            raise TrainrunError(f"a batch limit of {limit} leaves no batches", key="trainer.limit_train_batches",
                                fix="use a positive number of batches, or null for all of them")
        self.dataset, self.seed, self.flat = dataset, seed, flat
        self.device, self.prepare_targets, self.check_targets = device, prepare_targets, check_targets
        self.options: dict[str, Any] = dict(num_workers=num_workers, streams=tuple(streams), pin_memory=pin_memory,
                                            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor,
                                            batched=batched)
        n = len(dataset)  # type: ignore[arg-type]
        self.sampler = GlobalBatchSampler(n, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                                          world_size=world_size, limit=limit, whole=whole)
        workers: dict[str, Any] = {"persistent_workers": persistent_workers,
                                   "prefetch_factor": prefetch_factor} if num_workers else {}
        self.generator = torch.Generator()  # the workers' own seeds, never torch's global stream (dropout's)
        self.loader = DataLoader(
            dataset if batched else SeededSamples(dataset, seed, streams, in_worker=num_workers > 0),
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=as_batch if batched else None,
            pin_memory=device.type == "cuda" if pin_memory is None else pin_memory,  # async host-to-device copies
            generator=self.generator,
            worker_init_fn=drop_run_lock if num_workers else None,
            **workers,
        )
        sizes = [hi - lo for lo, hi in self.sampler.bounds]
        self.num_samples = sum(sizes)
        self.sizes = torch.tensor(sizes, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int = 0, start: int = 0, *,
              check: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch from batch ``start`` on (the ones before are never read).
        ``check=False``: labels unchecked (preflight reads the first batch and words a bad label
        itself)."""
        self.sampler.set_epoch(epoch, start)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch + 500_009)
        for x, y in self.loader:
            x = torch.as_tensor(x).to(self.device, non_blocking=True).float()  # pinned: asynchronous
            if self.flat:
                x = x.flatten(1)
            y = torch.as_tensor(y)
            if check and self.check_targets is not None and y.device.type == "cpu":  # no device sync
                self.check_targets(y)
            yield x, self.prepare_targets(y.to(self.device, non_blocking=True))

    def alone(self, batch_size: int) -> LoaderBatches:
        """The same split for one process: every sample, in order, no batch limit."""
        return LoaderBatches(self.dataset, batch_size, shuffle=False, seed=self.seed, device=self.device,
                             prepare_targets=self.prepare_targets, flat=self.flat,
                             check_targets=self.check_targets, **self.options)


def loader_options(data: DictConfig, dataset: Dataset, streams: Sequence[str] = ()) -> dict[str, Any]:
    """The loader's keys of the ``data`` config section, for :class:`LoaderBatches`."""
    return dict(num_workers=int(data.get("num_workers") or 0),
                persistent_workers=bool(data.get("persistent_workers", True)),
                prefetch_factor=data.get("prefetch_factor"), pin_memory=data.get("pin_memory"), streams=tuple(streams),
                batched=bool(getattr(dataset, "fetches_batches", False)))
