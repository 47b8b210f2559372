"""The model at the start of a run: one line (parameters, trainable, size), and with
``model_summary=true`` a table of its layers, as Lightning's ModelSummary prints: each module's
name, type, output shape on the first real training batch, and parameters.

The shapes come from one forward pass of that batch with a hook on every module, inside
preflight's :func:`~trainrun.preflight.run.preserved` (random streams, parameters, buffers,
``.grad`` fields and train/eval flags restored), in eval mode without gradients: it changes
nothing in the run.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainrun.build.setup import Setup
from trainrun.preflight.run import first_batch, preserved

if TYPE_CHECKING:  # rich is imported when the table is made
    from rich.console import JustifyMethod
    from rich.table import Table


def model_name(model: nn.Module) -> str:
    """``MLP`` or ``MLP + Sigmoid head`` (the head the loss added)."""
    if isinstance(model, nn.Sequential) and hasattr(model, "body") and hasattr(model, "head"):
        return f"{class_name(model.body)} + {class_name(model.head)} head"
    return class_name(model)


def class_name(module: object) -> str:
    """The module's class name; FSDP2's sharded class (``FSDPMLP``) says its model's (``MLP``)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # imported only by runs that shard
    sharded = fsdp is not None and isinstance(module, fsdp.FSDPModule)
    return type(module).__bases__[-1].__name__ if sharded else type(module).__name__


def size_mb(model: nn.Module) -> float:
    """Megabytes the parameters and buffers take, as stored (dtype by dtype)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def parameter_line(model: nn.Module) -> str:
    """``model: MLP, 9,610 parameters (all trainable), 0.04 MB``."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    which = "all trainable" if trainable == total else f"{trainable:,} trainable, {total - trainable:,} frozen"
    size = size_mb(model)
    shown = f"{size:.2f}" if size >= 0.01 else f"{size:.2g}"  # 0.04 MB; 0.00081 MB for a toy
    return f"model: {model_name(model)}, {total:,} parameters ({which}), {shown} MB"


def _shape(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "[" + ", ".join(str(d) for d in value.shape) + "]"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return type(value).__name__


def layer_rows(setup: Setup) -> list[tuple[str, str, str, str]]:
    """``(name, type, output shape, parameters)`` per module, in definition order, the input
    batch first; a module the forward did not run shows ``not run``."""
    model: nn.Module = setup.raw_model
    shapes: dict[str, str] = {}
    modules = [(name, m) for name, m in model.named_modules() if name]
    with preserved(setup):
        x, _ = first_batch(setup)
        hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, _shape(out)))
                 for name, m in modules]
        try:
            model.eval()
            with torch.no_grad(), setup.autocast():
                output = model(x)
        finally:
            for hook in hooks:
                hook.remove()
    rows = [("input", "", _shape(x), "")]
    for name, module in modules:
        count = sum(p.numel() for p in module.parameters())
        rows.append((name, type(module).__name__, shapes.get(name, "not run"), f"{count:,}"))
    if not modules:
        count = sum(p.numel() for p in model.parameters())
        rows.append(("(model)", type(model).__name__, _shape(output), f"{count:,}"))
    return rows


def layer_table(setup: Setup) -> Table:
    """The rows as a rich table (the parameter line is printed just before it)."""
    from rich.table import Table

    table = Table(title="model summary (output shapes of the first training batch)", title_justify="left")
    justify: JustifyMethod
    for column, justify in (("name", "left"), ("type", "left"), ("output shape", "right"), ("parameters", "right")):
        table.add_column(column, justify=justify)
    for row in layer_rows(setup):
        table.add_row(*row)
    return table
