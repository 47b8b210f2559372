"""Structured-config schemas, registered in Hydra's ConfigStore.

Every YAML option in ``configs/`` starts from one of these dataclasses (through its defaults
list, ``/schema/<group>/<name>@_here_``), so a misspelt key (``optim.lrr=0.1``) or a wrong type
(``trainer.epochs=ten``) fails while Hydra composes the config, before anything is built.

Keys that trainrun itself reads are declared here; values that only a ``_target_`` reads are
declared on that target's schema. Choices that must be one of a few words are Enums, so Hydra
lists the valid ones in its error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# --------------------------------------------------------------------------- choices


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


# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Keys common to every data source. The source itself is ``_target_``: a callable that
    returns ``(X, y)`` arrays, or a ``torch.utils.data.Dataset`` (then a DataLoader is used)."""

    _target_: str = MISSING
    task: Task = Task.auto
    batch_size: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    standardize: bool = True
    shuffle: bool = True
    seed: int = 0
    # Reshape each flat sample to this shape (e.g. [1, 8, 8] for digits under model=cnn).
    image_shape: list[int] | None = None
    # Only for the DataLoader path (user Datasets); in-memory data is sliced, not loaded.
    num_workers: int = 0


@dataclass
class SklearnDataConfig(DataConfig):
    _target_: str = "trainrun.data.load_sklearn"
    name: str = "digits"


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "trainrun.data.make_synthetic"
    task: Task = Task.multiclass
    n_samples: int = 1000
    n_features: int = 20
    num_classes: int = 3
    noise: float = 0.1


@dataclass
class CsvDataConfig(DataConfig):
    _target_: str = "trainrun.data.read_csv"
    path: str = MISSING
    target: str = MISSING
    features: list[str] | None = None


@dataclass
class NpzDataConfig(DataConfig):
    _target_: str = "trainrun.data.read_npz"
    path: str = MISSING
    x_key: str = "X"
    y_key: str = "y"


# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """Sizes (``in_features``, ``in_shape``, ``out_features``) come from the data and are passed
    to the target when its signature accepts them; never type them here."""

    _target_: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    _target_: str = "trainrun.models.MLP"
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class LinearConfig(ModelConfig):
    _target_: str = "trainrun.models.Linear"


@dataclass
class CNNConfig(ModelConfig):
    _target_: str = "trainrun.models.CNN"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    hidden: int = 64
    dropout: float = 0.0


# --------------------------------------------------------------------------- loss


@dataclass
class LossConfig:
    """``_target_`` is the criterion; ``head`` and ``targets`` say how the model's output and
    the data's targets are prepared for it (see ``losses.py``)."""

    _target_: str = MISSING
    head: Head = Head.none
    targets: Targets = Targets.float


@dataclass
class CrossEntropyConfig(LossConfig):
    _target_: str = "torch.nn.CrossEntropyLoss"
    targets: Targets = Targets.index
    label_smoothing: float = 0.0


# --------------------------------------------------------------------------- optimizer


@dataclass
class OptimConfig:
    """Built as ``_target_(model.parameters(), **keys)`` after the model is on its device."""

    _target_: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    # torch's implementation switches; None lets torch choose.
    foreach: bool | None = None


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    dampening: float = 0.0
    fused: bool | None = None


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False
    fused: bool | None = None


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    lr: float = 1e-3
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@dataclass
class AdagradConfig(OptimConfig):
    _target_: str = "torch.optim.Adagrad"
    lr: float = 1e-2
    lr_decay: float = 0.0
    eps: float = 1e-10


# --------------------------------------------------------------------------- scheduler


class Interval(str, Enum):
    epoch = "epoch"
    step = "step"


@dataclass
class SchedulerConfig:
    """``_target_: null`` means no scheduler. ``interval`` says when ``scheduler.step()`` runs;
    ``monitor`` (plateau only) names the value passed to it."""

    _target_: str | None = None
    interval: Interval = Interval.epoch
    monitor: str | None = None


@dataclass
class StepLRConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 10
    gamma: float = 0.1


@dataclass
class CosineConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = "${trainer.epochs}"  # type: ignore[assignment]
    eta_min: float = 0.0


@dataclass
class OneCycleConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.OneCycleLR"
    interval: Interval = Interval.step
    max_lr: float = "${optim.lr}"  # type: ignore[assignment]
    pct_start: float = 0.3
    # total_steps is computed from the data and epochs when left null.
    total_steps: int | None = None


@dataclass
class PlateauConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    monitor: str | None = "val_loss"
    mode: Mode = Mode.min
    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-4


# --------------------------------------------------------------------------- device, trainer


@dataclass
class DeviceConfig:
    """``auto`` picks cuda, then mps, then cpu. Asking for one that is absent is an error."""

    type: DeviceType = DeviceType.auto


@dataclass
class GradClipConfig:
    max_norm: float | None = None
    norm_type: float = 2.0
    max_value: float | None = None


@dataclass
class EarlyStoppingConfig:
    """Off while ``patience`` is null."""

    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"
    mode: Mode = Mode.min


@dataclass
class TrainerConfig:
    epochs: int = 20
    seed: int = 0
    deterministic: bool = False
    progress: Progress = Progress.auto
    # "32", "bf16" (autocast, CPU and CUDA) or "fp16" (autocast + GradScaler, CUDA only).
    precision: str = "32"
    accumulate_grad_batches: int = 1
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)
    compile: bool = False
    # Processes on this machine; >1 starts DDP workers with torch's elastic launcher.
    devices: int = 1
    on_nonfinite: OnNonFinite = OnNonFinite.stop
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # torch.set_num_threads; null keeps torch's default.
    threads: int | None = None
    # Use only the first N batches of each epoch (debug=fast / debug=overfit); null uses all.
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    # Wrap training in torch.autograd.detect_anomaly (debug=anomaly): slow, names the bad op.
    detect_anomaly: bool = False


@dataclass
class CheckpointConfig:
    enabled: bool = True
    every_n_epochs: int = 1
    every_n_steps: int | None = None
    monitor: str = "val_loss"
    mode: Mode = Mode.min


@dataclass
class TrainConfig:
    """The primary config of ``train`` (``configs/train.yaml`` builds on it)."""

    model: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    scheduler: Any = MISSING
    data: Any = MISSING
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # The value returned to Hydra for sweepers: a key of the epoch metrics (best value of the
    # run, in the direction implied by its name: *loss/*rmse/*mae minimize, others maximize).
    objective: str = "val_loss"
    # null, "auto" (continue this run folder's last.pt if present), or a checkpoint / run folder.
    resume: str | None = None
    explain: bool = False
    print_config: bool = True
    preflight: bool = True
    # Where epoch values, params and the summary go: the `logger` group (csv, tensorboard,
    # mlflow; several at once with logger=[csv,tensorboard]). One entry per chosen logger.
    logger: dict[str, Any] = field(default_factory=dict)
    # Extra validation metrics through torchmetrics (e.g. [f1, auroc]); see trainrun.metrics.
    metrics: list[str] = field(default_factory=list)
    # Write curves.png (loss and metric per epoch) at the end of the run (needs matplotlib).
    plot: bool = True


# --------------------------------------------------------------------------- loggers


@dataclass
class LoggerConfig:
    """One chosen logger (``logger.<name>``); built with the run folder (``trainrun.loggers``)."""

    _target_: str = MISSING


@dataclass
class CsvLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.loggers.CsvLogger"


@dataclass
class TensorBoardLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.loggers.TensorBoardLogger"
    # Event files go here (relative paths are inside the run folder).
    log_dir: str = "tensorboard"


@dataclass
class MLflowLoggerConfig(LoggerConfig):
    _target_: str = "trainrun.loggers.MLflowLogger"
    # null: a local file store in the run folder (<run>/mlruns); or http://host:5000,
    # sqlite:///mlflow.db, file:///shared/mlruns, ...
    tracking_uri: str | None = None
    experiment_name: str = "trainrun"
    # null: the run folder's name.
    run_name: str | None = None


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "sklearn": SklearnDataConfig,
        "synthetic": SyntheticDataConfig,
        "csv": CsvDataConfig,
        "npz": NpzDataConfig,
    },
    "model": {"mlp": MLPConfig, "linear": LinearConfig, "cnn": CNNConfig},
    "loss": {"base": LossConfig, "cross_entropy": CrossEntropyConfig},
    "optim": {
        "sgd": SGDConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "rmsprop": RMSpropConfig,
        "adagrad": AdagradConfig,
    },
    "scheduler": {
        "none": SchedulerConfig,
        "step": StepLRConfig,
        "cosine": CosineConfig,
        "onecycle": OneCycleConfig,
        "plateau": PlateauConfig,
    },
    "logger": {
        "csv": CsvLoggerConfig,
        "tensorboard": TensorBoardLoggerConfig,
        "mlflow": MLflowLoggerConfig,
    },
}


def objective_direction(name: str) -> str:
    """``minimize`` for losses and errors, ``maximize`` for scores (accuracy, f1, r2, ...)."""
    lowered = name.lower()
    return "minimize" if any(w in lowered for w in ("loss", "rmse", "mae", "mse", "error")) else "maximize"


def register() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent; called on import)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    if not OmegaConf.has_resolver("direction"):
        OmegaConf.register_new_resolver("direction", objective_direction)


register()
