"""How a schema field carries its help text: ``setting(default, "help")`` declares it in the
field's metadata, :func:`help_of` reads it back (for ``train --help`` and
``docs/configuration.md``). One place for every key's description, read only when asked."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

HELP = "help"


def setting(default: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A dataclass field with ``default`` (copied per instance when it is a list or dict) and
    its one-line description."""
    metadata = {HELP: help}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def help_of(cls: type, name: str) -> tuple[str, str]:
    """The description of ``cls.name`` and the class that declared it (``Class.field``): the
    nearest class along the bases whose field has help text."""
    for base in cls.__mro__:
        if not dataclasses.is_dataclass(base):
            continue
        for field in dataclasses.fields(base):
            declared_here = name in inspect.get_annotations(base)
            if field.name == name and field.metadata.get(HELP) and declared_here:
                return str(field.metadata[HELP]), f"{base.__name__}.{name}"
    return "", f"{cls.__name__}.{name}"
