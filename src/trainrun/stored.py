"""A config stored in a checkpoint, made into exactly what will be built, before anything is
checked or built from it.

A checkpoint's config is data (:mod:`trainrun.targets`): its ``_target_`` values are checked
against the trust rule. The check must see what building will use, and OmegaConf resolves
interpolations when a config is built, so a raw walk can be fooled: ``loss.weight:
${logger.x}`` copies an unchecked section's ``_target_`` into a checked one, and
``${oc.decode:'{_target_: numpy.load}'}`` or ``${oc.create:...}`` make a node out of text. So
:func:`stored_config` resolves the stored config first, once, and everything after it (the
trust check, ``evaluate``, ``predict``, ``export-model``, ``resume``'s comparison) uses the
resolved tree:

* only resolvers that cannot make a node out of text may appear (:data:`RESOLVERS`:
  ``oc.env``, whose default becomes a string, ``now``, trainrun's ``direction``, and those that
  select nodes of the config itself); ``oc.create``, ``oc.decode``, ``oc.select`` (its default
  may be a dict literal) and any resolver trainrun does not know are refused, as is an
  interpolation whose resolver name is itself built (``${oc.${x}:...}``);
* after resolving, no string may still read as an interpolation (``$`` and ``{...}`` glued
  together by string interpolation, or an environment variable holding ``${oc.decode:...}``):
  OmegaConf would interpret it again when the config is typed;
* targets trainrun has moved are renamed by :data:`trainrun.targets.MOVED`, so a checkpoint
  written before the move loads and resumes under the new names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainrun.errors import TrainrunError
from trainrun.targets import MOVED

# Resolvers that return a string, or a node the config itself holds: nothing made from text.
RESOLVERS = frozenset({"oc.env", "now", "direction", "oc.dict.keys", "oc.dict.values", "oc.deprecated"})

# The head of an interpolation: ``${`` then a name, then ``:`` (a resolver) or ``}`` (a node).
# Anything else after ``${`` (a name built by a nested interpolation, a quote) is not read.
_HEAD = re.compile(r"\$\{\s*([^\s:{}$'\"\\]*)\s*([:}])?")


def _strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a plain config (keys included), with the dotted key it sits under."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str):
                yield here, key
            yield from _strings(item, here)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def refused_interpolation(text: str) -> str:
    """Why ``text`` holds an interpolation a stored config may not use ("" when it holds none or
    only allowed ones)."""
    for start in (m.start() for m in re.finditer(r"\$\{", text)):
        head = _HEAD.match(text, start)
        if head is None or head.group(2) is None or (head.group(2) == ":" and not head.group(1)):
            return f"an interpolation trainrun does not read in a stored config ({text[start:start + 40]!r})"
        if head.group(2) == ":" and head.group(1) not in RESOLVERS:
            return f"the resolver {head.group(1)!r}"
    return ""


def _rename_moved(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MOVED.get(v, v) if k == "_target_" and isinstance(v, str) else _rename_moved(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_moved(v) for v in value]
    return value


def stored_config(config: dict[str, Any], path: Path | str, key: str) -> dict[str, Any]:
    """``config`` (a checkpoint's) resolved under the rules above, moved targets renamed."""
    fix = ("use a checkpoint written by trainrun (it stores its config resolved); a config that "
           "makes objects out of text is refused, whatever it names")
    for where, text in _strings(config):
        why = refused_interpolation(text)
        if why:
            raise TrainrunError(f"refusing the config stored in {str(path)!r}: {where} uses {why}, which "
                                "could build an object that the trust check never saw", key=key, fix=fix)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception as err:
        raise TrainrunError(f"the config stored in {str(path)!r} cannot be resolved: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}", key=key, fix=fix) from None
    assert isinstance(resolved, dict)
    for where, text in _strings(resolved):
        if "${" in text:
            raise TrainrunError(f"refusing the config stored in {str(path)!r}: {where} resolves to {text[:60]!r}, "
                                "which would be read as an interpolation again", key=key, fix=fix)
    return _rename_moved(resolved)
