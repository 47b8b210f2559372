"""How a schema field carries what is known of it: ``setting(default, "help", check=...)``
declares the default, the one-line description and the value rule in one place, the field.

:func:`help_of` reads the description back (``train --help``, ``docs/configuration.md``);
:func:`rule_of` reads the rule back for the walker in :mod:`trainrun.config.values`, which checks
every field of a composed config and reports every problem at once. A subclass that only changes
a default (``lr: float = 0.1``) keeps its base's help and rule: both are looked up along the bases.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELP = "help"
CHECK = "check"


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``test`` on a value of the field's type (numbers: never a bool or
    NaN; lists: each item), ``must`` says it in words, ``example`` is a good value for the fix."""

    test: Callable[[Any], bool]
    must: str
    example: str | None = None
    each: bool = False  # a list field: the rule holds for every item
    numeric: bool = True  # the value is a number: a bool or NaN never passes
    choices: tuple[str, ...] = ()  # a word rule's words, for "did you mean"

    def holds(self, value: object) -> bool:
        """Whether ``value`` passes (None, the way to say "off", always does)."""
        if value is None:
            return True
        if self.each:
            items = list(value) if isinstance(value, list | tuple) else [value]
            return all(_number(v) and self.test(v) for v in items)
        if not self.numeric:
            return self.test(value)
        if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
            return False
        return not _number(value) or self.test(value)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def greater_than(low: float, note: str = "", example: str | None = None) -> Rule:
    return Rule(lambda v: v > low, f"greater than {low:g}{note}", example)


def at_least(low: float, note: str = "", example: str | None = None) -> Rule:
    return Rule(lambda v: v >= low, f"at least {low:g}{note}" if low else f"0 or more{note}", example)


def fraction(note: str = "") -> Rule:
    """``[0, 1)``: a share that leaves something over (a validation split, momentum, dropout)."""
    return Rule(lambda v: 0 <= v < 1, f"in [0, 1){note}")


def open_unit() -> Rule:
    return Rule(lambda v: 0 < v < 1, "in (0, 1)")


def finite_positive(note: str = "", example: str | None = None) -> Rule:
    return Rule(lambda v: 0 < v < math.inf, f"greater than 0 and finite{note}", example)


def seed() -> Rule:
    """Seeds feed torch's and numpy's generators and trainrun's per-epoch shuffle seed
    (``seed * 1_000_003 + epoch`` must fit a 64-bit generator seed)."""
    return Rule(lambda v: isinstance(v, int) and 0 <= v < 2**32, "a whole number in [0, 2**32)")


def sizes() -> Rule:
    """A list of sizes (layer widths, channels, a sample shape): whole numbers, each at least 1."""
    return Rule(lambda v: isinstance(v, int) and v >= 1, "a list of whole numbers, each at least 1",
                example="[64,64]", each=True)


def within_cpus() -> Rule:
    """More threads than CPUs only adds switching; tens of thousands exhaust memory (SIGSEGV)."""
    cpus = os.cpu_count() or 1
    return Rule(lambda v: 1 <= v <= cpus,
                f"between 1 and this machine's {cpus} CPUs (or null for torch's default)", "1")


def one_of(*words: str) -> Rule:
    """A word among ``words`` (compared in lower case: YAML reads ``true`` as a boolean)."""
    return Rule(lambda v: str(v).strip().lower() in words, f"one of {', '.join(words)}", example=words[0],
                numeric=False, choices=words)


def setting(default: object = dataclasses.MISSING, help: str = "", check: Rule | None = None) -> Any:
    """A dataclass field with ``default`` (copied per instance when it is a list or dict), its
    one-line description and its value rule."""
    metadata: dict[str, Any] = {HELP: help}
    if check is not None:
        metadata[CHECK] = check
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _declared(cls: type, name: str, what: str) -> tuple[Any, type | None]:
    """The metadata entry ``what`` of field ``name``, from the nearest class along the bases that
    declares the field with it, and that class."""
    for base in cls.__mro__:
        if not dataclasses.is_dataclass(base) or name not in inspect.get_annotations(base):
            continue
        for field in dataclasses.fields(base):
            if field.name == name and field.metadata.get(what):
                return field.metadata[what], base
    return None, None


def help_of(cls: type, name: str) -> tuple[str, str]:
    """The description of ``cls.name`` and the class that declared it (``Class.field``)."""
    text, base = _declared(cls, name, HELP)
    return (str(text), f"{base.__name__}.{name}") if base else ("", f"{cls.__name__}.{name}")


def rule_of(cls: type, name: str) -> Rule | None:
    """The value rule of ``cls.name`` (None: any value of its type will do)."""
    rule, _ = _declared(cls, name, CHECK)
    return rule if isinstance(rule, Rule) else None
