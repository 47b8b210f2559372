"""The configuration reference, read from the schemas (their fields' help text) and the option
files (each YAML file's first comment): ``train --help`` (:mod:`trainrun.cli.help`) and
``docs/configuration.md`` (:func:`markdown`, written by ``scripts/gen_config_docs.py``) are both
made from it, so neither can drift from the code. ``tests/unit/test_docs.py`` fails for a key without
a description and when ``docs/configuration.md`` differs from :func:`markdown`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from trainrun.config import config_dir
from trainrun.config import schemas as primary
from trainrun.config.fields import help_of
from trainrun.config.groups import GROUP_SCHEMAS

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
    "debug": "sanity checks: a fast smoke run, overfitting two batches (with a verdict), anomaly detection, "
             "profiling",
    "hparams_search": "Optuna searches (train -m hparams_search=...)",
    "hydra/launcher": "where sweep jobs run (also Hydra's basic, joblib, submitit_local, submitit_slurm)",
    "hydra/sweeper": "what chooses a sweep's jobs (the hparams_search presets use trainrun_optuna; also "
                     "Hydra's basic)",
    "hydra/sweeper/sampler": "how trainrun_optuna draws the next trial (Optuna's samplers)",
    "hydra/sweeper/pruner": "what stops trainrun_optuna's bad trials early (Optuna's pruners; the step is "
                            "the epoch)",
}
# Folders of configs/ that are not groups a user chooses from.
HIDDEN_GROUPS = ("schema", "hydra/help", "hydra/job_logging")


# --------------------------------------------------------------------------- schema keys


@dataclasses.dataclass
class Key:
    name: str  # dotted, relative to the section (``grad_clip.max_norm``)
    type: str
    default: str
    doc: str
    owner: str  # "Class.field" where it was declared


def _type_text(hint: object, declared: str) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return " | ".join(m.value for m in hint)
    return declared.replace("typing.", "").replace("Optional", "")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return MISSING


def yaml_value(value: object) -> str:
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
        return "[" + ",".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def schema_keys(cls: type, prefix: str = "") -> list[Key]:
    """Every key of the dataclass ``cls`` (nested dataclasses flattened with dots)."""
    hints = typing.get_type_hints(cls)
    keys: list[Key] = []
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        name = prefix + field.name
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys += schema_keys(hint, name + ".")
            continue
        doc, owner = help_of(cls, field.name)
        keys.append(Key(name, _type_text(hint, str(field.type)), yaml_value(_default(field)), doc, owner))
    return keys


def all_schemas() -> dict[str, type]:
    """Every schema class trainrun declares, by name: the primary configs' nested ones and the
    group schemas with their bases."""
    found: dict[str, type] = {}

    def walk(cls: type) -> None:
        found[cls.__name__] = cls
        for hint in typing.get_type_hints(cls).values():
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                walk(hint)

    walk(primary.TrainConfig)
    walk(primary.EvaluateConfig)
    walk(primary.PredictConfig)
    walk(primary.ExportConfig)
    for group in GROUP_SCHEMAS.values():
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
            doc, owner = help_of(cls, field.name)
            if not doc:
                missing.append(owner)
    return sorted(set(missing))


def top_keys() -> list[Key]:
    """The primary config's own values (not the groups, not the nested sections)."""
    nested = {"model", "loss", "optim", "scheduler", "data", "logger"}
    return [k for k in schema_keys(primary.TrainConfig) if "." not in k.name and k.name not in nested]


# --------------------------------------------------------------------------- option files


@dataclasses.dataclass
class Option:
    name: str
    doc: str
    schema: str | None  # "sklearn" for `- /schema/data/sklearn@_here_`


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
    # The first sentence: up to a period that ends one (not the one of "e.g." or "i.e.").
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.\s", text)
    return text[: end.start() + 1] if end else text


def group_options(roots: Iterable[Path] | None = None) -> dict[str, list[Option]]:
    """``group -> options`` from the YAML files under each of ``roots`` (default: trainrun's own
    ``configs/``; a user's ``--config-dir`` adds its own groups and options): the user-facing
    groups first, then the presets of Hydra's groups (``hydra/launcher``)."""
    groups: dict[str, dict[str, Option]] = {}
    for root in roots or [config_dir()]:
        for file in sorted(root.rglob("*.yaml")):
            group = file.parent.relative_to(root).as_posix()
            if group == "." or group.startswith(HIDDEN_GROUPS):
                continue
            text = file.read_text(errors="replace")
            schema = re.search(rf"/schema/{re.escape(group)}/(\w+)@", text)
            options = groups.setdefault(group, {})
            options.setdefault(file.stem, Option(file.stem, first_comment(text),
                                                 schema.group(1) if schema else None))
    ordered = sorted(groups.items(), key=lambda kv: (kv[0].startswith("hydra/"), _order(kv[0]), kv[0]))
    return {group: sorted(options.values(), key=lambda o: o.name) for group, options in ordered}


def _order(group: str) -> int:
    names = list(GROUPS)
    return names.index(group) if group in names else len(names)


# --------------------------------------------------------------------------- docs/configuration.md

_DOC_HEADER = """# Configuration reference

<!-- Generated by scripts/gen_config_docs.py from src/trainrun/config/ and configs/.
     Do not edit by hand: tests/unit/test_docs.py fails when this file and the code differ. -->

Every key below can be set on the command line (`train trainer.epochs=5 optim.lr=0.01`) or in a
YAML file. Groups are chosen with `group=option` (`train model=cnn`); their keys are then set
under the group's name (`model.channels=[8,16]`). Types and defaults come from the schemas in
`src/trainrun/config/`: a misspelt key or a wrong type stops `train` before anything is built.
`train --help` shows the groups and the main keys; `train --cfg job` prints the composed config.
"""


def _table(keys: list[Key], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key in keys:
        rows.append(f"| `{prefix}{key.name}` | {_cell(key.type)} | `{_cell(key.default)}` | {_cell(key.doc)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _doc(cls: type) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    if not doc or doc.startswith(cls.__name__ + "("):  # dataclass's generated signature
        return []
    return [" ".join(doc.split()), ""]


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
    for section, schema in (("trainer", primary.TrainerConfig), ("checkpoint", primary.CheckpointConfig),
                            ("device", primary.DeviceConfig)):
        out += [f"## `{section}`", "", *_doc(schema), *_table(schema_keys(schema), f"{section}."), ""]

    for group, by_name in GROUP_SCHEMAS.items():
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
