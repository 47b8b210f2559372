"""The search space of ``hydra/sweeper=trainrun_optuna``: ``hydra.sweeper.params`` and the sweep
arguments, in Hydra's own sweep syntax, parsed by Hydra's public override parser and turned into
Optuna (>= 4) distributions.

| Hydra override | Optuna distribution |
| --- | --- |
| ``choice(a, b, [1,2])`` | ``CategoricalDistribution`` (lists and dicts as their override text) |
| ``range(1, 9, 2)`` | ``IntDistribution(1, 7, step=2)``; floats: ``FloatDistribution(step=)`` |
| ``shuffle(range(...))`` | ``CategoricalDistribution`` |
| ``interval(1e-4, 0.3)`` | ``FloatDistribution``; integer bounds or ``tag(int, ...)``: ``IntDistribution`` |
| ``tag(log, interval(...))`` | the same with ``log=True`` |
| anything else (``optim=sgd``) | not searched: passed to every trial as written |

A value is sent back to the job as an override (``optim.lr=0.0123``), quoted when Hydra's
grammar would read it otherwise. Optuna is imported by the caller: this module is imported only
when a search starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from trainrun.errors import CONFIG_ERROR, TrainrunError


@dataclass
class SearchSpace:
    """What the study searches (name -> distribution) and the overrides every trial gets."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)  # "+" for +key=..., "" otherwise
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """One trial's overrides: its sampled values, then the fixed ones."""
        return [f"{self.prefixes.get(k, '')}{k}={_as_override_value(v)}" for k, v in params.items()] + self.fixed


def parse(params: dict[str, str] | None, arguments: list[str]) -> SearchSpace:
    """The space of ``hydra.sweeper.params`` (the preset) and the command line's sweep
    arguments; the command line wins for a key given in both."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:
        raise TrainrunError(f"hydra.sweeper.params: {str(err).strip().splitlines()[0]}",
                            key="hydra.sweeper.params", exit_code=CONFIG_ERROR,
                            fix="write each searched key in Hydra's sweep syntax, e.g. "
                            "'optim.lr=tag(log, interval(1e-4, 0.1))' or 'optim=choice(adam,sgd)'") from None
    space = SearchSpace()
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        name = key.lstrip("+~")
        space.distributions.pop(name, None)
        fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = distribution(override)
            space.prefixes[name] = key[: len(key) - len(name)]
        else:
            fixed[name] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    space.fixed = list(fixed.values())
    if not space.distributions:
        raise TrainrunError("the Optuna search has nothing to search: no key of hydra.sweeper.params or of "
                            "the command line is a sweep", key="hydra.sweeper.params", exit_code=CONFIG_ERROR,
                            fix="give at least one searched key, e.g. 'optim.lr=tag(log, interval(1e-4, 0.1))', "
                            "or pick a preset: hparams_search=mlp")
    return space


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_choices(override))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None
        if any(isinstance(x, float) for x in (start, stop, step)):
            count = len(list(override.sweep_iterator()))
            if not count:
                raise _refused(key, f"range({start}, {stop}, {step}) is empty")
            return FloatDistribution(float(start), float(start) + float(step) * (count - 1), step=float(step))
        values = [int(str(x)) for x in override.sweep_iterator()]
        if not values:
            raise _refused(key, f"range({start}, {stop}, {step}) is empty")
        return IntDistribution(values[0], values[-1], step=int(step)) if len(values) > 1 \
            else CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        assert low is not None and high is not None
        log = "log" in value.tags
        if low >= high or (log and low <= 0):
            raise _refused(key, f"interval({low}, {high}) is empty" if low >= high
                           else f"a log scale needs bounds above 0, not interval({low}, {high})")
        if "int" in value.tags or (isinstance(low, int) and isinstance(high, int)):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise _refused(key, f"{override.input_line!r} is not a sweep Optuna can sample")


def _choices(override: Override) -> list[CategoricalChoiceType]:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise _refused(override.get_key_element(), f"choice value {v!r} is not a str, number, bool or null")
    return values  # type: ignore[return-value]


def _refused(key: str, why: str) -> TrainrunError:
    return TrainrunError(f"hydra.sweeper.params: {key}: {why}", key="hydra.sweeper.params",
                         exit_code=CONFIG_ERROR,
                         fix="use choice(...), range(start, stop, step), interval(low, high) or "
                         "tag(log, interval(low, high)) with low < high")


def _as_override_value(value: object) -> str:
    """A sampled value as Hydra's grammar reads it back (``'a,b'`` quoted, ``[64,64]`` as is)."""
    text = str(value)
    if not isinstance(value, str):
        return text
    try:
        parsed = OverridesParser.create().parse_override(f"k={text}")
        if (not parsed.is_sweep_override() and parsed.value() == value) or text.startswith(("[", "{")):
            return text  # read back as the same value (or a list/dict choice, meant as one)
    except Exception:
        pass
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
