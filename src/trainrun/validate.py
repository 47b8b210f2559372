"""Catch config mistakes before anything is built.

Two jobs:

* :func:`check_config` runs at the start of ``run_training``: values that have the right type
  but make no sense (``optim.lr=-1``, ``data.batch_size=0``, fractions that leave no training
  split), required values left empty (``data=csv`` without ``data.path``), and interpolations
  that point nowhere. Each message names the key, the value and the fix.
* :func:`composition_error` turns Hydra's and OmegaConf's composition errors (a typo in a key,
  a wrong type, an unknown option) into a short :class:`TrainrunError` with the key, the valid
  choices and a "did you mean" suggestion; :func:`friendly_hydra_errors` installs it around
  Hydra's entry point (``cli.train``), so those errors exit with status 2 and no traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from trainrun.errors import CONFIG_ERROR, TrainrunError

# --------------------------------------------------------------------------- value checks

_ABSENT = object()
PRECISIONS = ("32", "bf16", "fp16")


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
    precision = _value(cfg, "trainer.precision")
    if precision is not _ABSENT and str(precision) not in PRECISIONS:
        raise TrainrunError(
            f"trainer.precision={precision} is not a precision trainrun knows",
            key="trainer.precision",
            fix=f"use one of {', '.join(PRECISIONS)}" + _did_you_mean(str(precision), PRECISIONS),
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


# --------------------------------------------------------------------------- Hydra's errors


def _did_you_mean(word: str, choices: Any, prefix: str = "") -> str:
    near = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{near[0]}?)" if near else ""


def _dotted_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if not isinstance(node, DictConfig):
        return
    for k in node:
        if prefix == "" and k == "hydra":
            continue
        full = f"{prefix}{k}"
        yield full
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            yield from _dotted_keys(child, f"{full}.")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


_TYPE_WORDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false",
               "String": "text"}


def composition_error(ex: BaseException) -> TrainrunError | None:
    """A short :class:`TrainrunError` for a Hydra/OmegaConf composition error (None if ``ex``
    is not one)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(ex, MissingConfigException) and ex.options is not None and ex.missing_cfg_file:
        group, _, name = str(ex.missing_cfg_file).rpartition("/")
        options = sorted(ex.options)
        own = {"model": "a torch.nn.Module", "data": "a data source", "loss": "a loss",
               "optim": "an optimizer"}.get(group)
        fix = f"use one of: {', '.join(f'{group}={o}' for o in options)}"
        if own:
            fix += f"; for {own} of your own, set {group}._target_=yourmodule.Name"
        return TrainrunError(
            f"{group}={name} is not an option of the '{group}' group; its options are "
            f"{', '.join(options)}{_did_you_mean(name, options, f'{group}=')}",
            key=group, fix=fix,
        )
    if isinstance(ex, MissingConfigException):
        return TrainrunError(_first_line(str(ex)), fix="check --config-name / --config-path")
    if isinstance(ex, OverrideParseException):
        return TrainrunError(
            f"cannot read a command-line override: {_first_line(str(ex))}",
            fix="write overrides as key=value; lists as key=[a,b]; quote values with spaces or "
            "special characters, e.g. 'data.path=\"my file.csv\"'",
        )
    cause = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        full_key, key = str(cause.full_key), str(cause.key)
        prefix = full_key.rpartition(".")[0]
        parent = getattr(cause, "parent_node", None)
        if isinstance(cause, ConfigKeyError | AttributeError) and not isinstance(cause, ValidationError):
            siblings = [k for k in (parent.keys() if isinstance(parent, DictConfig) else [])
                        if k != "hydra"]
            hint = _did_you_mean(key, siblings, f"{prefix}." if prefix else "")
            if not hint and isinstance(parent, DictConfig):
                root = parent._get_root()
                everything = list(_dotted_keys(root))
                leaf_near = [k for k in everything
                             if difflib.get_close_matches(key, [k.rpartition(".")[2]], cutoff=0.75)]
                if leaf_near:
                    hint = f" (did you mean {leaf_near[0]}?)"
            where = f"'{prefix}'" if prefix else "the top level of the config"
            m = re.search(r"use \+(\S+)", str(ex))
            append = m.group(1) if m else f"{full_key}=..."
            valid = ", ".join(str(s) for s in siblings) or "(none)"
            fix = f"use {hint[15:-2]}" if hint else "correct the spelling (train --help lists the keys)"
            if "_target_" in siblings:
                fix += f"; to pass an extra argument that {prefix}._target_ accepts, add it with +{append}"
            return TrainrunError(
                f"{full_key} is not a key of {where}{hint}\n  valid keys there: {valid}",
                key=full_key, fix=fix,
            )
        text = _first_line(getattr(cause, "msg", "") or str(cause))
        m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", text)
        if m:
            want = _TYPE_WORDS.get(m.group(2), m.group(2))
            return TrainrunError(f"{full_key}={m.group(1)} is not {want}", key=full_key,
                                 fix=f"give {full_key} {want}")
        m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", text)
        if m:
            choices = [c.strip() for c in m.group(2).split(",")]
            return TrainrunError(
                f"{full_key}={m.group(1)} is not a valid choice; choose one of "
                f"{', '.join(choices)}{_did_you_mean(m.group(1), choices, f'{full_key}=')}",
                key=full_key, fix=f"use one of: {', '.join(f'{full_key}={c}' for c in choices)}",
            )
        if re.match(r"field '.*' is not Optional", text):
            return TrainrunError(f"{full_key} cannot be null", key=full_key,
                                 fix=f"give {full_key} a value")
        if "is not a ListConfig" in text:
            return TrainrunError(f"{full_key} must be a list", key=full_key,
                                 fix=f"write it in brackets, e.g. {full_key}=[1,8,8]")
        return TrainrunError(f"{full_key}: {text}", key=full_key)
    m = re.search(r"An item is already at '(.*)'", str(ex))
    if m:
        return TrainrunError(f"+{m.group(1)} adds a key, but {m.group(1)} already exists",
                             key=m.group(1), fix=f"drop the '+': {m.group(1)}=... changes the value")
    m = re.search(r"Key '(.*)' not in '(\w+)'\s+full_key: (\S+)", str(ex))
    if m:  # a key set by a preset (experiment=...) that the chosen option's schema lacks
        where = re.match(r"In '([^']+)'", str(ex))
        source = f" (set by {where.group(1)})" if where else ""
        return TrainrunError(
            f"{m.group(3)} is not a key of {m.group(2)}{source}",
            key=m.group(3),
            fix=f"drop {m.group(3)}, or choose the option whose schema has it",
        )
    if isinstance(ex, HydraException | OmegaConfBaseException):
        lines = [_first_line(str(ex))]
        if cause is not None and _first_line(str(cause)):
            lines.append(_first_line(str(cause)))
        return TrainrunError("; ".join(lines))
    return None


@contextlib.contextmanager
def friendly_hydra_errors(task_started: Callable[[], bool]) -> Iterator[None]:
    """Around Hydra's entry point: composition errors print as one short paragraph and exit
    with status 2 (``HYDRA_FULL_ERROR=1`` keeps Hydra's own report). Errors raised once the
    task runs keep Hydra's handling, except composition errors of later sweep jobs."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, OverrideParseException

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as ex:
            composing = not task_started() or isinstance(
                ex, ConfigCompositionException | OverrideParseException)
            err = composition_error(ex) if composing else None
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                def again(caught: Exception = ex) -> Any:
                    raise caught
                return original(again)
            print(f"\nError: {err}", file=sys.stderr)
            sys.exit(CONFIG_ERROR)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
