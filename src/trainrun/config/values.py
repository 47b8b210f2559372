"""The composed config's values, checked before anything is built, every problem at once.

:func:`check_config` runs first thing in ``train`` (before torch is imported, and again in each
sweep job). It walks the config beside its schemas: every field that declares a rule
(``setting(..., check=...)`` in :mod:`trainrun.config.groups` and :mod:`trainrun.config.schemas`)
is tested, with the interpolations that point nowhere, required values left empty, keys that
nothing reads (:mod:`trainrun.config.closed`), numbers that are not finite, and the few rules
that span two keys. Wrong keys and types never get here: the schemas refuse them while Hydra
composes (``trainrun.cli.hydra_errors`` words those errors).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from trainrun.config.closed import unread_keys
from trainrun.config.fields import Rule, rule_of
from trainrun.config.problems import Problem, as_error
from trainrun.errors import did_you_mean

_ABSENT = object()
# Keys where inf is a meaningful value: torch's max-norm for clipping.
INFINITY_MEANS = ("trainer.grad_clip.norm_type",)


# The config objects found sound, by identity: ``train`` checks before importing torch and the
# run checks again (a sweep job and a DDP worker check only there); walking the same object a
# second time, moments later, was ~4 % of a run's fixed cost in a profile. (By content would
# not do: a DictConfig hashes by its text, which costs a fifth of a walk.)
_SOUND: dict[int, weakref.ref[DictConfig]] = {}


def check_config(cfg: DictConfig) -> None:
    """Raise one :class:`TrainrunError` naming every value in ``cfg`` that cannot work."""
    known = _SOUND.get(id(cfg))
    if known is not None and known() is cfg:
        return
    problems = unresolvable(cfg) + missing(cfg) + unread_keys(cfg) + not_finite(cfg)
    problems += list(broken_rules(cfg)) + across_keys(cfg)
    first = {p.key: p for p in reversed(problems)}  # one problem per key: the first found
    if problems:
        raise as_error([p for p in problems if first[p.key] is p])
    key = id(cfg)
    _SOUND[key] = weakref.ref(cfg, lambda _: _SOUND.pop(key, None))



# --------------------------------------------------------------------------- the walker


def fields_with_rules(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any, Rule, Any]]:
    """``(dotted key, value, rule, schema default)`` for every field below ``node`` whose schema
    declares a rule. The schema is the node's own type, so a user's ``_target_`` under a preset
    keeps the preset's rules for the keys it declares."""
    schema = OmegaConf.get_type(node)
    declared = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for key in node:
        name = str(key)
        value = OmegaConf.select(node, name, default=_ABSENT, throw_on_missing=False,
                                 throw_on_resolution_failure=False)
        if isinstance(value, DictConfig):
            yield from fields_with_rules(value, f"{prefix}{name}.")
            continue
        rule = rule_of(schema, name) if schema is not None and name in declared else None
        if rule is None or value is _ABSENT or OmegaConf.is_missing(node, name):
            continue
        plain = OmegaConf.to_container(value, enum_to_str=True) if isinstance(value, ListConfig) else value
        field = declared[name]
        default = field.default if field.default is not dataclasses.MISSING else None
        yield f"{prefix}{name}", plain, rule, default


def broken_rules(cfg: DictConfig) -> Iterator[Problem]:
    for key, value, rule, default in fields_with_rules(cfg):
        if rule.holds(value):
            continue
        example = rule.example
        if example is None and default is not None and not isinstance(default, str | bool) and rule.holds(default):
            example = str(default)
        hint = did_you_mean(str(value), rule.choices) if rule.choices else ""
        yield Problem(key, f"{key}={show(value)} is not allowed: it must be {rule.must}",
                      f"set it on the command line, e.g. {key}={example or '...'}{hint}")


def show(value: object) -> str:
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value, enum_to_str=True)
    return str(getattr(value, "value", value)).replace(" ", "")


# --------------------------------------------------------------------------- whole-config rules


def unresolvable(cfg: DictConfig) -> list[Problem]:
    """Every ``${...}`` must point at a key that exists."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except InterpolationResolutionError as err:
        key = getattr(err, "full_key", None) or "?"
        return [Problem(key, f"{key} refers to a value that cannot be found: {str(err).splitlines()[0]}",
                        f"fix the ${{...}} reference in {key}, or give {key} a plain value")]
    return []


def missing(cfg: DictConfig) -> list[Problem]:
    """Required values (``???`` in the schema) must be given: one problem per section."""
    keys = sorted(missing_keys(cfg))
    by_section: dict[str, list[str]] = {}
    for key in keys:
        by_section.setdefault(key.split(".")[0], []).append(key)
    problems = []
    for section, need in by_section.items():
        target = OmegaConf.select(cfg, f"{section}._target_", default=None, throw_on_missing=False)
        where = f" ({section}._target_={target})" if isinstance(target, str) and target else ""
        example = " ".join(f"{k}=..." for k in need)
        problems.append(Problem(
            need[0], f"{' and '.join(need)} {'is' if len(need) == 1 else 'are'} required{where} but not set",
            f"add {example} to the command line"
            + (" (e.g. train data=csv data.path=my.csv data.target=label)" if section == "data" else "")))
    return problems


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The ``???`` keys below ``node``, read without resolving interpolations (one that points
    nowhere is :func:`unresolvable`'s problem and must not hide the others)."""
    keys: list[str] = []
    for key in node:
        name = str(key)
        if OmegaConf.is_missing(node, name):
            keys.append(f"{prefix}{name}")
            continue
        child = OmegaConf.select(node, name, throw_on_missing=False, throw_on_resolution_failure=False)
        if isinstance(child, DictConfig):
            keys += missing_keys(child, f"{prefix}{name}.")
    return keys


def not_finite(cfg: DictConfig) -> list[Problem]:
    """No number in the config may be inf or NaN: torch accepts ``optim.lr=inf`` and trains to
    NaN weights; null is the way to say "off"."""
    return [Problem(key, f"{key}={value} is not a finite number",
                    f"give {key} a finite value (null turns an optional setting off)")
            for key, value in leaves(cfg)
            if isinstance(value, float) and not math.isfinite(value)
            and not (key in INFINITY_MEANS and value == math.inf)]


def leaves(node: object, prefix: str = "") -> list[tuple[str, Any]]:
    """Every ``(dotted key, value)`` below ``node`` (lists count as one value each item)."""
    out: list[tuple[str, Any]] = []
    if isinstance(node, DictConfig):
        for key in node:
            value = OmegaConf.select(node, str(key), throw_on_missing=False, throw_on_resolution_failure=False)
            out += leaves(value, f"{prefix}{key!s}.")
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            out += leaves(value, f"{prefix[:-1]}[{i}].")
    else:
        out.append((prefix[:-1], node))
    return out


def _number(cfg: DictConfig, key: str) -> float | None:
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False, throw_on_resolution_failure=False)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def across_keys(cfg: DictConfig) -> list[Problem]:
    """The rules that span two keys."""
    problems = []
    val, test = _number(cfg, "data.val_fraction"), _number(cfg, "data.test_fraction")
    if val is not None and test is not None and val + test >= 1:
        problems.append(Problem(
            "data.val_fraction", f"data.val_fraction={val:g} and data.test_fraction={test:g} add up to "
            f"{val + test:g}, which leaves no samples to train on",
            "make data.val_fraction + data.test_fraction less than 1 (e.g. 0.2 and 0.1)"))
    low, high = _number(cfg, "lr_finder.min_lr"), _number(cfg, "lr_finder.max_lr")
    if low is not None and high is not None and not low < high:
        problems.append(Problem("lr_finder.max_lr", f"lr_finder.min_lr={low:g} is not below lr_finder.max_lr={high:g}",
                                "the range test goes up: e.g. lr_finder.min_lr=1e-8 lr_finder.max_lr=1"))
    return problems
