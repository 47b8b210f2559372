"""The reductions and per-batch weights the loop needs under DDP; on one process each is a
no-op (or the obvious value), so the loop reads the same either way.

Every function here is a collective when ``world_size > 1``: all ranks must call it, in the
same order.
"""

from __future__ import annotations

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


def rank_row(saved: torch.Tensor | None, rank: int, world_size: int) -> torch.Tensor | None:
    """This rank's row of per-rank values a checkpoint saved under DDP (``[world_size, n]``, see
    :func:`gather_rows`); a 1-D tensor is a single process's. A different number of processes
    cannot continue an unfinished epoch (each rank's batches would differ)."""
    if saved is None:
        return None
    saved_world = saved.shape[0] if saved.dim() == 2 else 1
    if saved_world != world_size:
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch by {saved_world} process(es); "
            f"this run has {world_size}, which splits the epoch's batches differently",
            key="trainer.devices",
            fix=f"resume with trainer.devices={saved_world} (or from a checkpoint saved at the "
            "end of an epoch, which any number of processes can continue)",
        )
    return saved[rank] if saved.dim() == 2 else saved
