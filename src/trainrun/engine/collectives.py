"""The reductions and per-batch weights the loop needs under DDP; on one process each is a
no-op (or the obvious value), so the loop reads the same either way.

Every function here is a collective when ``world_size > 1``: all ranks must call it, in the
same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from trainrun.errors import TrainrunError


def _distributed(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op on one process) and return it."""
    if _distributed(world_size):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """The element-wise maximum over all ranks, in place."""
    if _distributed(world_size):
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_finite(loss: torch.Tensor, world_size: int) -> bool:
    """Whether the loss is finite on every rank (one sync; used by ``on_nonfinite=skip`` only,
    so that all ranks skip the same batch and DDP's collectives stay matched)."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if _distributed(world_size):
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def micro_batch_weights(sizes: torch.Tensor, k: int, world_size: int) -> list[float]:
    """The factor each batch's mean loss is multiplied by before ``backward``.

    An optimizer step sees the batches of its accumulation window (``k`` batches) on every rank;
    DDP averages gradients over ranks. Weighting batch ``i`` by ``local_size_i * world_size /
    samples in its window over all ranks`` makes the step's gradient the mean over exactly the
    samples it saw: ``k`` batches of ``B`` equal one batch of ``kB``, ``N`` ranks with ``B/N``
    equal one process with ``B``, and a short last batch or window counts each sample once.
    All 1.0 for plain single-process training (the loop then skips the multiply).
    """
    local = sizes.tolist()
    totals = all_reduce_sum(sizes.detach().clone(), world_size).tolist() if world_size > 1 else local
    weights: list[float] = []
    for start in range(0, len(local), k):
        window = sum(totals[start:start + k])
        weights += [size * world_size / window for size in local[start:start + k]]
    return weights


def gather_rows(tensor: torch.Tensor | None, world_size: int) -> torch.Tensor | None:
    """Stack every rank's copy of ``tensor`` (same shape on each) into ``[world_size, ...]`` on
    every rank; the tensor itself on one process."""
    if tensor is None or not _distributed(world_size):
        return tensor
    rows = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(rows, tensor.contiguous())
    return torch.stack(rows)


def gather_objects(value: Any, world_size: int) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not _distributed(world_size):
        return [value]
    found: list[Any] = [None] * world_size
    dist.all_gather_object(found, value)
    return found


def rank_row(saved: torch.Tensor | None, rank: int, world_size: int, sums: torch.Tensor | None = None,
             sizes: torch.Tensor | None = None) -> torch.Tensor | None:
    """This rank's batch losses of the open epoch a checkpoint saved (``[saved_world, n]`` from
    :func:`gather_rows`, or 1-D from one process). On another number of processes, each global
    batch's ``sums`` (loss x samples over the saved ranks) is shared out: this rank's loss for
    batch ``i`` is ``sums[i] / (world_size * sizes[i])``, so the epoch's sample-weighted mean
    comes out the same (``sizes``: this rank's batch sizes)."""
    if saved is None:
        return None
    saved_world = saved.shape[0] if saved.dim() == 2 else 1
    if saved_world == world_size:
        return saved[rank] if saved.dim() == 2 else saved
    if saved_world == 1:  # one process saved it: its losses are each global batch's mean
        sums = saved * all_reduce_sum(sizes.detach().clone(), world_size) if sizes is not None else None
    if sums is None or sizes is None:
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch by {saved_world} process(es); "
            f"this run has {world_size}, which splits the epoch's batches differently",
            key="trainer.devices",
            fix=f"resume with trainer.devices={saved_world} (or from a checkpoint saved at the "
            "end of an epoch, which any number of processes can continue)",
        )
    n = len(sums)
    return sums.to(sizes.device) / (world_size * sizes[:n])
