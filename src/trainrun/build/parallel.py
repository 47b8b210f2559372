"""How the model is spread over the processes of a run (``trainer.strategy``): DDP keeps a
whole copy on each and averages gradients in backward; FSDP2 (``fully_shard``) keeps a shard of
every parameter, gradient and optimizer state on each, gathering a layer's parameters just
before it runs.

FSDP shards per unit: each module whose class ``trainer.fsdp.shard`` names (a transformer block,
say), else each module that owns parameters itself (the built-in models' layers), then the
root, so the units' all-gathers and reduce-scatters overlap with compute as in torchtitan.
``trainer.precision=bf16`` becomes FSDP's ``MixedPrecisionPolicy`` (bf16 parameters in the
gathers and the compute, fp32 gradient reductions and fp32 sharded weights).
``trainer.fsdp.init=meta`` builds the model on the ``meta`` device (no memory), shards it, then
materializes only each process's shards and initializes them with ``reset_parameters()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from trainrun.errors import TrainrunError

STRATEGIES = ("ddp", "fsdp")


def wrap(raw_model: nn.Module, strategy: str, device: torch.device, world_size: int,
         shard: list[str], precision: str) -> nn.Module:
    """What the loop calls: ``raw_model`` itself alone, DDP-wrapped, or sharded in place (FSDP2
    changes the module's class; ``raw_model`` is then the sharded model)."""
    if world_size == 1:
        return raw_model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if precision == "fp16":
        raise TrainrunError(
            "trainer.precision=fp16 is not supported with trainer.strategy=fsdp: its gradient scaler "
            "would decide on each shard alone whether to skip a step, and the shards would drift apart",
            key="trainer.precision", fix="use trainer.precision=bf16 with FSDP (no scaler needed)")
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if precision == "bf16" else MixedPrecisionPolicy())
    for module in units(raw_model, shard):
        fully_shard(module, mp_policy=policy)
    fully_shard(raw_model, mp_policy=policy)
    return raw_model


def units(model: nn.Module, shard: list[str]) -> list[nn.Module]:
    """The modules FSDP shards one by one, innermost first (the root comes after them)."""
    if shard:
        found = {type(m).__name__ for m in model.modules()}
        unknown = [name for name in shard if name not in found]
        if unknown:
            raise TrainrunError(
                f"trainer.fsdp.shard names {', '.join(unknown)}, but the model has no module of that class "
                f"(it has {', '.join(sorted(found))})",
                key="trainer.fsdp.shard", fix="name classes of your model's blocks, e.g. trainer.fsdp.shard=[Block]")
        chosen = [m for m in model.modules() if type(m).__name__ in shard and m is not model]
    else:
        chosen = [m for m in model.modules() if m is not model and any(True for _ in m.parameters(recurse=False))]
    return list(reversed(chosen))


def materialize(model: nn.Module, device: torch.device) -> None:
    """``trainer.fsdp.init=meta``: give the (sharded) meta model real storage on ``device`` and
    initialize it as its constructor would have, module by module."""
    missing = sorted({type(m).__name__ for m in model.modules()
                      if (any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)))
                      and not callable(getattr(m, "reset_parameters", None))})
    if missing:
        raise TrainrunError(
            f"trainer.fsdp.init=meta builds the model without memory and initializes each layer with its "
            f"reset_parameters(), which {', '.join(missing)} lack(s)",
            key="trainer.fsdp.init",
            fix="give those modules a reset_parameters() method, or use trainer.fsdp.init=device")
    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and (any(True for _ in module.parameters(recurse=False))
                                    or any(True for _ in module.buffers(recurse=False))):
                reset()


def skipping_sync(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    """A context in which backward accumulates gradients without reducing them across processes
    (DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync(False)``); None on one process."""
    no_sync = getattr(model, "no_sync", None)
    if no_sync is not None:
        return no_sync
    set_sync = getattr(model, "set_requires_gradient_sync", None)
    if set_sync is None:
        return None

    @contextlib.contextmanager
    def fsdp_no_sync() -> Iterator[None]:
        set_sync(False)
        try:
            yield
        finally:
            set_sync(True)

    return fsdp_no_sync
