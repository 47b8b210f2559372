"""Where the run computes and in which precision: the device (``device.type``), autocast
(``trainer.precision``) and the compiler check for ``trainer.compile``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

from trainrun.errors import TrainrunError

PRECISIONS = ("32", "bf16", "fp16")


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent device is an error (never a
    silent fallback)."""
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    available = ["cpu"] + (["cuda"] if has_cuda else []) + (["mps"] if has_mps else [])
    if kind == "auto":
        kind = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if kind not in available:
        why = (
            f"this torch ({torch.__version__}) was built without CUDA"
            if kind == "cuda" and torch.version.cuda is None
            else f"torch sees no {kind} device on this machine"
        )
        raise TrainrunError(
            f"device={kind} was asked for, but {why}; available here: {', '.join(available)}",
            key="device",
            fix=f"use device={available[-1]} or device=auto",
        )
    if kind == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(kind)


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """What the loop enters around each forward pass: nothing for fp32, ``torch.autocast`` for
    bf16/fp16 (fp16 also turns the loop's GradScaler on, in ``build``)."""
    if precision not in PRECISIONS:
        raise TrainrunError(
            f"unknown precision {precision!r}",
            key="trainer.precision",
            fix=f"use one of {', '.join(PRECISIONS)}",
        )
    if precision == "32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise TrainrunError(
            f"trainer.precision=fp16 needs a CUDA device (the run is on {device.type})",
            key="trainer.precision",
            fix="use trainer.precision=bf16 on CPU, or device=cuda",
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def check_compiler(device: torch.device) -> None:
    """``torch.compile`` (inductor) generates C++ on CPU and needs a C++ compiler ($CXX or g++);
    on CUDA, Triton needs a C compiler. Say so before the first step instead of deep inside it."""
    wanted = os.environ.get("CXX", "g++") if device.type == "cpu" else os.environ.get("CC", "gcc")
    found = shutil.which(wanted) or (device.type == "cuda" and (shutil.which("cc") or shutil.which("clang")))
    if not found:
        kind = "C++" if device.type == "cpu" else "C"
        raise TrainrunError(
            f"trainer.compile=true needs a {kind} compiler on {device.type} (torch.compile generates "
            f"and builds native code); {wanted!r} was not found",
            key="trainer.compile",
            fix=f"install one (e.g. apt-get install {'g++' if kind == 'C++' else 'gcc'}), point "
            f"{'CXX' if kind == 'C++' else 'CC'} at it, or run with trainer.compile=false",
        )
