"""Value checks on the composed config, before anything is built.

:func:`check_config` runs first thing in ``train``: values that have the right type but cannot
work (``optim.lr=-1``, ``data.batch_size=0``, fractions that leave no training split), required
values left empty (``data=csv`` without ``data.path``), and interpolations that point nowhere.
Each message names the key, the value and the fix. Wrong keys and types never get here: the
schemas refuse them while Hydra composes (``trainrun.cli.hydra_errors`` words those errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

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


# (key, test, what the value must be, an example of a good value). A key the config does not
# have (a user's own _target_ node) is skipped; ``None`` passes wherever null means "off".
RULES: list[tuple[str, Callable[[Any], bool], str, str]] = [
    ("optim.lr", _positive, "greater than 0", "optim.lr=0.01"),
    ("optim.weight_decay", _non_negative, "0 or more", "optim.weight_decay=0"),
    ("optim.momentum", _non_negative, "0 or more", "optim.momentum=0.9"),
    ("optim.dampening", _non_negative, "0 or more", "optim.dampening=0"),
    ("optim.eps", _non_negative, "0 or more", "optim.eps=1e-8"),
    ("optim.alpha", _non_negative, "0 or more", "optim.alpha=0.99"),
    ("optim.lr_decay", _non_negative, "0 or more", "optim.lr_decay=0"),
    ("data.batch_size", _at_least_one, "at least 1", "data.batch_size=32"),
    ("data.val_fraction", _fraction, "in [0, 1)", "data.val_fraction=0.2"),
    ("data.test_fraction", _fraction, "in [0, 1)", "data.test_fraction=0.1"),
    ("data.num_workers", _non_negative, "0 or more", "data.num_workers=0"),
    ("data.seed", _non_negative, "0 or more", "data.seed=0"),
    ("data.n_samples", lambda v: v >= 2, "at least 2", "data.n_samples=1000"),
    ("data.n_features", _at_least_one, "at least 1", "data.n_features=20"),
    ("data.num_classes", lambda v: v >= 2, "at least 2", "data.num_classes=3"),
    ("data.noise", _non_negative, "0 or more", "data.noise=0.1"),
    ("model.dropout", _fraction, "in [0, 1)", "model.dropout=0.1"),
    ("model.kernel_size", _at_least_one, "at least 1", "model.kernel_size=3"),
    ("loss.label_smoothing", lambda v: 0 <= v <= 1, "in [0, 1]", "loss.label_smoothing=0.1"),
    ("trainer.epochs", _non_negative, "0 or more", "trainer.epochs=20"),
    ("trainer.accumulate_grad_batches", _at_least_one, "at least 1",
     "trainer.accumulate_grad_batches=1"),
    ("trainer.devices", _at_least_one, "at least 1", "trainer.devices=1"),
    ("trainer.threads", _at_least_one, "at least 1 (or null for torch's default)",
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
    ("scheduler.step_size", _at_least_one, "at least 1", "scheduler.step_size=10"),
    ("scheduler.gamma", _positive, "greater than 0", "scheduler.gamma=0.1"),
    ("scheduler.T_max", _at_least_one, "at least 1", "scheduler.T_max=20"),
    ("scheduler.eta_min", _non_negative, "0 or more", "scheduler.eta_min=0"),
    ("scheduler.max_lr", _positive, "greater than 0", "scheduler.max_lr=0.1"),
    ("scheduler.pct_start", _open_unit, "in (0, 1)", "scheduler.pct_start=0.3"),
    ("scheduler.total_steps", _at_least_one, "at least 1 (or null: computed)",
     "scheduler.total_steps=1000"),
    ("scheduler.factor", _open_unit, "in (0, 1)", "scheduler.factor=0.1"),
    ("scheduler.patience", _non_negative, "0 or more", "scheduler.patience=5"),
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
    if _value(cfg, "optim.nesterov") is True:
        momentum, dampening = _value(cfg, "optim.momentum"), _value(cfg, "optim.dampening")
        if momentum is not _ABSENT and (momentum <= 0 or (dampening not in (_ABSENT, 0, 0.0))):
            raise TrainrunError(
                f"optim.nesterov=true needs momentum > 0 and dampening 0 (got momentum={momentum}, "
                f"dampening={dampening})",
                key="optim.nesterov",
                fix="set optim.momentum=0.9 optim.dampening=0, or optim.nesterov=false",
            )
    betas = _value(cfg, "optim.betas")
    if isinstance(betas, ListConfig):
        ok = len(betas) == 2 and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)
        if not ok:
            raise _bad("optim.betas", betas, "two numbers in [0, 1)", "optim.betas=[0.9,0.999]")
