"""What every preflight rule uses: the report, how a refusal is worded, and how to read the
built model (its body and the head the loss added)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from trainrun.build.setup import Setup
from trainrun.errors import TrainrunError

MODEL_KEY = "model._target_"


@dataclass
class Report:
    """What preflight saw; ``line`` is the one line printed when all is well."""

    line: str = ""
    warnings: list[str] = field(default_factory=list)


def shape_text(t: torch.Tensor) -> str:
    return str(list(t.shape)).replace(" ", "")


def dtype_text(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def names(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def criterion_name(setup: Setup) -> str:
    return type(setup.criterion).__name__


def refuse(message: str, *, key: str | None, fix: str | None = None) -> TrainrunError:
    return TrainrunError(f"preflight: {message}", key=key, fix=fix)


def ends_in(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    """Whether the last registered leaf module of ``module`` is one of ``kinds``."""
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    return bool(leaves) and isinstance(leaves[-1], kinds)


def split_head(setup: Setup) -> tuple[nn.Module, nn.Module | None]:
    """The user's model (body) and the head the loss added, if any."""
    module = setup.raw_model
    if setup.loss.head is not None and isinstance(module, nn.Sequential) and hasattr(module, "body"):
        return module.get_submodule("body"), module.get_submodule("head")
    return module, None


def forward_fix(err: BaseException, x: torch.Tensor) -> str:
    """The fix for a model whose forward failed on the preflight batch. A tensor on another
    device than the batch is the classic of a first GPU run: a tensor made in ``forward`` (or
    kept as a plain attribute) stays on the CPU when the model moves."""
    if "same device" in str(err) or "expected device" in str(err):  # torch words it both ways
        return (f"the batch and the model's parameters are on {x.device}; make tensors inside forward on "
                "the input's device (torch.zeros(..., device=x.device)), or create them in __init__ with "
                "self.register_buffer(...) so that moving the model moves them")
    return ("check the model's forward and the input size it expects "
            "(trainrun passes in_features / in_shape / out_features when __init__ accepts them)")
