"""The order of a map-style data set's samples in an epoch, and the random streams its samples
are drawn under: what makes the DataLoader path exact on any number of processes and workers,
and its mid-epoch resume cost nothing.

**One order for the whole job.** Each epoch has one permutation of the split, seeded by
``(trainer.seed, epoch)`` (the same draw as ``TensorBatches``). Global batch ``i`` is
``perm[i*G:(i+1)*G]`` with ``G = batch_size x world_size``, and rank ``r`` takes its contiguous
share of it (:func:`global_bounds`, the bounds ``TensorBatches`` uses), so N processes with
``B/N`` see what one process sees with ``B``, for every seed, and every rank has the same number
of steps (a last global batch with fewer samples than ranks is dropped). A resume at batch ``s``
draws the permutation again (integers, no sample read) and starts the batch sampler at ``s``:
O(1) in the samples skipped.

**Random streams per sample.** A Dataset whose ``__getitem__`` draws random numbers (an
augmentation) would otherwise draw them from whichever worker fetches the sample, in whatever
state that worker's streams happen to be: another ``num_workers``, a resume in the middle of an
epoch (fresh workers) or another number of processes would change them. The streams a Dataset
was seen to use (:func:`streams_used`: torch, Python's ``random``, NumPy's legacy global) are
seeded before each sample by ``(trainer.seed, epoch, the sample's place in the epoch)``; in the
training process itself (``num_workers=0``) they are put back after each batch, so dropout's
stream continues exactly as the checkpoint saved it. A Dataset that draws from none of them
pays nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

STREAMS = ("torch", "random", "numpy")
T = TypeVar("T")


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of ``n`` samples (the draw ``TensorBatches`` makes)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def global_bounds(n: int, batch_size: int, rank: int, world_size: int, *,
                  whole: bool = False) -> list[tuple[int, int]]:
    """``(lo, hi)`` of this rank's share of every global batch of ``batch_size * world_size``
    positions in the epoch's order. A last global batch too small for every rank (DDP needs a
    sample on each) is dropped in training; with ``whole`` (validation and test, which must
    score every sample as one process does) it joins the batch before it, so every rank still
    runs the same number of forwards (FSDP gathers its parameters in each)."""
    bounds: list[tuple[int, int]] = []
    global_batch = batch_size * world_size
    for start in range(0, n, global_batch):
        size = min(global_batch, n - start)
        if size < world_size:
            if not whole or not bounds:
                break
            start, size = start - global_batch, global_batch + size
            bounds.pop()
        bounds.append((start + (size * rank) // world_size, start + (size * (rank + 1)) // world_size))
    return bounds


class Batch(list[int]):
    """One batch's sample indices, carrying its epoch and the place of its first sample in the
    epoch's order (pickled with it to a worker): what the per-sample seeds are made of."""

    epoch: int
    first: int


class GlobalBatchSampler(Sampler[Batch]):
    """Yields this rank's share of each global batch of the epoch set by :meth:`set_epoch`, from
    batch ``start`` on. The DataLoader reads it in the training process, so a persistent set of
    workers follows each new epoch and start."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, limit: int | None = None, whole: bool = False) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.bounds = global_bounds(n, batch_size, rank, world_size, whole=whole)
        if limit is not None:  # trainer.limit_*_batches: the first batches only
            del self.bounds[limit:]
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.bounds) - self.start

    def __iter__(self) -> Iterator[Batch]:
        order = permutation(self.n, self.seed, self.epoch) if self.shuffle else None
        for lo, hi in self.bounds[self.start:]:
            batch = Batch(range(lo, hi) if order is None else order[lo:hi].tolist())
            batch.epoch, batch.first = self.epoch, lo
            yield batch


# --------------------------------------------------------------------------- random streams


def _state(stream: str) -> Any:
    if stream == "torch":
        return torch.default_generator.get_state()
    return random.getstate() if stream == "random" else np.random.get_state()


def _restore(stream: str, state: Any) -> None:
    if stream == "torch":
        torch.default_generator.set_state(state)
    elif stream == "random":
        random.setstate(state)
    else:
        np.random.set_state(state)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and len(a) > 1 and isinstance(a[1], np.ndarray):  # numpy's state
        return bool(np.array_equal(a[1], b[1])) and a[2:] == b[2:]
    return bool(a == b)


def streams_used(read: Callable[[], T]) -> tuple[T, tuple[str, ...]]:
    """What ``read()`` (a few ``__getitem__`` calls) returns, and which global random streams it
    drew from; every stream is put back as it was."""
    before = {s: _state(s) for s in STREAMS}
    try:
        value = read()
        return value, tuple(s for s in STREAMS if not _same(before[s], _state(s)))
    finally:
        for s, state in before.items():
            _restore(s, state)


def _sample_seed(seed: int, epoch: int, place: int) -> int:
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + place) % (2**63 - 1)


class SeededSamples(Dataset):
    """A Dataset's samples fetched a batch at a time (``__getitems__``), each under the streams
    ``streams`` seeded by its place in the epoch (see the module's docstring)."""

    def __init__(self, dataset: Dataset, seed: int, streams: Sequence[str], in_worker: bool) -> None:
        self.dataset, self.seed, self.streams = dataset, seed, tuple(streams)
        self.in_worker = in_worker  # False: num_workers=0, the training process's streams

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, batch: Sequence[int]) -> list[Any]:
        if not self.streams:
            return [self.dataset[i] for i in batch]
        saved = None if self.in_worker else [(s, _state(s)) for s in self.streams]
        first, epoch = getattr(batch, "first", 0), getattr(batch, "epoch", 0)
        try:
            samples = []
            for k, i in enumerate(batch):
                seed = _sample_seed(self.seed, epoch, first + k)
                if "torch" in self.streams:
                    torch.default_generator.manual_seed(seed)
                if "random" in self.streams:
                    random.seed(seed)
                if "numpy" in self.streams:
                    np.random.seed(seed % 2**32)
                samples.append(self.dataset[i])
            return samples
        finally:
            for s, state in saved or ():
                _restore(s, state)
