"""A composed config as plain data, the way a checkpoint stores it: dicts, lists, numbers and
strings (Enums as their names), and the schema class of each section, so that the plain config
can be typed again (``evaluate`` rebuilds a run from it)."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(node: DictConfig, *, resolve: bool = True) -> dict[str, Any]:
    """``node`` as plain dicts and lists (``resolve=False``: ``${...}`` kept as written).
    OmegaConf types a container's keys as any key type it allows; a section's keys are strings."""
    tree = OmegaConf.to_container(node, resolve=resolve, enum_to_str=True)
    assert isinstance(tree, dict)
    return {str(key): value for key, value in tree.items()}


def schema_names(cfg: DictConfig) -> dict[str, str]:
    """The schema class of each config section (``data`` -> ``SklearnDataConfig``), so that the
    plain config stored in a checkpoint can be typed again (``evaluate`` rebuilds from it)."""
    names = {}
    for key in cfg:
        kind = OmegaConf.get_type(cfg, str(key))
        if dataclasses.is_dataclass(kind) and kind.__module__.startswith("trainrun.config."):
            names[str(key)] = kind.__name__
    return names
