"""Batches: what the loop iterates over each epoch.

In-memory data is served by :class:`TensorBatches`, contiguous slices of one permuted copy of
tensors already on the device (no per-sample indexing, no collation); a user ``Dataset`` by a
``DataLoader`` (:class:`LoaderBatches`). Both shard the data under DDP and report each batch's
size, which the loop needs for exact epoch means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from trainrun.errors import TrainrunError


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
    ) -> None:
        self.x, self.y = x, y
        self.shuffle, self.seed = shuffle, seed
        n, global_batch = len(x), batch_size * world_size
        self.bounds: list[tuple[int, int]] = []
        for start in range(0, n, global_batch):
            size = min(global_batch, n - start)
            if size < world_size:  # too few left for every rank: DDP needs a sample on each
                break
            lo = start + (size * rank) // world_size
            hi = start + (size * (rank + 1)) // world_size
            self.bounds.append((lo, hi))
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


class LoaderBatches:
    """The DataLoader path for user Datasets: batches are collated, then moved and typed.

    Under DDP a ``DistributedSampler`` shards the data (it pads with repeated samples to make
    the shards equal, so an epoch may see a few samples twice).
    """

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
    ) -> None:
        from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

        # Each batch's labels, checked on the host before they move (a Dataset's task and class
        # count may have been guessed from a few samples: see data.datasets.dataset_labels).
        self.check_targets = check_targets

        self.flat = flat  # each sample as one vector: the model asks for in_features only

        self.seed = seed
        if world_size > 1:
            self.sampler: Any = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
            )
        elif shuffle:
            self.sampler = RandomSampler(dataset, generator=torch.Generator())
        else:
            self.sampler = SequentialSampler(dataset)
        # Each new loader iterator draws its worker seed from this generator, seeded per epoch,
        # not from torch's global stream (dropout's): a run resumed in the middle of an epoch
        # then leaves the global stream exactly where the checkpoint saved it.
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=self.generator,
        )
        self.device, self.prepare_targets = device, prepare_targets
        n = len(self.sampler)
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        if _check_limit(limit):  # trainer.limit_*_batches: the first batches only
            del sizes[limit:]
        self.num_samples = sum(sizes)
        self.sizes = torch.tensor(sizes, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int = 0, start: int = 0, *,
              check: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch from batch ``start`` on. ``check=False``: labels unchecked
        (preflight reads the first batch and words a bad label itself)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        elif isinstance(getattr(self.sampler, "generator", None), torch.Generator):
            self.sampler.generator.manual_seed(self.seed * 1_000_003 + epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch + 500_009)
        for step, (x, y) in enumerate(self.loader):
            if step == len(self.sizes):
                break
            if step < start:
                continue
            x = torch.as_tensor(x).to(self.device, non_blocking=True).float()
            if self.flat:
                x = x.flatten(1)
            y = torch.as_tensor(y)
            if check and self.check_targets is not None and y.device.type == "cpu":  # no device sync
                self.check_targets(y)
            yield x, self.prepare_targets(y.to(self.device, non_blocking=True))


def whole(batches: TensorBatches | LoaderBatches, batch_size: int) -> TensorBatches | LoaderBatches:
    """The same split for one process: every sample, in order, no batch limit (``test_after_fit``
    on rank 0 of a DDP run scores the split exactly as ``evaluate`` does alone)."""
    if isinstance(batches, TensorBatches):
        return TensorBatches(batches.x, batches.y, batch_size, shuffle=False, seed=batches.seed)
    return LoaderBatches(batches.loader.dataset, batch_size, shuffle=False, seed=batches.seed,
                         device=batches.device, prepare_targets=batches.prepare_targets,
                         num_workers=batches.loader.num_workers, flat=batches.flat,
                         check_targets=batches.check_targets)
