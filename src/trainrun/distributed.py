"""Process-group facts (rank, world size) and the reductions the loop needs under DDP."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def all_reduce_sum(tensor: torch.Tensor, run: Any) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op on one process) and return it."""
    if run.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
