"""Schemas of the config groups that build an object from ``_target_``: data, model, loss,
optim, scheduler and logger.

Every YAML option in ``configs/<group>/`` starts from one of these (through its defaults list,
``/schema/<group>/<name>@_here_``), so a misspelt key (``optim.lrr=0.1``) or a wrong type
(``trainer.epochs=ten``) fails while Hydra composes the config, before anything is built. Keys
that trainrun reads itself are declared on the group's base class; values that only the
``_target_`` reads are declared on that target's schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from trainrun.config.choices import Head, Interval, Missing, Mode, Output, Targets, Task
from trainrun.config.fields import at_least, fraction, greater_than, open_unit, seed, setting, sizes
from trainrun.config.loggers import (
    CsvLoggerConfig,
    MLflowLoggerConfig,
    TensorBoardLoggerConfig,
    WandbLoggerConfig,
)

# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Keys common to every data source. The source itself is ``_target_``: a callable that
    returns ``(X, y)`` arrays, or a ``torch.utils.data.Dataset`` (then a DataLoader is used)."""

    _target_: str = setting(MISSING, "the source: a callable returning (X, y) arrays, or a torch Dataset")
    task: Task = setting(Task.auto, "auto (from the targets), regression, binary or multiclass")
    batch_size: int = setting(32, "samples per batch (per process under DDP)", check=at_least(1))
    val_fraction: float = setting(0.2, "share of the samples held out for validation", check=fraction())
    test_fraction: float = setting(0.0, "share of the samples held out for test (evaluate split=test)",
                                   check=fraction())
    standardize: bool = setting(True, "scale features (and regression targets) with train-split statistics")
    shuffle: bool = setting(True, "a new order of the training samples every epoch")
    seed: int = setting(0, "seeds the split into train/val/test", check=seed())
    image_shape: list[int] | None = setting(
        None, "reshape each flat sample to this shape (e.g. [1, 8, 8] for digits under model=cnn)", check=sizes())
    num_workers: int = setting(
        0, "DataLoader worker processes (user Datasets, streamed files); in-memory data is sliced, not loaded",
        check=at_least(0))
    persistent_workers: bool = setting(True, "keep the DataLoader's workers between epochs (num_workers > 0)")
    prefetch_factor: int | None = setting(None, "batches each worker prepares ahead; null: torch's default (2)",
                                          check=at_least(1))
    pin_memory: bool | None = setting(
        None, "page-locked host batches for asynchronous copies; null: when the device is CUDA")
    missing: Missing = setting(Missing.refuse, "empty feature cells / NaN features: refuse, or fill with the "
                               "train split's mean or median, or data.fill_value (constant)")
    fill_value: float = setting(0.0, "the value empty feature cells get with data.missing=constant")


@dataclass
class SklearnDataConfig(DataConfig):
    _target_: str = "trainrun.data.sources.load_sklearn"
    name: str = setting("digits", "digits, iris, wine, breast_cancer or diabetes")


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "trainrun.data.sources.make_synthetic"
    task: Task = setting(Task.multiclass, "multiclass, binary or regression")
    n_samples: int = setting(1000, "rows generated", check=at_least(2))
    n_features: int = setting(20, "features per row", check=at_least(1))
    num_classes: int = setting(3, "classes (multiclass)", check=at_least(2))
    noise: float = setting(0.1, "label noise (classification) or target noise (regression)", check=at_least(0))


@dataclass
class ParquetDataConfig(DataConfig):
    _target_: str = "trainrun.data.sources.read_parquet"
    path: str = setting(MISSING, "the file (CSV: a header row, then one row per sample; Parquet: needs pyarrow)")
    target: str = setting(MISSING, "the column holding the targets")
    features: list[str] | None = setting(None, "the feature columns; null: every column but the target (and id)")
    id: str | None = setting(None, "a column that names each row (kept out of the features, written to "
                             "predictions.csv); predict uses the training run's")
    categorical: list[str] | None = setting(
        None, "text columns to one-hot encode even if some cells look like numbers; null: text columns are")
    stream: bool | None = setting(
        None, "read in chunks through a memory-mapped copy (true), whole into memory (false); null: "
        "stream files above data.stream_above_mb")
    stream_above_mb: int = setting(1024, "the file size above which stream=null streams", check=at_least(0))


@dataclass
class CsvDataConfig(ParquetDataConfig):
    _target_: str = "trainrun.data.sources.read_csv"
    delimiter: str = setting("auto", "the character between fields: auto (the first of , ; tab | in the "
                             "header line), or one character (tab: the word tab)")


@dataclass
class NpyDataConfig(DataConfig):
    _target_: str = "trainrun.data.sources.read_npy"
    path: str = setting(MISSING, "the features: a .npy file, a folder of .npy shards, or a glob (memory-mapped)")
    target_path: str | None = setting(
        None, "the targets: a .npy file, folder or glob with one shard per feature shard; null: predict only")


@dataclass
class NpzDataConfig(DataConfig):
    _target_: str = "trainrun.data.sources.read_npz"
    path: str = setting(MISSING, "the .npz file")
    x_key: str = setting("X", "the array holding the features")
    y_key: str = setting("y", "the array holding the targets")


# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """Sizes (``in_features``, ``in_shape``, ``out_features``) come from the data and are passed
    to the target when its signature accepts them; never type them here."""

    _target_: str = setting(MISSING, "the model class; sizes from the data are passed when it accepts them")
    output: Output = setting(Output.auto, "what forward returns: scores, probabilities or log_probabilities "
                             "(auto: raw scores for trainrun's models, observed on the first batch for yours)")


@dataclass
class MLPConfig(ModelConfig):
    _target_: str = "trainrun.build.models.MLP"
    hidden: list[int] = setting([128], "hidden layer widths, e.g. [60, 30]", check=sizes())
    activation: str = setting("relu", "relu, tanh, gelu, sigmoid, ...")
    dropout: float = setting(0.0, "dropout after each hidden layer", check=fraction())


@dataclass
class LinearConfig(ModelConfig):
    _target_: str = "trainrun.build.models.Linear"


@dataclass
class CNNConfig(ModelConfig):
    _target_: str = "trainrun.build.models.CNN"
    channels: list[int] = setting([16, 32], "output channels of each conv block", check=sizes())
    kernel_size: int = setting(3, "convolution kernel size", check=at_least(1))
    hidden: int = setting(64, "width of the dense layer after the convolutions", check=at_least(1))
    dropout: float = setting(0.0, "dropout before the output layer", check=fraction())


# --------------------------------------------------------------------------- loss


@dataclass
class LossConfig:
    """``_target_`` is the criterion; ``head`` and ``targets`` say how the model's output and
    the data's targets are prepared for it (see ``losses.py``)."""

    _target_: str = setting(MISSING, "the criterion class (torch.nn.*Loss or your own)")
    head: Head = setting(Head.none, "none, sigmoid or log_softmax: added after the model's raw output")
    targets: Targets = setting(Targets.float, "index (class ids, int64 [N]) or float ([N, k], like the output)")
    class_weights: Any = setting(
        None, "weights per class for an imbalanced target: balanced (n / (classes * count) on the training split), "
        "[w0, w1, ...] in the labels' order, or {label: weight}; null: none")
    input: Output = setting(Output.auto, "what the criterion takes: scores, probabilities or log_probabilities "
                            "(auto: known for torch's losses; declare it for your own)")


@dataclass
class CrossEntropyConfig(LossConfig):
    _target_: str = "torch.nn.CrossEntropyLoss"
    targets: Targets = Targets.index
    label_smoothing: float = setting(0.0, "torch.nn.CrossEntropyLoss label_smoothing")


# --------------------------------------------------------------------------- optimizer


@dataclass
class OptimConfig:
    """Built as ``_target_(model.parameters(), **keys)`` after the model is on its device."""

    _target_: str = setting(MISSING, "the optimizer class (torch.optim.* or your own)")
    lr: float = setting(1e-3, "learning rate", check=greater_than(0))
    weight_decay: float = setting(0.0, "L2 penalty (decoupled for AdamW)")
    foreach: bool | None = setting(None, "torch's implementation switches; None lets torch choose")


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.1
    momentum: float = setting(0.9, "momentum factor; 0 for plain SGD", check=fraction())
    nesterov: bool = setting(False, "Nesterov momentum")
    dampening: float = setting(0.0, "dampening for momentum", check=at_least(0))
    fused: bool | None = setting(None, "torch's fused implementation; null lets torch choose")


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = setting([0.9, 0.999], "coefficients of the running averages of the gradient and its square")
    eps: float = setting(1e-8, "added to the denominator for stability", check=at_least(0))
    amsgrad: bool = setting(False, "the AMSGrad variant")
    fused: bool | None = setting(None, "torch's fused implementation; null lets torch choose")


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    lr: float = 1e-3
    alpha: float = setting(0.99, "smoothing constant", check=at_least(0))
    eps: float = setting(1e-8, "added to the denominator for stability", check=at_least(0))
    momentum: float = setting(0.0, "momentum factor", check=fraction())
    centered: bool = setting(False, "normalize by an estimate of the gradient's variance")


@dataclass
class AdagradConfig(OptimConfig):
    _target_: str = "torch.optim.Adagrad"
    lr: float = 1e-2
    lr_decay: float = setting(0.0, "learning-rate decay", check=at_least(0))
    eps: float = setting(1e-10, "added to the denominator for stability", check=at_least(0))


# --------------------------------------------------------------------------- scheduler


@dataclass
class SchedulerConfig:
    """``_target_: null`` means no scheduler. ``interval`` says when ``scheduler.step()`` runs;
    ``monitor`` (plateau only) names the value passed to it."""

    _target_: str | None = setting(None, "the scheduler class; null: a constant learning rate")
    interval: Interval = setting(Interval.epoch, "epoch or step: when scheduler.step() runs")
    monitor: str | None = setting(None, "the logged value passed to step() (plateau)")


@dataclass
class StepLRConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.StepLR"
    step_size: int = setting(10, "epochs between decays", check=at_least(1))
    gamma: float = setting(0.1, "factor applied to the lr at each decay", check=greater_than(0))


@dataclass
class CosineConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = setting("${trainer.epochs}", "epochs of one cosine half-period (default: trainer.epochs)",
                         check=at_least(1, example="20"))
    eta_min: float = setting(0.0, "the lowest learning rate", check=at_least(0))


@dataclass
class OneCycleConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.OneCycleLR"
    interval: Interval = Interval.step
    max_lr: float = setting("${optim.lr}", "the peak learning rate (default: optim.lr)",
                            check=greater_than(0, example="0.1"))
    pct_start: float = setting(0.3, "share of the steps spent increasing the lr")
    total_steps: int | None = setting(
        None, "the number of optimizer steps; null: computed from the data and trainer.epochs")


@dataclass
class PlateauConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    monitor: str | None = "val_loss"
    mode: Mode = setting(Mode.auto, "auto (from the monitor's name), min or max: the direction of improvement")
    factor: float = setting(0.1, "factor applied to the lr on a plateau", check=open_unit())
    patience: int = setting(5, "epochs without improvement before the lr drops", check=at_least(0))
    threshold: float = setting(1e-4, "smallest change counted as an improvement", check=at_least(0))


# The schemas of each group, by the name its option files use (``/schema/<group>/<name>``).
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"sklearn": SklearnDataConfig, "synthetic": SyntheticDataConfig,
             "csv": CsvDataConfig, "npz": NpzDataConfig, "npy": NpyDataConfig,
             "parquet": ParquetDataConfig},
    "model": {"mlp": MLPConfig, "linear": LinearConfig, "cnn": CNNConfig},
    "loss": {"base": LossConfig, "cross_entropy": CrossEntropyConfig},
    "optim": {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamWConfig,
              "rmsprop": RMSpropConfig, "adagrad": AdagradConfig},
    "scheduler": {"none": SchedulerConfig, "step": StepLRConfig, "cosine": CosineConfig,
                  "onecycle": OneCycleConfig, "plateau": PlateauConfig},
    "logger": {"csv": CsvLoggerConfig, "tensorboard": TensorBoardLoggerConfig,
               "mlflow": MLflowLoggerConfig, "wandb": WandbLoggerConfig},
}
# The base class of each group: a section of a stored config is typed by it when its own schema
# is not known.
GROUP_BASES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig,
                                "optim": OptimConfig, "scheduler": SchedulerConfig}
