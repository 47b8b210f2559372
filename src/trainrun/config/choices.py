"""The words some keys must be one of (Enums, so Hydra lists the valid ones in its error), and
the direction a logged value improves in."""

from __future__ import annotations

import re
from enum import Enum

# What trainer.compile may say (a string key: YAML's true/false arrive as words): off, torch.compile's
# default mode, or one of its named modes (reduce-overhead on CUDA: trainrun's captured step).
COMPILE_MODES = ("false", "true", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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


class Output(str, Enum):
    """What a tensor of outputs means (``model.output``, ``loss.input``): ``auto`` lets trainrun
    tell (its own models and torch's losses are declared; a user's model is observed)."""

    auto = "auto"
    scores = "scores"
    probabilities = "probabilities"
    log_probabilities = "log_probabilities"


class Missing(str, Enum):
    """What an empty feature cell (CSV), a null (Parquet) or a NaN feature becomes."""

    refuse = "refuse"
    mean = "mean"
    median = "median"
    constant = "constant"


class Targets(str, Enum):
    """How a loss wants its targets: class indices (int64, ``[N]``) or floats (``[N, k]``)."""

    # "index" is the config's word (OmegaConf matches a member by name): the member shadows
    # str.index, which nothing calls on a Targets value.
    index = "index"  # type: ignore[assignment]
    float = "float"


class Mode(str, Enum):
    """Which direction of a watched value is better; ``auto`` reads it from the value's name
    (:func:`direction`)."""

    auto = "auto"
    min = "min"
    max = "max"


class Strategy(str, Enum):
    """How several processes hold the model: whole on each (ddp) or sharded over them (fsdp)."""

    ddp = "ddp"
    fsdp = "fsdp"


class FsdpInit(str, Enum):
    """Where FSDP's model is built: on its device, whole, then sharded; or on ``meta`` (no
    memory), sharded, then each process's shards materialized."""

    device = "device"
    meta = "meta"


class Interval(str, Enum):
    epoch = "epoch"
    step = "step"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


class ExportFormat(str, Enum):
    """What ``export`` writes: the weights (safetensors), a traced TorchScript module, a
    ``torch.export`` program, or an ONNX graph."""

    safetensors = "safetensors"
    torchscript = "torchscript"
    exported = "exported"
    onnx = "onnx"


def text(value: object) -> str:
    """A config value as a word: an Enum member's value, anything else as ``str``. The one place
    that turns typed choices back into text (``build`` reads the config through it once)."""
    return str(value.value if isinstance(value, Enum) else value)


# The last word of a logged name (``val_loss`` -> ``loss``) says which way it improves.
LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error", "mape")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "auroc", "precision", "recall", "r2")


def known_direction(name: str) -> str | None:
    """``minimize`` for losses and errors, ``maximize`` for scores (accuracy, f1, auroc, r2,
    top-k), None for a name trainrun cannot tell."""
    last = name.lower().rsplit("_", 1)[-1]
    if last in LOWER_IS_BETTER:
        return "minimize"
    if last in HIGHER_IS_BETTER or re.fullmatch(r"top\d+", last):
        return "maximize"
    return None


def direction(name: str) -> str:
    """:func:`known_direction`, for names already checked to be known (every value a run logs
    is); an unknown name is taken as a score (higher is better)."""
    return known_direction(name) or "maximize"


def mode_of(name: str) -> str | None:
    """``min`` / ``max`` for a watched value, from its name; None when unknown."""
    known = known_direction(name)
    return None if known is None else ("min" if known == "minimize" else "max")
