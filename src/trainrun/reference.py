"""The configuration reference, read from the schemas (``config.py``) and the option files
(``configs/<group>/<option>.yaml``): ``train --help`` and ``docs/configuration.md`` are both
made here, so neither can drift from the code.

* A key's description is the comment above its field in ``config.py`` (or on the same line),
  else an entry in :data:`DESCRIPTIONS` below. ``tests/test_docs.py`` fails for a key with
  neither, and when ``docs/configuration.md`` differs from :func:`markdown` (regenerate it with
  ``python scripts/gen_config_docs.py``).
* An option's one-line description is the first comment of its YAML file.

``train --help`` is Hydra's help template (``configs/hydra/help/trainrun.yaml``) calling the
``trainrun_help`` resolver registered here, so it is built when asked for, from the files
present, with the current choices marked.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from trainrun import config as schemas

# Descriptions of fields that carry no comment in config.py, by "Class.field" (looked up along
# the class's bases, so OptimConfig.lr serves every optimizer).
DESCRIPTIONS: dict[str, str] = {
    "TrainConfig.model": "the network: an option of the model group, or model._target_=pkg.Net",
    "TrainConfig.loss": "the criterion with its head and target rule: an option of the loss group",
    "TrainConfig.optim": "the optimizer, built over the model's parameters: an option of optim",
    "TrainConfig.scheduler": "the learning-rate schedule: an option of the scheduler group",
    "TrainConfig.data": "the data source and its split/batching keys: an option of the data group",
    "TrainConfig.device": "where the model and data live",
    "TrainConfig.trainer": "the loop's settings",
    "TrainConfig.checkpoint": "what is saved to checkpoints/ and when",
    "TrainConfig.explain": "print how model, loss, optimizer and data are bound after one step, then stop",
    "TrainConfig.print_config": "print the composed config as a tree at the start",
    "TrainConfig.preflight": "run one real batch through the built objects before training (changes nothing)",
    "DeviceConfig.type": "auto, cpu, cuda or mps",
    "TrainerConfig.epochs": "passes over the training data",
    "TrainerConfig.seed": "seeds torch, numpy, random and the shuffling",
    "TrainerConfig.deterministic": "torch.use_deterministic_algorithms (warn only)",
    "TrainerConfig.progress": "auto (a bar on a terminal, one line per epoch otherwise), bar, epoch or none",
    "TrainerConfig.accumulate_grad_batches": "batches whose gradients add up before each optimizer step",
    "TrainerConfig.grad_clip": "gradient clipping before each optimizer step",
    "TrainerConfig.compile": "torch.compile the model",
    "TrainerConfig.on_nonfinite": "a NaN/inf loss: stop (with the batch named) or skip the batch",
    "TrainerConfig.early_stopping": "stop when a monitored value stops improving",
    "TrainerConfig.limit_val_batches": "use only the first N validation batches; null uses all",
    "GradClipConfig.max_norm": "clip the gradients' total norm to this; null: no norm clipping",
    "GradClipConfig.norm_type": "the p of the p-norm for max_norm",
    "GradClipConfig.max_value": "clip each gradient value to [-v, v]; null: no value clipping",
    "EarlyStoppingConfig.patience": "epochs without improvement before stopping; null: off",
    "EarlyStoppingConfig.min_delta": "an improvement must beat the best by more than this",
    "EarlyStoppingConfig.monitor": "the logged value watched (train_loss, val_loss, val_acc, ...)",
    "EarlyStoppingConfig.mode": "min or max: the direction of improvement",
    "CheckpointConfig.enabled": "write checkpoints/last.pt and best.pt",
    "CheckpointConfig.every_n_epochs": "write last.pt every N epochs",
    "CheckpointConfig.every_n_steps": "also write last.pt every N optimizer steps (mid-epoch); null: off",
    "CheckpointConfig.monitor": "the logged value that decides best.pt",
    "CheckpointConfig.mode": "min or max: which direction of monitor is better",
    "DataConfig._target_": "the source: a callable returning (X, y) arrays, or a torch Dataset",
    "DataConfig.task": "auto (from the targets), regression, binary or multiclass",
    "DataConfig.batch_size": "samples per batch (per process under DDP)",
    "DataConfig.val_fraction": "share of the samples held out for validation",
    "DataConfig.test_fraction": "share of the samples held out for test (evaluate split=test)",
    "DataConfig.standardize": "scale features (and regression targets) with train-split statistics",
    "DataConfig.shuffle": "a new order of the training samples every epoch",
    "DataConfig.seed": "seeds the split into train/val/test",
    "SklearnDataConfig.name": "digits, iris, wine, breast_cancer or diabetes",
    "SyntheticDataConfig.task": "multiclass, binary or regression",
    "SyntheticDataConfig.n_samples": "rows generated",
    "SyntheticDataConfig.n_features": "features per row",
    "SyntheticDataConfig.num_classes": "classes (multiclass)",
    "SyntheticDataConfig.noise": "label noise (classification) or target noise (regression)",
    "CsvDataConfig.path": "the CSV file (a header row, then one row per sample)",
    "CsvDataConfig.target": "the column holding the targets",
    "CsvDataConfig.features": "the feature columns; null: every column but the target",
    "NpzDataConfig.path": "the .npz file",
    "NpzDataConfig.x_key": "the array holding the features",
    "NpzDataConfig.y_key": "the array holding the targets",
    "ModelConfig._target_": "the model class; sizes from the data are passed when it accepts them",
    "MLPConfig.hidden": "hidden layer widths, e.g. [60, 30]",
    "MLPConfig.activation": "relu, tanh, gelu, sigmoid, ...",
    "MLPConfig.dropout": "dropout after each hidden layer",
    "CNNConfig.channels": "output channels of each conv block",
    "CNNConfig.kernel_size": "convolution kernel size",
    "CNNConfig.hidden": "width of the dense layer after the convolutions",
    "CNNConfig.dropout": "dropout before the output layer",
    "LossConfig._target_": "the criterion class (torch.nn.*Loss or your own)",
    "LossConfig.head": "none, sigmoid or log_softmax: added after the model's raw output",
    "LossConfig.targets": "index (class ids, int64 [N]) or float ([N, k], like the output)",
    "CrossEntropyConfig.label_smoothing": "torch.nn.CrossEntropyLoss label_smoothing",
    "OptimConfig._target_": "the optimizer class (torch.optim.* or your own)",
    "OptimConfig.lr": "learning rate",
    "OptimConfig.weight_decay": "L2 penalty (decoupled for AdamW)",
    "SGDConfig.momentum": "momentum factor; 0 for plain SGD",
    "SGDConfig.nesterov": "Nesterov momentum",
    "SGDConfig.dampening": "dampening for momentum",
    "SGDConfig.fused": "torch's fused implementation; null lets torch choose",
    "AdamConfig.betas": "coefficients of the running averages of the gradient and its square",
    "AdamConfig.eps": "added to the denominator for stability",
    "AdamConfig.amsgrad": "the AMSGrad variant",
    "AdamConfig.fused": "torch's fused implementation; null lets torch choose",
    "RMSpropConfig.alpha": "smoothing constant",
    "RMSpropConfig.eps": "added to the denominator for stability",
    "RMSpropConfig.momentum": "momentum factor",
    "RMSpropConfig.centered": "normalize by an estimate of the gradient's variance",
    "AdagradConfig.lr_decay": "learning-rate decay",
    "AdagradConfig.eps": "added to the denominator for stability",
    "SchedulerConfig._target_": "the scheduler class; null: a constant learning rate",
    "SchedulerConfig.interval": "epoch or step: when scheduler.step() runs",
    "SchedulerConfig.monitor": "the logged value passed to step() (plateau)",
    "StepLRConfig.step_size": "epochs between decays",
    "StepLRConfig.gamma": "factor applied to the lr at each decay",
    "CosineConfig.T_max": "epochs of one cosine half-period (default: trainer.epochs)",
    "CosineConfig.eta_min": "the lowest learning rate",
    "OneCycleConfig.max_lr": "the peak learning rate (default: optim.lr)",
    "OneCycleConfig.pct_start": "share of the steps spent increasing the lr",
    "PlateauConfig.mode": "min or max: the direction of improvement of monitor",
    "PlateauConfig.factor": "factor applied to the lr on a plateau",
    "PlateauConfig.patience": "epochs without improvement before the lr drops",
    "PlateauConfig.threshold": "smallest change counted as an improvement",
    "LoggerConfig._target_": "the logger class (trainrun.loggers.* or your own)",
    "MLflowLoggerConfig.experiment_name": "the MLflow experiment the run is filed under",
}

# One line per config group, for --help and the docs; a group not listed shows none.
GROUPS: dict[str, str] = {
    "model": "the network (its sizes come from the data)",
    "loss": "the criterion, its output head and its target rule",
    "optim": "the optimizer, bound to the model's parameters",
    "scheduler": "the learning-rate schedule",
    "data": "where samples come from, split and batching",
    "device": "where the model and data live",
    "trainer": "the loop's settings (epochs, precision, accumulation, ...)",
    "logger": "where epoch values go; several at once: logger=[csv,tensorboard]",
    "experiment": "complete recipes that reach a stated quality (docs/recipes.md)",
    "debug": "sanity checks: a fast smoke run, overfitting two batches, anomaly detection",
    "hparams_search": "Optuna searches (train -m hparams_search=...)",
    "hydra/launcher": "where sweep jobs run (also Hydra's basic, joblib, submitit_local, submitit_slurm)",
}
HIDDEN_GROUPS = ("schema", "hydra/help", "hydra/job_logging")


# --------------------------------------------------------------------------- schema keys


@dataclasses.dataclass
class Key:
    name: str  # dotted, relative to the group (``grad_clip.max_norm``)
    type: str
    default: str
    doc: str
    owner: str  # "Class.field" where it was declared


def _comments(cls: type) -> dict[str, str]:
    """``field -> comment`` from the source of ``cls`` itself (not its bases): the comment
    lines right above a field, or the comment at the end of its line."""
    try:
        lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    above: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"\s{4}(\w+)\s*:", line)
        if match:
            inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            if inline.startswith("type:"):
                inline = ""
            text = " ".join(above) or inline
            if text:
                found[match.group(1)] = text
        above = []
    return found


def describe(cls: type, field: str) -> tuple[str, str]:
    """The description of ``cls.field`` and where it was found (``Class.field``)."""
    for base in cls.__mro__:
        if not dataclasses.is_dataclass(base) or field not in getattr(base, "__annotations__", {}):
            continue
        comment = _comments(base).get(field)
        text = _sentence_case(comment) if comment else DESCRIPTIONS.get(f"{base.__name__}.{field}")
        if text:
            return text, f"{base.__name__}.{field}"
    return "", f"{cls.__name__}.{field}"


def _sentence_case(text: str) -> str:
    """One style for comments and table entries: no capital to start (unless an acronym), no
    final period."""
    text = text.strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    first = text.split(" ", 1)[0]
    if first.isalpha() and first[0].isupper() and (len(first) == 1 or first[1:].islower()):
        text = text[0].lower() + text[1:]
    return text


def _type_text(hint: Any, declared: str) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return " | ".join(m.value for m in hint)
    return declared.replace("typing.", "").replace("Optional", "")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return MISSING


def _yaml(value: Any) -> str:
    """A default as it is typed on the command line."""
    if isinstance(value, str) and value == MISSING:
        return "(required)"
    if isinstance(value, Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def schema_keys(cls: type, prefix: str = "") -> list[Key]:
    """Every key of the dataclass ``cls`` (nested dataclasses flattened with dots)."""
    hints = typing.get_type_hints(cls)
    keys: list[Key] = []
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        default = _default(field)
        doc, owner = describe(cls, field.name)
        name = prefix + field.name
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys += schema_keys(hint, name + ".")
            continue
        keys.append(Key(name, _type_text(hint, str(field.type)), _yaml(default), doc, owner))
    return keys


def all_schemas() -> dict[str, type]:
    """Every schema class trainrun declares, by name: the primary config's nested ones and the
    group schemas."""
    found: dict[str, type] = {}

    def walk(cls: type) -> None:
        found[cls.__name__] = cls
        for hint in typing.get_type_hints(cls).values():
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                walk(hint)

    walk(schemas.TrainConfig)
    for group in schemas.SCHEMAS.values():
        for cls in group.values():
            for base in cls.__mro__:
                if dataclasses.is_dataclass(base):
                    found.setdefault(base.__name__, base)
    return found


def undocumented() -> list[str]:
    """``Class.field`` of every schema key without a description (the docs test lists them)."""
    missing = []
    for cls in all_schemas().values():
        for field in dataclasses.fields(cls):
            doc, owner = describe(cls, field.name)
            if not doc:
                missing.append(owner)
    return sorted(set(missing))


# --------------------------------------------------------------------------- option files


@dataclasses.dataclass
class Option:
    name: str
    doc: str
    schema: str | None  # "sklearn" for `- /schema/data/sklearn@_here_`


def config_dir() -> Path:
    from trainrun.cli import config_dir as find

    return Path(find())


def first_comment(text: str) -> str:
    """The first sentence of a YAML file's leading comment (``@package`` lines skipped)."""
    words: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if words or stripped:
                break
            continue
        body = stripped.lstrip("#")
        if body.strip().startswith("@package"):
            continue
        if not body.strip() or (words and body.startswith("   ")):  # blank or an example
            if words:
                break
            continue
        words.append(body.strip())
        if body.rstrip().endswith((".", ":", ")")) and not body.rstrip().endswith("e.g."):
            break
    text = re.split(r":\s{2,}", " ".join(words))[0].rstrip(":").strip()  # not an inline example
    if len(text) > 110:
        text = text[:107].rsplit(" ", 1)[0].rstrip(",;") + "..."
    return text


def group_options(root: Path | None = None) -> dict[str, list[Option]]:
    """``group -> options`` from the files under ``configs/``: the user's groups, then the
    project's presets of Hydra's groups (``hydra/launcher``)."""
    root = root or config_dir()
    groups: dict[str, list[Option]] = {}
    for file in sorted(root.rglob("*.yaml")):
        group = file.parent.relative_to(root).as_posix()
        if group == "." or group.startswith(HIDDEN_GROUPS):
            continue
        text = file.read_text()
        schema = re.search(rf"/schema/{re.escape(group)}/(\w+)@", text)
        groups.setdefault(group, []).append(
            Option(file.stem, first_comment(text), schema.group(1) if schema else None)
        )
    return dict(sorted(groups.items(), key=lambda kv: (kv[0].startswith("hydra/"), _order(kv[0]))))


def _order(group: str) -> int:
    names = list(GROUPS)
    return names.index(group) if group in names else len(names)


# --------------------------------------------------------------------------- --help

EXAMPLES = [
    ("train", "digits, an MLP and Adam: a result in seconds"),
    ("train model=cnn optim=sgd optim.lr=0.05 trainer.epochs=30", "swap groups, set keys"),
    ("train experiment=tutorial_binary", "a recipe (configs/experiment/)"),
    ("train debug=overfit", "sanity check: train loss should reach ~0"),
    ("train -m optim.lr=0.001,0.01,0.1 model=mlp,linear", "sweep: 6 jobs, summary.csv in multirun/..."),
    ("train -m hparams_search=mlp hydra.sweeper.n_trials=30", "Optuna search"),
    ("train -m hydra/launcher=slurm hydra.launcher.partition=gpu optim.lr=0.1,0.01",
     "SLURM array job"),
    ("train hydra.run.dir=<run folder> resume=auto", "resume a run from its last.pt"),
    ("evaluate run=<run folder> split=test", "score best.pt on the test split"),
    ("train logger=[csv,tensorboard] metrics=[f1,auroc] data=breast_cancer loss=bce",
     "TensorBoard + extra metrics"),
]


def _choice(root: Any, group: str) -> list[str]:
    """The current option(s) of ``group`` in the config being composed."""
    if root is None:
        return []
    if group == "logger":
        return list((root.get("logger") or {}).keys())
    try:
        choices = root.hydra.runtime.choices
        value = choices.get(group)
    except Exception:
        return []
    return [] if value is None else [str(value)]


def help_groups(root: Any = None) -> str:
    lines = []
    for group, options in group_options().items():
        current = _choice(root, group)
        lines.append(f"  {group:<18}{GROUPS.get(group, '')}")
        width = max(len(o.name) for o in options) + 2
        for option in options:
            mark = "*" if option.name in current else " "
            lines.append(_fit(f"    {mark} {option.name:<{max(width, 16)}}{option.doc}"))
    return "\n".join(lines)


def top_keys() -> list[Key]:
    """The primary config's own values (not the groups, not the nested sections)."""
    nested = {"model", "loss", "optim", "scheduler", "data", "logger"}
    return [k for k in schema_keys(schemas.TrainConfig) if "." not in k.name and k.name not in nested]


def help_keys(group: str) -> str:
    keys = top_keys() if group == "top" else schema_keys(
        {"trainer": schemas.TrainerConfig, "data": schemas.DataConfig}[group])
    lines = []
    for key in keys:
        if key.name == "_target_":
            continue
        setting = f"{key.name}={key.default}" if group == "top" else f"{group}.{key.name}={key.default}"
        lines.append(_fit(f"  {setting:<42}{key.doc}" if len(setting) < 42 else f"  {setting}  {key.doc}"))
    return "\n".join(lines)


def _fit(line: str, width: int = 118) -> str:
    return line if len(line) <= width else line[: width - 3].rstrip(" ,;") + "..."


def help_examples() -> str:
    lines = []
    for command, what in EXAMPLES:
        if len(command) <= 62:
            lines.append(f"  {command:<62}  # {what}")
        else:
            lines += [f"  # {what}:", f"  {command}"]
    return "\n".join(lines)


def help_section(what: str, _root_: Any = None) -> str:
    """The ``trainrun_help`` resolver: one generated section of ``train --help``. Its text goes
    through ``string.Template`` afterwards, so ``$`` is doubled."""
    try:
        text = {
            "groups": lambda: help_groups(_root_),
            "trainer": lambda: help_keys("trainer"),
            "data": lambda: help_keys("data"),
            "top": lambda: help_keys("top"),
            "examples": help_examples,
        }[what]()
    except Exception as err:  # help must always print
        text = f"  (could not list {what}: {type(err).__name__}: {err})"
    return text.replace("$", "$$")


def register() -> None:
    if not OmegaConf.has_resolver("trainrun_help"):
        OmegaConf.register_new_resolver("trainrun_help", help_section)


register()


# --------------------------------------------------------------------------- docs

_DOC_HEADER = """# Configuration reference

<!-- Generated by scripts/gen_config_docs.py from src/trainrun/config.py and configs/.
     Do not edit by hand: tests/test_docs.py fails when this file and the code differ. -->

Every key below can be set on the command line (`train trainer.epochs=5 optim.lr=0.01`) or in a
YAML file. Groups are chosen with `group=option` (`train model=cnn`); their keys are then set
under the group's name (`model.channels=[8,16]`). Types and defaults come from the schemas in
`src/trainrun/config.py`: a misspelt key or a wrong type stops `train` before anything is built.
`train --help` shows the groups and the main keys; `train --cfg job` prints the composed config.
"""


def _table(keys: list[Key], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key in keys:
        rows.append(f"| `{prefix}{key.name}` | {_cell(key.type)} | `{_cell(key.default)}` | {_cell(key.doc)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    out = [_DOC_HEADER, "## Groups and options", ""]
    options = group_options()
    for group, opts in options.items():
        out.append(f"### `{group}`: {GROUPS.get(group, '')}".rstrip(": "))
        out.append("")
        for option in opts:
            out.append(f"- `{group}={option.name}`: {option.doc}")
        out.append("")

    out += ["## Top-level keys", "", *_table(top_keys(), ""), ""]
    for section, cls in (("trainer", schemas.TrainerConfig), ("checkpoint", schemas.CheckpointConfig),
                         ("device", schemas.DeviceConfig)):
        out += [f"## `{section}`", "", *_doc(cls), *_table(schema_keys(cls), f"{section}."), ""]

    for group, by_name in schemas.SCHEMAS.items():
        classes = list(by_name.values())
        base = next(c for c in classes[0].__mro__ if all(issubclass(k, c) for k in classes))
        common = {k.name: k for k in schema_keys(base)}
        # logger=[a,b] keeps one entry per choice: logger.<name>.<key>
        prefix = "logger.<name>." if group == "logger" else f"{group}."
        out += [f"## `{group}`", "", *_doc(base), f"Keys every `{group}` option has:", ""]
        out += [*_table(list(common.values()), prefix), ""]
        for schema_name, cls in by_name.items():
            users = [o.name for o in options.get(group, []) if o.schema == schema_name]
            used = f" (options: {', '.join(f'`{u}`' for u in users)})" if users else ""
            own = [k for k in schema_keys(cls) if k.name not in common or k.default != common[k.name].default]
            table_prefix = f"logger.{schema_name}." if group == "logger" else prefix
            out += [f"### `{group}` schema `{schema_name}`{used}", ""]
            out += [*(_table(own, table_prefix) if own else ["Only the common keys."]), ""]
    return "\n".join(out).rstrip() + "\n"


def _doc(cls: type) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    if not doc or doc.startswith(cls.__name__ + "("):  # dataclass's generated signature
        return []
    return [" ".join(doc.split()), ""]
