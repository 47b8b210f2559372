"""The words some keys must be one of (Enums, so Hydra lists the valid ones in its error), and
the direction a logged value improves in."""

from __future__ import annotations

from enum import Enum
from typing import Any


class Task(str, Enum):
    """What the targets are; decides the output width and the metric."""

    auto = "auto"
    regression = "regression"
    binary = "binary"
    multiclass = "multiclass"


class DeviceType(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Progress(str, Enum):
    """``auto``: a tqdm bar on a terminal, one line per epoch otherwise (batch-job logs)."""

    auto = "auto"
    bar = "bar"
    epoch = "epoch"
    none = "none"


class OnNonFinite(str, Enum):
    stop = "stop"
    skip = "skip"


class Head(str, Enum):
    """The output head a loss puts on top of the model's raw scores."""

    none = "none"
    sigmoid = "sigmoid"
    log_softmax = "log_softmax"


class Targets(str, Enum):
    """How a loss wants its targets: class indices (int64, ``[N]``) or floats (``[N, k]``)."""

    index = "index"
    float = "float"


class Mode(str, Enum):
    min = "min"
    max = "max"


class Interval(str, Enum):
    epoch = "epoch"
    step = "step"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


def text(value: Any) -> str:
    """A config value as a word: an Enum member's value, anything else as ``str``. The one place
    that turns typed choices back into text (``build`` reads the config through it once)."""
    return str(value.value if isinstance(value, Enum) else value)


def direction(name: str) -> str:
    """``minimize`` for losses and errors, ``maximize`` for scores (accuracy, f1, r2, ...)."""
    lowered = name.lower()
    return "minimize" if any(w in lowered for w in ("loss", "rmse", "mae", "mse", "error")) else "maximize"
