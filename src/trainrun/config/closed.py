"""Closed sections: a key added with ``+`` that nothing will read is refused like a typo, and
the keys trainrun's schemas declare (for "did you mean" here and in composition errors)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from functools import cache

from omegaconf import DictConfig, OmegaConf

from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.config.problems import Problem
from trainrun.config.schemas import TrainConfig
from trainrun.errors import did_you_mean


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


def unread_keys(cfg: DictConfig) -> list[Problem]:
    """A key added with ``+`` that nothing will read is refused like a typo. Sections whose
    object is built from ``_target_`` are left to :func:`trainrun.build.instantiate.build_from_config`,
    which refuses a key the target does not take; the other sections (and a ``_target_`` section
    whose target is null, which builds nothing) are closed to their schema's fields."""

    problems: list[Problem] = []

    def walk(node: DictConfig, prefix: str) -> None:
        schema = OmegaConf.get_type(node)
        builds = node.get("_target_") not in (None, "") if "_target_" in node else False
        if dataclasses.is_dataclass(schema) and not builds:
            fields = [f.name for f in dataclasses.fields(schema)]
            for key in node:
                if str(key) not in fields:
                    full = f"{prefix}{key!s}"
                    problems.append(Problem(
                        full, f"{full} is not a key trainrun or anything it builds reads, so "
                        f"+{full}=... would be ignored{nearest_key(full, [prefix + f for f in fields])}",
                        f"drop +{full}; the keys of {prefix.rstrip('.') or 'the top level'} are "
                        + ", ".join(fields)))
        for key in node:
            child = OmegaConf.select(node, str(key), throw_on_missing=False, throw_on_resolution_failure=False)
            if isinstance(child, DictConfig) and str(key) != "logger":
                walk(child, f"{prefix}{key!s}.")

    walk(cfg, "")
    return problems
