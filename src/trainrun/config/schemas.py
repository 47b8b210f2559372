"""The primary schemas: ``train``'s (``TrainConfig`` with its trainer, checkpoint and device
sections), ``evaluate``'s, ``predict``'s and ``export``'s, and their registration in Hydra's
ConfigStore.

The group schemas (data, model, loss, optim, scheduler, logger) are in :mod:`trainrun.config.groups`
and are stored under ``schema/<group>/<name>``, a group of its own that ``--help`` leaves out.
Every field carries its one-line description (:func:`trainrun.config.fields.setting`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from trainrun.config.choices import (
    COMPILE_MODES,
    DeviceType,
    ExportFormat,
    FsdpInit,
    Mode,
    OnNonFinite,
    Progress,
    Split,
    Strategy,
    direction,
)
from trainrun.config.fields import Rule, at_least, finite_positive, greater_than, one_of, seed, setting, within_cpus
from trainrun.config.groups import GROUP_SCHEMAS, DataConfig


@dataclass
class DeviceConfig:
    """``auto`` picks cuda, then mps, then cpu. Asking for one that is absent is an error."""

    type: DeviceType = setting(DeviceType.auto, "auto, cpu, cuda or mps")


@dataclass
class GradClipConfig:
    max_norm: float | None = setting(None, "clip the gradients' total norm to this; null: no norm clipping",
                                     check=greater_than(0, " (or null: no clipping)", "1.0"))
    norm_type: float = setting(2.0, "the p of the p-norm for max_norm", check=greater_than(0, " (2 is the usual norm)"))
    max_value: float | None = setting(None, "clip each gradient value to [-v, v]; null: no value clipping",
                                      check=greater_than(0, " (or null: no clipping)", "1.0"))


@dataclass
class EarlyStoppingConfig:
    """Off while ``patience`` is null."""

    patience: int | None = setting(None, "epochs without improvement before stopping; null: off",
                                   check=at_least(0, " (or null: off)", "5"))
    min_delta: float = setting(0.0, "an improvement must beat the best by more than this", check=at_least(0))
    monitor: str = setting("${objective}", "the logged value watched (train_loss, val_loss, val_acc, ...); "
                           "default: the objective")
    mode: Mode = setting(Mode.auto, "auto (from the monitor's name), min or max: the direction of improvement")


@dataclass
class FsdpConfig:
    """``trainer.strategy=fsdp``'s settings (``trainrun.build.parallel``)."""

    shard: list[str] = setting(
        [], "class names of the model's blocks to shard one by one (e.g. [Block]); empty: each module "
        "that owns parameters (the built-in models' layers)")
    init: FsdpInit = setting(
        FsdpInit.device, "device (build whole, then shard) or meta (build without memory, shard, then "
        "initialize each shard with reset_parameters(): for a model larger than one device)")


@dataclass
class TrainerConfig:
    epochs: int = setting(20, "passes over the training data", check=at_least(0))
    seed: int = setting(0, "seeds torch, numpy, random and the shuffling", check=seed())
    deterministic: bool = setting(False, "torch.use_deterministic_algorithms (warn only)")
    progress: Progress = setting(
        Progress.auto, "auto (a bar on a terminal, one line per epoch otherwise), bar, epoch or none")
    precision: str = setting(
        "32", "32, bf16 (autocast, CPU and CUDA) or fp16 (autocast + GradScaler, CUDA only)",
        check=one_of("32", "bf16", "fp16"))
    accumulate_grad_batches: int = setting(1, "batches whose gradients add up before each optimizer step",
                                           check=at_least(1))
    grad_clip: GradClipConfig = setting(GradClipConfig, "gradient clipping before each optimizer step")
    compile: str = setting(
        "false", "false; true (torch.compile the model); reduce-overhead (CUDA: the whole step replayed as one "
        "CUDA graph); max-autotune (CUDA: torch.compile's autotuning mode)", check=one_of(*COMPILE_MODES))
    tf32: bool | None = setting(
        None, "CUDA: true lets fp32 matmuls and convolutions use TensorFloat-32 (faster, ~3 decimal digits); "
        "false: neither; null keeps torch's defaults (matmuls fp32, convolutions TF32)")
    channels_last: bool | None = setting(
        None, "a model with 2-d convolutions in channels_last memory format; null: on CUDA under bf16/fp16 only")
    devices: int = setting(
        1, "processes on this machine; >1 runs the same command under torchrun (torch.distributed.run) "
        "with that many processes", check=at_least(1))
    strategy: Strategy = setting(
        Strategy.ddp, "with several processes: ddp (a whole model on each) or fsdp (parameters, gradients and "
        "optimizer state sharded over them, FSDP2)")
    fsdp: FsdpConfig = setting(FsdpConfig, "the sharding of trainer.strategy=fsdp")
    ddp_timeout_s: float | None = setting(
        None, "under DDP, how long a process waits for the others in any collective before the job fails "
        "naming the process that hung; null: torch's default (30 min with gloo, 10 with nccl)",
        check=finite_positive(" (or null: torch's default)", "600"))
    on_nonfinite: OnNonFinite = setting(
        OnNonFinite.stop, "a NaN/inf loss: stop (with the batch named) or skip the batch")
    early_stopping: EarlyStoppingConfig = setting(
        EarlyStoppingConfig, "stop when a monitored value stops improving")
    threads: int | None = setting(None, "torch.set_num_threads; null keeps torch's default", check=within_cpus())
    limit_train_batches: int | None = setting(
        None, "use only the first N batches of each epoch (debug=fast / debug=overfit); null uses all",
        check=at_least(1, " (or null: all batches)", "10"))
    limit_val_batches: int | None = setting(None, "use only the first N validation batches; null uses all",
                                            check=at_least(1, " (or null: all batches)", "10"))
    val_every_n_steps: int | None = setting(
        None, "also validate every N optimizer steps inside an epoch (long epochs): a row of metrics each time, "
        "which best.pt, early stopping (patience counts validations) and curves.png follow; null: once per epoch",
        check=at_least(1, " (or null: once per epoch)", "500"))
    detect_anomaly: bool = setting(
        False, "wrap training in torch.autograd.detect_anomaly (debug=anomaly): slow, names the bad op")
    test_after_fit: bool = setting(
        True, "when the data has a test split (data.test_fraction>0): score best.pt (else last.pt, else the "
        "final weights) on it at the end, in summary.json's test entry")


@dataclass
class CheckpointConfig:
    enabled: bool = setting(True, "write checkpoints/last.pt and best.pt")
    every_n_epochs: int = setting(1, "write last.pt every N epochs", check=at_least(1))
    every_n_steps: int | None = setting(
        None, "also write last.pt every N optimizer steps (mid-epoch); null: off",
        check=at_least(1, " (or null: off)", "100"))
    monitor: str = setting(
        "${objective}", "the logged value that decides best.pt; default: the objective, so the score a sweep "
        "ranks a run by is the score of the best.pt it deploys")
    mode: Mode = setting(Mode.auto, "auto (from the monitor's name: val_acc is better higher), min or max")


@dataclass
class LrFinderConfig:
    """The learning-rate range test of ``lr_find=true|apply`` (``trainrun.tools.lr_find``)."""

    min_lr: float = setting(1e-8, "the learning rate of the first step", check=greater_than(0))
    max_lr: float = setting(1.0, "the learning rate of the last step (exponentially spaced in between)",
                            check=greater_than(0))
    steps: int = setting(100, "optimizer steps of the range test (batches repeat over epochs if needed)",
                         check=at_least(1))
    early_stop_threshold: float | None = setting(
        4.0, "stop once the smoothed loss exceeds this many times its best so far; null: run every step",
        check=greater_than(1, " (or null: off)"))


@dataclass
class ProfilerConfig:
    """``torch.profiler`` over a few training steps (``debug=profile``; ``trainrun.tools.profiler``)."""

    enabled: bool = setting(False, "profile a few training steps: a trace in <run>/profiler and the top operators")
    wait: int = setting(1, "steps skipped before the warm-up", check=at_least(0))
    warmup: int = setting(1, "steps profiled but thrown away (caches, allocator, lazy initialization)",
                          check=at_least(0))
    active: int = setting(3, "steps recorded into the trace and the operator table", check=at_least(1))
    row_limit: int = setting(15, "operators shown in the printed table", check=at_least(1))
    record_shapes: bool = setting(True, "record input shapes of each operator")
    profile_memory: bool = setting(False, "record tensor memory allocation and release")
    with_stack: bool = setting(False, "record the Python source line of each operator (larger trace)")


OVERFIT_FRACTION = Rule(lambda v: 0 < v <= 1, "in (0, 1] (a fraction of the first epoch's train_loss)", "0.1")


@dataclass
class TrainConfig:
    """The primary config of ``train`` (``configs/train.yaml`` builds on it)."""

    model: Any = setting(MISSING, "the network: an option of the model group, or model._target_=pkg.Net")
    loss: Any = setting(MISSING, "the criterion with its head and target rule: an option of the loss group")
    optim: Any = setting(MISSING, "the optimizer, built over the model's parameters: an option of optim")
    scheduler: Any = setting(MISSING, "the learning-rate schedule: an option of the scheduler group")
    data: Any = setting(MISSING, "the data source and its split/batching keys: an option of the data group")
    device: DeviceConfig = setting(DeviceConfig, "where the model and data live")
    trainer: TrainerConfig = setting(TrainerConfig, "the loop's settings")
    checkpoint: CheckpointConfig = setting(CheckpointConfig, "what is saved to checkpoints/ and when")
    objective: str = setting(
        "val_loss", "what \"best\" means: the value returned to Hydra for sweepers, a key of the epoch metrics "
        "(its value at the epoch best.pt holds; *loss/*rmse/*mae minimize, others maximize); checkpoint.monitor and "
        "early stopping follow it unless set")
    resume: str | None = setting(
        None, "null, auto (continue this run folder's last.pt if present), or a checkpoint / run folder")
    resume_changed_data: bool = setting(
        False, "resume although the data changed since the checkpoint (its split and statistics are then the "
        "new data's); by default such a resume is refused")
    explain: bool = setting(
        False, "print how model, loss, optimizer and data are bound after one step, then stop")
    print_config: bool = setting(
        False, "print the composed config as a tree at the start (it is always in <run>/.hydra/config.yaml)")
    model_summary: bool = setting(
        False, "print a table of the model's layers (name, type, output shape on a real batch, parameters)")
    preflight: bool = setting(
        True, "run one real batch through the built objects before training (changes nothing)")
    logger: dict[str, Any] = setting(
        {}, "where epoch values, params and the summary go: the logger group (csv, tensorboard, mlflow; "
        "several at once with logger=[csv,tensorboard]). One entry per chosen logger")
    metrics: list[str] = setting([], "extra validation metrics through torchmetrics (e.g. [f1, auroc])")
    callbacks: list[Any] = setting(
        [], "your own code at a run's moments: [mycb.StopAt] or [{_target_: mycb.StopAt, value: 0.97}]; hooks "
        "on_start, on_epoch_end, on_checkpoint, on_end, on_exception (docs/user-guide.md, Callbacks)")
    plot: bool = setting(True, "write curves.png (loss and metric per epoch) at the end of the run (needs matplotlib)")
    tags: list[str] = setting(
        [], "labels for the run (tags=[baseline,v2]): in summary.json, the sweep summary and every logger")
    lr_find: str = setting(
        "false", "true: a learning-rate range test before training (lr_find.csv/.png, a suggestion), the run "
        "itself unchanged; apply: train with the suggested lr", check=one_of("false", "true", "apply"))
    lr_finder: LrFinderConfig = setting(LrFinderConfig, "the range test's settings (lr_find=true|apply)")
    profiler: ProfilerConfig = setting(ProfilerConfig, "torch.profiler over a few training steps (debug=profile)")
    overfit_check: float | None = setting(
        None, "a verdict at the end: pass if the last train_loss is at most this fraction of the first epoch's, "
        "else exit 1 (debug=overfit sets 0.1); null: none", check=OVERFIT_FRACTION)


@dataclass
class TrainedRunConfig:
    """What every command that uses a trained run reads first: which checkpoint, and which of
    your own code its stored config may run (a checkpoint's config is data: see trained.py)."""

    run: str = setting(MISSING, "a run folder (holding checkpoints/) or a checkpoint file")
    checkpoint: str = setting(
        "best", "with a run folder: best (checkpoints/best.pt), last (checkpoints/last.pt), or a file name "
        "or path; ignored when run is a file")
    trust: list[str] = setting(
        [], "modules or targets of your own code that the checkpoint's config may run (trust=[mynet]); "
        "trainrun's and torch's need no trust")


@dataclass
class EvaluateConfig(TrainedRunConfig):
    """The primary config of ``evaluate`` (``configs/evaluate.yaml`` builds on it)."""

    split: Split = setting(Split.val, "the split to score: val, test or train")
    predictions: bool = setting(False, "also write predictions.csv (one row per sample of the split)")
    report: bool = setting(
        False, "classification: precision, recall, F1 per class and the confusion matrix, printed and written as "
        "report.txt and confusion.png (and in eval.json)")
    out: str | None = setting(
        None, "folder for eval.json / predictions.csv; null: <run folder>/eval/<checkpoint>_<split>")
    data: Any = setting(
        None, "data=<option> replaces the run's data config (new data, scaled and encoded with the training "
        "split's statistics); null keeps the run's own")
    device: Any = setting(None, "device=<option> replaces the run's device; null keeps the run's own")


@dataclass
class PredictConfig(TrainedRunConfig):
    """The primary config of ``predict`` (``configs/predict.yaml`` builds on it)."""

    data: DataConfig = setting(
        DataConfig, "the new data: data=<option> with its keys (data=csv data.path=new.csv) or "
        "data._target_=<your source>; the target may be missing; keys left unset are the run's")
    device: Any = setting(None, "device=<option> replaces the run's device; null keeps the run's own")


@dataclass
class ExportConfig(TrainedRunConfig):
    """The primary config of ``export-model`` (``configs/export.yaml`` builds on it)."""

    format: ExportFormat = setting(
        ExportFormat.safetensors, "safetensors (weights), torchscript (traced), exported (torch.export) or "
        "onnx (the onnx extra)")
    out: str | None = setting(
        None, "folder for the file and preprocessing.json; null: <run folder>/export/<checkpoint>")


def register() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="export_schema", node=ExportConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)
    if not OmegaConf.has_resolver("direction"):
        OmegaConf.register_new_resolver("direction", direction)
