"""Build an object from a config node's ``_target_`` with ``hydra.utils.instantiate``.

Two things make this more than a bare ``instantiate`` call:

* Values trainrun knows (sizes from the data, the model's parameters) are *provided* and passed
  only when the target's signature accepts them, so ``model._target_=mynet.Net`` works whether
  ``Net`` takes ``in_features`` or not. What the model asks for also decides the shape of its
  input (:func:`takes_flat_samples`): ``in_features`` alone means flat samples.
* Keys declared by the built-in preset's schema (``model.hidden`` of ``model=mlp``) are dropped
  when a user's target does not accept them; keys the user added (``+model.width=3``) must be
  accepted, or the run stops before training with the key named.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainrun.errors import TrainrunError


def locate(target: str, key: str) -> Any:
    """Import ``target`` (``pkg.module.Name``, or ``module.Name`` of a file in the current
    folder): the longest importable module prefix, then attributes."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    parts = target.split(".")
    try:
        for cut in range(len(parts), 0, -1):
            name = ".".join(parts[:cut])
            try:
                obj: Any = importlib.import_module(name)
            except ModuleNotFoundError as err:
                if err.name is not None and not name.startswith(err.name):
                    raise  # the module exists but imports something missing: say so
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        raise ModuleNotFoundError(f"No module named {parts[0]!r}")
    except Exception as err:
        module = target.rpartition(".")[0] or target
        raise TrainrunError(
            f"cannot import {key}._target_={target!r}: {_first_line(err)}",
            key=f"{key}._target_",
            fix=f"check the spelling; a module of yours ({module!r}) must be importable from "
            f"{cwd} or be installed",
        ) from None


def accepted_parameters(obj: Any) -> tuple[set[str], bool]:
    """The keyword names ``obj`` accepts, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def takes_flat_samples(node: DictConfig, key: str) -> bool:
    """Whether the target of ``node`` asks for ``in_features`` and not for ``in_shape``: a model
    written as ``nn.Linear(in_features, ...)`` first, which wants each sample as a flat vector
    (digits then arrive as ``[N, 64]``, not ``[N, 1, 8, 8]``). A model that asks for
    ``in_shape`` (or for neither, or takes ``**kwargs`` only) gets the samples as the data shapes them."""
    target = node.get("_target_")
    if not target:
        return False
    names, _ = accepted_parameters(locate(target, key))
    return "in_features" in names and "in_shape" not in names


def build_from_config(
    node: DictConfig, key: str, *, consumed: Iterable[str] = (), **provided: Any
) -> Any:
    """Instantiate ``node`` (the config at ``key``), leaving out the ``consumed`` keys that
    trainrun reads itself, and passing ``provided`` values the target accepts."""
    target = node.get("_target_")
    if not target:
        raise TrainrunError(f"{key} has no _target_", key=f"{key}._target_")
    obj = locate(target, key)
    names, takes_any = accepted_parameters(obj)
    schema = OmegaConf.get_type(node)
    declared = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else set()
    )
    values = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    assert isinstance(values, dict)
    skip = set(consumed) | {"_target_"}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in skip:
            continue
        if takes_any or name in names:
            kwargs[name] = value
        elif name not in declared:
            raise TrainrunError(
                f"{key}.{name}={value!r} is not an argument of {target}; it accepts "
                f"{', '.join(sorted(names)) or 'no keyword arguments'}",
                key=f"{key}.{name}",
                fix=f"remove {key}.{name}, or rename it to one of the accepted arguments",
            )
    passed = {name: v for name, v in provided.items() if takes_any or name in names}
    try:
        # The located object itself, not its name: Hydra does not import it a second time.
        factory = instantiate({"_target_": obj, "_partial_": True, "_convert_": "all", **kwargs})
        return factory(**passed)
    except TrainrunError:
        raise
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, TrainrunError):
            raise cause from None
        raise TrainrunError(
            f"could not build {key} ({target}) with {kwargs}: {_first_line(cause)}",
            key=key,
            fix=f"check the values under {key}",
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
