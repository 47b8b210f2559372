"""A user ``IterableDataset`` (a stream of ``(x, y)`` samples) through torchdata's
``StatefulDataLoader`` (``pip install 'trainrun[stream]'``).

A stream has no index, so it cannot be split or shuffled by trainrun: it is the training split
(``data.val_fraction`` and ``data.test_fraction`` must be 0), and its order is its own (a
``set_epoch(epoch)`` method is called before each epoch, as torch's samplers have). It must
say how many samples an epoch holds (``__len__``), because the loop's exact means weigh each
batch by its size before the epoch ends. trainrun splits it between DDP ranks and loader
workers in whole batches (:class:`Shard`): the batches come in the stream's order whatever
``data.num_workers`` (the same weights with 0 or 2 workers), each rank takes its share of every
global batch as for map-style data, no sample is seen twice, every rank has as many steps.

**Resume.** A mid-epoch checkpoint holds the loader's own state (``StatefulDataLoader.state_dict``:
each worker's place in the stream, and the stream's own ``state_dict()`` where it has one), and
the resumed loader continues from it: exact, at O(1) cost when the stream implements
``state_dict``/``load_state_dict`` (else torchdata replays the samples already yielded, still
exact). The saved state belongs to its number of workers: another ``data.num_workers`` at a
mid-epoch resume is refused, naming the key. Under DDP only rank 0's state reaches the
checkpoint, so a stream resumes exactly from an epoch's end there, and a mid-epoch one is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from trainrun.data.fitted import to_payload
from trainrun.data.loader import drop_run_lock
from trainrun.data.order import global_bounds
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError


class Shard(IterableDataset):
    """This rank's and this worker's share of a stream, in whole batches: global batch ``g``
    (``batch_size x world_size`` samples in stream order) is read by worker ``g % workers`` of
    every rank, and rank ``r`` keeps its contiguous share of it (the bounds of
    ``order.global_bounds``). The DataLoader takes its workers in turn, so the batches come in
    stream order whatever ``data.num_workers``, and N processes see what one sees."""

    def __init__(self, stream: IterableDataset, rank: int, world_size: int, bounds: list[tuple[int, int]],
                 global_batch: int) -> None:
        self.stream, self.rank, self.world_size = stream, rank, world_size
        self.bounds, self.global_batch = bounds, global_batch

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = [(lo, hi) for g, (lo, hi) in enumerate(self.bounds) if g % workers == worker]
        if not mine:
            return
        wanted = iter(mine)
        lo, hi = next(wanted)
        for k, item in enumerate(self.stream):
            if k < lo:
                continue
            if k < hi:
                yield item
            if k + 1 >= hi:
                step = next(wanted, None)
                if step is None:
                    return
                lo, hi = step


class StatefulShard(Shard):
    """A share of a stream that keeps its own place (``state_dict``/``load_state_dict``): the
    loader saves and restores it, reading nothing again. (A stream without them gets the plain
    :class:`Shard`, which torchdata fast-forwards by replaying the samples it had yielded.)"""

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict()}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])  # type: ignore[attr-defined]


def stream_length(stream: IterableDataset, world_size: int) -> int:
    """Samples per epoch: the stream's ``__len__``."""
    try:
        n = len(stream)  # type: ignore[arg-type]
    except TypeError:
        raise TrainrunError(
            f"the IterableDataset {type(stream).__name__} has no __len__: the loop weighs each batch by its share "
            "of the epoch, so it needs the number of samples an epoch holds",
            key="data._target_", fix="give the stream a __len__ returning its samples per epoch") from None
    if n < world_size:
        raise TrainrunError(f"the stream holds {n} samples, fewer than the {world_size} processes", key="data._target_")
    return n


class StreamBatches:
    """Batches of a stream for the loop: ``len``/``sizes`` known before the epoch (each worker
    batches its own share; the DataLoader takes the workers in turn)."""

    def __init__(self, stream: IterableDataset, batch_size: int, *, device: torch.device,
                 prepare_targets: Callable[[torch.Tensor], torch.Tensor], rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool | None = None, persistent_workers: bool = True,
                 prefetch_factor: int | None = None, limit: int | None = None, flat: bool = False,
                 check_targets: Callable[[torch.Tensor], None] | None = None) -> None:
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader
        except ImportError:
            raise TrainrunError("a stream (IterableDataset) is read through torchdata's StatefulDataLoader, which is "
                                "not installed", key="data._target_",
                                fix="pip install 'trainrun[stream]' (or pip install torchdata)") from None
        bounds = global_bounds(stream_length(stream, world_size), batch_size, rank, world_size)
        if limit is not None:
            del bounds[limit:]
        # Each new loader iterator draws its workers' seed from here, never from torch's global
        # stream (dropout's): a resumed epoch then leaves that stream where the checkpoint saved it.
        self.generator = torch.Generator().manual_seed(0)
        self.stream, self.num_workers, self.flat = stream, num_workers, flat
        self.device, self.prepare_targets, self.check_targets = device, prepare_targets, check_targets
        workers: dict[str, Any] = {"persistent_workers": persistent_workers,
                                   "prefetch_factor": prefetch_factor} if num_workers else {}
        with warnings.catch_warnings():  # torchdata 0.11 calls a torch function torch 2.13 deprecates
            warnings.simplefilter("ignore")
            stateful = all(callable(getattr(stream, m, None)) for m in ("state_dict", "load_state_dict"))
            shard = (StatefulShard if stateful else Shard)(stream, rank, world_size, bounds, batch_size * world_size)
            self.loader = StatefulDataLoader(shard, batch_size=batch_size,
                                             num_workers=num_workers, pin_memory=device.type == "cuda"
                                             if pin_memory is None else pin_memory,
                                             worker_init_fn=drop_run_lock if num_workers else None,
                                             generator=self.generator, **workers)
        sizes = [hi - lo for lo, hi in bounds]
        self.num_samples = sum(sizes)
        self.sizes = torch.tensor(sizes, dtype=torch.float32, device=device)
        self.pending: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.sizes)

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict(), "num_workers": self.num_workers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("num_workers", -1)) != self.num_workers:
            raise TrainrunError(
                f"the checkpoint's stream was read by {state.get('num_workers')} loader workers, this run has "
                f"{self.num_workers}: each worker holds its own share of the stream, so the rest of the epoch would "
                "be other samples", key="data.num_workers",
                fix=f"resume with data.num_workers={state.get('num_workers')}")
        self.pending = state["loader"]

    def epoch(self, epoch: int = 0, start: int = 0, *,
              check: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch; from ``start`` on, the loader continues from the state a
        checkpoint restored (never by reading the batches before it)."""
        if start and self.pending is None:
            raise TrainrunError("a stream cannot restart in the middle of an epoch without the loader's saved state",
                                key="resume", fix="resume from a checkpoint written by this version of trainrun")
        if self.pending is not None:
            self.loader.load_state_dict(self.pending)
            self.pending = None
        elif callable(getattr(self.stream, "set_epoch", None)):
            self.stream.set_epoch(epoch)  # type: ignore[attr-defined]
        for i, (x, y) in enumerate(self.loader, start=start):
            if i >= len(self.sizes):
                break
            x = torch.as_tensor(x).to(self.device, non_blocking=True).float()
            if self.flat:
                x = x.flatten(1)
            y = torch.as_tensor(y)
            if check and self.check_targets is not None:
                self.check_targets(y)
            yield x, self.prepare_targets(y.to(self.device, non_blocking=True))

    def alone(self, batch_size: int) -> StreamBatches:
        return StreamBatches(self.stream, batch_size, device=self.device, prepare_targets=self.prepare_targets,
                             flat=self.flat, check_targets=self.check_targets)


def data_entries(info: DataInfo, batches: object, batch: int) -> dict[str, Any]:
    """A checkpoint's data entries: what the training split taught (``fitted.py``) and, in the
    middle of an epoch of a stream, the loader's place in it."""
    place = batches.state_dict() if batch and isinstance(batches, StreamBatches) else None
    return {"data": to_payload(info), "loader": place}


def restore_stream(batches: object, saved: dict[str, Any] | None, batch: int, world_size: int) -> None:
    """A mid-epoch checkpoint's loader state into a stream's batches (nothing to do for other
    batches, or at an epoch's end); refused where it cannot be exact (no state saved; under DDP
    the checkpoint holds rank 0's alone)."""
    if not batch or not isinstance(batches, StreamBatches):
        return
    if saved is None or world_size > 1:
        raise TrainrunError(
            "the checkpoint was written in the middle of an epoch of a stream"
            + (" under DDP, where it holds rank 0's place in the stream only" if world_size > 1 else
               " without the loader's state"),
            key="resume", fix="resume from a checkpoint written at an epoch's end (checkpoint.every_n_steps=null)")
    batches.load_state_dict(saved)
