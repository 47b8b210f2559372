"""Value checks on the composed config, before anything is built.

:func:`check_config` runs first thing in ``train``: values that have the right type but cannot
work (``optim.lr=-1``, ``data.batch_size=0``, fractions that leave no training split), required
values left empty (``data=csv`` without ``data.path``), and interpolations that point nowhere.
Each message names the key, the value and the fix. Wrong keys and types never get here: the
schemas refuse them while Hydra composes (``trainrun.cli.hydra_errors`` words those errors).

Long because every value rule of every section (trainer, data, optim, scheduler, lr_finder, ...)
is one row of one table here, with the few checks across keys next to it: one place to look.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.config.schemas import TrainConfig
from trainrun.errors import TrainrunError, did_you_mean

# --------------------------------------------------------------------------- value checks

_ABSENT = object()
PRECISIONS = ("32", "bf16", "fp16")
LR_FIND = ("false", "true", "apply")


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _at_least_one(v: Any) -> bool:
    return v >= 1


def _fraction(v: Any) -> bool:
    return 0 <= v < 1


def _open_unit(v: Any) -> bool:
    return 0 < v < 1


# Seeds feed torch's and numpy's generators and trainrun's per-epoch shuffle seed
# (seed * 1_000_003 + epoch must fit a 64-bit generator seed).
SEED_RANGE = "a whole number in [0, 2**32)"


def _seed(v: Any) -> bool:
    return isinstance(v, int) and 0 <= v < 2**32


# (key, test, what the value must be, an example of a good value). A key the config does not
# have (a user's own _target_ node) is skipped; ``None`` passes wherever null means "off".
RULES: list[tuple[str, Callable[[Any], bool], str, str]] = [
    ("optim.lr", _positive, "greater than 0", "optim.lr=0.01"),
    # torch accepts any momentum >= 0; 1 or more never decays the velocity and diverges.
    ("optim.momentum", _fraction, "in [0, 1)", "optim.momentum=0.9"),
    ("optim.dampening", _non_negative, "0 or more", "optim.dampening=0"),
    ("optim.eps", _non_negative, "0 or more", "optim.eps=1e-8"),
    ("optim.alpha", _non_negative, "0 or more", "optim.alpha=0.99"),
    ("optim.lr_decay", _non_negative, "0 or more", "optim.lr_decay=0"),
    ("data.batch_size", _at_least_one, "at least 1", "data.batch_size=32"),
    ("data.val_fraction", _fraction, "in [0, 1)", "data.val_fraction=0.2"),
    ("data.test_fraction", _fraction, "in [0, 1)", "data.test_fraction=0.1"),
    ("data.num_workers", _non_negative, "0 or more", "data.num_workers=0"),
    ("data.seed", _seed, SEED_RANGE, "data.seed=0"),
    ("data.n_samples", lambda v: v >= 2, "at least 2", "data.n_samples=1000"),
    ("data.n_features", _at_least_one, "at least 1", "data.n_features=20"),
    ("data.num_classes", lambda v: v >= 2, "at least 2", "data.num_classes=3"),
    ("data.noise", _non_negative, "0 or more", "data.noise=0.1"),
    ("model.dropout", _fraction, "in [0, 1)", "model.dropout=0.1"),
    ("model.kernel_size", _at_least_one, "at least 1", "model.kernel_size=3"),
    ("trainer.epochs", _non_negative, "0 or more", "trainer.epochs=20"),
    ("trainer.seed", _seed, SEED_RANGE, "trainer.seed=0"),
    ("trainer.limit_train_batches", _at_least_one, "at least 1 (or null: all batches)",
     "trainer.limit_train_batches=10"),
    ("trainer.limit_val_batches", _at_least_one, "at least 1 (or null: all batches)",
     "trainer.limit_val_batches=10"),
    ("trainer.accumulate_grad_batches", _at_least_one, "at least 1",
     "trainer.accumulate_grad_batches=1"),
    ("trainer.devices", _at_least_one, "at least 1", "trainer.devices=1"),
    ("trainer.ddp_timeout_s", lambda v: 0 < v < math.inf, "greater than 0 and finite (or null: torch's default)",
     "trainer.ddp_timeout_s=600"),
    # More threads than CPUs only adds switching; tens of thousands exhaust memory (SIGSEGV).
    ("trainer.threads", lambda v: 1 <= v <= (os.cpu_count() or 1),
     f"between 1 and this machine's {os.cpu_count() or 1} CPUs (or null for torch's default)",
     "trainer.threads=2"),
    ("trainer.grad_clip.max_norm", _positive, "greater than 0 (or null: no clipping)",
     "trainer.grad_clip.max_norm=1.0"),
    ("trainer.grad_clip.max_value", _positive, "greater than 0 (or null: no clipping)",
     "trainer.grad_clip.max_value=1.0"),
    ("trainer.grad_clip.norm_type", _positive, "greater than 0 (2 is the usual norm)",
     "trainer.grad_clip.norm_type=2"),
    ("trainer.early_stopping.patience", _non_negative, "0 or more (or null: off)",
     "trainer.early_stopping.patience=5"),
    ("trainer.early_stopping.min_delta", _non_negative, "0 or more",
     "trainer.early_stopping.min_delta=0"),
    ("overfit_check", lambda v: 0 < v <= 1, "in (0, 1] (a fraction of the first epoch's train_loss)",
     "overfit_check=0.1"),
    ("lr_finder.min_lr", _positive, "greater than 0", "lr_finder.min_lr=1e-8"),
    ("lr_finder.max_lr", _positive, "greater than 0", "lr_finder.max_lr=1"),
    ("lr_finder.steps", _at_least_one, "at least 1", "lr_finder.steps=100"),
    ("lr_finder.early_stop_threshold", lambda v: v > 1, "greater than 1 (or null: off)",
     "lr_finder.early_stop_threshold=4"),
    ("checkpoint.every_n_epochs", _at_least_one, "at least 1", "checkpoint.every_n_epochs=1"),
    ("checkpoint.every_n_steps", _at_least_one, "at least 1 (or null: off)",
     "checkpoint.every_n_steps=100"),
    ("trainer.val_every_n_steps", _at_least_one, "at least 1 (or null: once per epoch)",
     "trainer.val_every_n_steps=500"),
    ("scheduler.step_size", _at_least_one, "at least 1", "scheduler.step_size=10"),
    ("scheduler.gamma", _positive, "greater than 0", "scheduler.gamma=0.1"),
    ("scheduler.T_max", _at_least_one, "at least 1", "scheduler.T_max=20"),
    ("scheduler.eta_min", _non_negative, "0 or more", "scheduler.eta_min=0"),
    ("scheduler.max_lr", _positive, "greater than 0", "scheduler.max_lr=0.1"),
    ("scheduler.factor", _open_unit, "in (0, 1)", "scheduler.factor=0.1"),
    ("scheduler.patience", _non_negative, "0 or more", "scheduler.patience=5"),
    # ReduceLROnPlateau: a negative threshold counts every epoch as an improvement (never drops).
    ("scheduler.threshold", _non_negative, "0 or more", "scheduler.threshold=1e-4"),
    ("profiler.wait", _non_negative, "0 or more", "profiler.wait=1"),
    ("profiler.warmup", _non_negative, "0 or more", "profiler.warmup=1"),
    ("profiler.active", _at_least_one, "at least 1", "profiler.active=3"),
    ("profiler.row_limit", _at_least_one, "at least 1", "profiler.row_limit=15"),
]

# Keys holding a list of sizes: every entry must be at least 1.
SIZE_LISTS = ("model.hidden", "model.channels", "data.image_shape")


def _value(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def _bad(key: str, value: Any, must: str, example: str) -> TrainrunError:
    return TrainrunError(
        f"{key}={_show(value)} is not allowed: it must be {must}",
        key=key,
        fix=f"set it on the command line, e.g. {example}",
    )


def _show(value: Any) -> str:
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value, enum_to_str=True)
    return str(getattr(value, "value", value)).replace(" ", "")


def check_config(cfg: DictConfig) -> None:
    """Raise a :class:`TrainrunError` for the first value in ``cfg`` that cannot work."""
    _check_resolvable(cfg)
    _check_missing(cfg)
    _check_closed(cfg)
    _check_finite(cfg)
    for key, test, must, example in RULES:
        value = _value(cfg, key)
        if value is _ABSENT or value is None or not isinstance(value, int | float):
            continue
        if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)) or not test(value):
            raise _bad(key, value, must, example)
    for key in SIZE_LISTS:
        value = _value(cfg, key)
        if value is _ABSENT or value is None:
            continue
        sizes = list(value) if isinstance(value, ListConfig) else [value]
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise _bad(key, value, "a list of whole numbers, each at least 1", f"{key}=[64,64]")
    _check_combinations(cfg)


def _check_resolvable(cfg: DictConfig) -> None:
    """Every ``${...}`` must point at a key that exists."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except InterpolationResolutionError as err:
        key = getattr(err, "full_key", None) or "?"
        raise TrainrunError(
            f"{key} refers to a value that cannot be found: {str(err).splitlines()[0]}",
            key=key,
            fix=f"fix the ${{...}} reference in {key}, or give {key} a plain value",
        ) from None


def _check_missing(cfg: DictConfig) -> None:
    """Required values (``???`` in the schema) must be given."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return
    group = missing[0].split(".")[0]
    target = _value(cfg, f"{group}._target_")
    need = " and ".join(missing)
    where = f" ({group}._target_={target})" if isinstance(target, str) and target else ""
    example = " ".join(f"{k}=..." for k in missing)
    raise TrainrunError(
        f"{need} {'is' if len(missing) == 1 else 'are'} required{where} but not set",
        key=missing[0],
        fix=f"add {example} to the command line"
        + (" (e.g. train data=csv data.path=my.csv data.target=label)" if group == "data" else ""),
    )


def _check_combinations(cfg: DictConfig) -> None:
    val, test = _value(cfg, "data.val_fraction"), _value(cfg, "data.test_fraction")
    if isinstance(val, int | float) and isinstance(test, int | float) and val + test >= 1:
        raise TrainrunError(
            f"data.val_fraction={val} and data.test_fraction={test} add up to {val + test:g}, "
            "which leaves no samples to train on",
            key="data.val_fraction",
            fix="make data.val_fraction + data.test_fraction less than 1 (e.g. 0.2 and 0.1)",
        )
    low, high = _value(cfg, "lr_finder.min_lr"), _value(cfg, "lr_finder.max_lr")
    if isinstance(low, int | float) and isinstance(high, int | float) and not low < high:
        raise TrainrunError(f"lr_finder.min_lr={low} is not below lr_finder.max_lr={high}", key="lr_finder.max_lr",
                            fix="the range test goes up: e.g. lr_finder.min_lr=1e-8 lr_finder.max_lr=1")
    lr_find = _value(cfg, "lr_find")
    if lr_find is not _ABSENT and str(lr_find).strip().lower() not in LR_FIND:
        raise TrainrunError(
            f"lr_find={lr_find} is not one of {', '.join(LR_FIND)}",
            key="lr_find",
            fix="lr_find=true (a range test, then the run as configured) or lr_find=apply (train with "
            "its suggestion)" + did_you_mean(str(lr_find).lower(), LR_FIND),
        )
    precision = _value(cfg, "trainer.precision")
    if precision is not _ABSENT and str(precision) not in PRECISIONS:
        raise TrainrunError(
            f"trainer.precision={precision} is not a precision trainrun knows",
            key="trainer.precision",
            fix=f"use one of {', '.join(PRECISIONS)}" + did_you_mean(str(precision), PRECISIONS),
        )


# Keys where inf is a meaningful value: torch's max-norm for clipping.
INFINITY_MEANS = ("trainer.grad_clip.norm_type",)


def _check_finite(cfg: DictConfig) -> None:
    """No number in the config may be inf or NaN: torch accepts ``optim.lr=inf`` and trains to
    NaN weights; null is the way to say "off"."""
    for key, value in leaves(cfg):
        if key in INFINITY_MEANS and value == math.inf:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainrunError(
                f"{key}={value} is not a finite number",
                key=key, fix=f"give {key} a finite value (null turns an optional setting off)",
            )


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every ``(dotted key, value)`` below ``node`` (lists count as one value each item)."""
    out: list[tuple[str, Any]] = []
    if isinstance(node, DictConfig):
        for key in node:
            value = OmegaConf.select(node, str(key), throw_on_missing=False, throw_on_resolution_failure=False)
            out += leaves(value, f"{prefix}{key}.")
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            out += leaves(value, f"{prefix[:-1]}[{i}].")
    else:
        out.append((prefix[:-1], node))
    return out


# --------------------------------------------------------------------------- closed sections


@cache
def known_keys() -> tuple[str, ...]:
    """Every dotted key trainrun's schemas declare (``trainer.epochs``, ``optim.lr``, ...)."""
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            hint = hints.get(field.name)
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{field.name}.")
            elif not field.name.startswith("_"):
                keys.append(prefix + field.name)

    walk(TrainConfig, "")
    for group, schemas in GROUP_SCHEMAS.items():
        if group != "logger":
            for cls in schemas.values():
                walk(cls, f"{group}.")
    return tuple(dict.fromkeys(keys))


def nearest_key(key: str, near: list[str]) -> str:
    """`` (did you mean X?)``: among ``near`` first, then among every key of every section."""
    hint = did_you_mean(key.rpartition(".")[2], [n.rpartition(".")[2] for n in near])
    if hint:
        leaf = hint[len(" (did you mean "):-2]
        return f" (did you mean {next(n for n in near if n.rpartition('.')[2] == leaf)}?)"
    leaf = key.rpartition(".")[2]
    same = [k for k in known_keys() if difflib.get_close_matches(leaf, [k.rpartition(".")[2]], cutoff=0.8)]
    return f" (did you mean {same[0]}?)" if same else ""


def _check_closed(cfg: DictConfig) -> None:
    """A key added with ``+`` that nothing will read is refused like a typo. Sections whose
    object is built from ``_target_`` are left to :func:`trainrun.instantiate.build_from_config`,
    which refuses a key the target does not take; the other sections (and a ``_target_`` section
    whose target is null, which builds nothing) are closed to their schema's fields."""

    def walk(node: DictConfig, prefix: str) -> None:
        schema = OmegaConf.get_type(node)
        builds = node.get("_target_") not in (None, "") if "_target_" in node else False
        if dataclasses.is_dataclass(schema) and not builds:
            fields = [f.name for f in dataclasses.fields(schema)]
            for key in node:
                if str(key) not in fields:
                    full = f"{prefix}{key}"
                    raise TrainrunError(
                        f"{full} is not a key trainrun or anything it builds reads, so "
                        f"+{full}=... would be ignored{nearest_key(full, [prefix + f for f in fields])}",
                        key=full,
                        fix=f"drop +{full}; the keys of {prefix.rstrip('.') or 'the top level'} are "
                        + ", ".join(fields),
                    )
        for key in node:
            child = node.get(str(key))
            if isinstance(child, DictConfig) and str(key) != "logger":
                walk(child, f"{prefix}{key}.")

    walk(cfg, "")
