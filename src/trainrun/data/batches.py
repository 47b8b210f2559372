"""Batches: what the loop iterates over each epoch.

In-memory data is served by :class:`TensorBatches`, contiguous slices of one permuted copy of
tensors already on the device (no per-sample indexing, no collation); a user ``Dataset`` by a
``DataLoader`` (:class:`LoaderBatches`). Both shard the data under DDP and report each batch's
size, which the loop needs for exact epoch means: what the loop asks of each is :class:`Batches`.
(``LoaderBatches`` lives in ``loader.py``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from trainrun.data.iterable import StreamBatches
from trainrun.data.loader import LoaderBatches
from trainrun.data.order import global_bounds
from trainrun.errors import TrainrunError

__all__ = ["Batches", "LoaderBatches", "TensorBatches", "whole"]


class Batches(Protocol):
    """What the loop iterates over each epoch (:class:`TensorBatches`, :class:`LoaderBatches`,
    :class:`~trainrun.data.iterable.StreamBatches`)."""

    sizes: torch.Tensor  # each batch's number of samples, on the device (exact epoch means)
    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TensorBatches:
    """Batches of tensors already on the device.

    Each epoch draws one permutation (seeded by ``seed`` and the epoch, so a resumed run sees the
    same order without saving generator state), gathers the data once, and yields contiguous
    slices. Under DDP the global batch is ``batch_size * world_size`` and rank ``r`` takes its
    ``r``-th share of every global batch, so each sample is seen once per epoch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
        whole: bool = False,
    ) -> None:
        self.x, self.y = x, y
        self.shuffle, self.seed = shuffle, seed
        self.bounds = global_bounds(len(x), batch_size, rank, world_size, whole=whole)
        if _check_limit(limit):  # trainer.limit_*_batches: the first batches only
            del self.bounds[limit:]
        self.sizes = torch.tensor([hi - lo for lo, hi in self.bounds], dtype=torch.float32, device=x.device)
        self.num_samples = sum(hi - lo for lo, hi in self.bounds)

    def __len__(self) -> int:
        return len(self.bounds)

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.x), generator=generator)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch``, from step ``start`` on (mid-epoch resume).

        No batch is a view of the stored split: a forward that changes its input in place
        (``x.div_(255)``) changes that batch only, never the data the next epoch (or the
        validation after it) reads. Shuffled, the batches are slices of the epoch's permuted
        copy, made anyway; in order, of one copy of the rows the epoch reads (measured against
        a copy per batch: docs/architecture.md)."""
        if not self.bounds[start:]:
            return
        if self.shuffle:
            perm = self.permutation(epoch).to(self.x.device)
            x, y, first = self.x[perm], self.y[perm], 0
        else:  # the epoch's own copy, from its first row to its last (a batch limit reads fewer)
            first, end = self.bounds[start][0], self.bounds[-1][1]
            x, y = self.x[first:end].clone(), self.y[first:end].clone()
        for lo, hi in self.bounds[start:]:
            yield x[lo - first:hi - first], y[lo - first:hi - first]

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i`` in stored order, as a copy the model may change."""
        lo, hi = self.bounds[i]
        return self.x[lo:hi].clone(), self.y[lo:hi].clone()


def _check_limit(limit: int | None) -> int | None:
    """``trainer.limit_train_batches`` / ``limit_val_batches``: null, or a count of batches."""
    if limit is not None and limit < 1:
        raise TrainrunError(
            f"a batch limit of {limit} leaves no batches",
            key="trainer.limit_train_batches",
            fix="use a positive number of batches, or null for all of them",
        )
    return limit


def whole(batches: TensorBatches | LoaderBatches | StreamBatches,
          batch_size: int) -> TensorBatches | LoaderBatches | StreamBatches:
    """The same split for one process: every sample, in order, no batch limit (``test_after_fit``
    on rank 0 of a DDP run scores the split exactly as ``evaluate`` does alone)."""
    if isinstance(batches, TensorBatches):
        return TensorBatches(batches.x, batches.y, batch_size, shuffle=False, seed=batches.seed)
    return batches.alone(batch_size)
