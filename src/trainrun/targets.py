"""What a ``_target_`` names, and whether it may run.

Three rules every command and process share: the working folder is importable for the user's
modules but never shadows an installed one (:func:`user_folder_importable`); a target is
located by the longest importable module prefix (:func:`locate`); and a config stored in a
checkpoint is data, whose targets are built only when trainrun's own or torch's classes, or
named by the user (:func:`untrusted_targets`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import site
import sys
import sysconfig
from collections.abc import Callable, Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.errors import TrainrunError


def user_folder_importable() -> str:
    """Make the current folder importable for user modules (``model._target_=mynet.Net``)
    without letting it shadow anything installed: it goes at the *end* of ``sys.path``, so a
    ``numpy.py`` or ``matplotlib.py`` lying there is never imported in numpy's place."""
    cwd = os.getcwd()
    if cwd in sys.path[:-1] or "" in sys.path:
        sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
    if cwd not in sys.path:
        sys.path.append(cwd)
    return cwd


def locate(target: str, key: str) -> Any:
    """Import ``target`` (``pkg.module.Name``, or ``module.Name`` of a file in the current
    folder): the longest importable module prefix, then attributes."""
    cwd = user_folder_importable()
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
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                # Only now can a module of the user's have lost to an installed one: when the
                # installed module has the name (torch.nn.CrossEntropyLoss), it is the one meant.
                _check_not_shadowed(parts[0], cwd, key)
                raise
            return obj
        raise ModuleNotFoundError(f"No module named {parts[0]!r}")
    except TrainrunError:
        raise
    except Exception as err:
        module = target.rpartition(".")[0] or target
        raise TrainrunError(
            f"cannot import {key}._target_={target!r}: {first_line(err)}",
            key=f"{key}._target_",
            fix=f"check the spelling; a module of yours ({module!r}) must be importable from "
            f"{cwd} or be installed",
        ) from None


def _check_not_shadowed(top: str, cwd: str, key: str) -> None:
    """A user's ``utils.py`` in the working folder loses to an installed ``utils``: say so
    instead of building the wrong object."""
    mine = [p for p in (Path(cwd) / f"{top}.py", Path(cwd) / top) if p.exists()]
    loaded = getattr(sys.modules.get(top), "__file__", None) or ""
    installed = [Path(p).resolve() for p in (*site.getsitepackages(), sysconfig.get_paths()["stdlib"])]
    if mine and loaded and any(Path(loaded).resolve().is_relative_to(p) for p in installed):
        raise TrainrunError(
            f"{key}._target_ names module {top!r}: your {mine[0].name} in {cwd} is shadowed by the "
            f"installed module of that name ({loaded}), which is the one that would be used",
            key=f"{key}._target_", fix=f"rename your {mine[0].name} (e.g. my_{top}.py) and its _target_",
        )


def accepted_parameters(obj: Callable[..., object]) -> tuple[set[str], bool]:
    """The keyword names ``obj`` accepts, and whether it takes ``**kwargs``. A torch module
    class without an ``__init__`` of its own shows ``nn.Module.__init__(*args, **kwargs)``,
    which accepts no keyword at all: it takes none."""
    init = getattr(obj, "__init__", None) if isinstance(obj, type) else None
    if getattr(init, "__qualname__", "") == "Module.__init__" and \
            getattr(init, "__module__", "") == "torch.nn.modules.module":
        return set(), False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# --------------------------------------------------------------------------- trust

# A config stored in a checkpoint is data. What may be built from it without the user naming it
# again: trainrun's own preset targets, and torch's classes of the kinds a run builds.
TRUSTED_TORCH = ("torch.nn.", "torch.optim.")


@cache
def own_targets() -> frozenset[str]:
    """trainrun's own targets: the ``_target_`` defaults of its schemas (models, sources, loggers)."""
    names = {getattr(cls, "_target_", None) for schemas in GROUP_SCHEMAS.values() for cls in schemas.values()}
    return frozenset(n for n in names if isinstance(n, str) and n.startswith("trainrun."))


def trusted_target(target: str) -> bool:
    """Whether ``target`` may be built from a stored config: one of :func:`own_targets`, or a
    class defined in torch.nn / torch.optim that is a module, an optimizer or a scheduler (not
    any torch function: ``torch.load`` and ``torch.hub.load`` run code). Nothing outside torch
    is imported to decide."""
    if target in own_targets():
        return True
    if not target.startswith(TRUSTED_TORCH):
        return False
    import torch  # already imported by whoever loaded a checkpoint

    parts = target.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    else:
        return False
    try:
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
    except AttributeError:
        return False
    kinds = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
             torch.optim.lr_scheduler.ReduceLROnPlateau)
    return isinstance(obj, type) and obj.__module__.startswith(TRUSTED_TORCH) and issubclass(obj, kinds)


def named_in(target: str, trust: Collection[str]) -> bool:
    """Whether the user named ``target`` in ``trust``: the target itself, or a module (or class)
    it lies in (``trust=[mynet]`` covers ``mynet.Net``; ``mynet.Net`` covers only itself)."""
    return any(target == t or target.startswith(f"{t}.") for t in trust)


def untrusted_targets(config: object, trust: Collection[str] = (), prefix: str = "") -> list[str]:
    """Every ``<key>._target_=<name>`` in ``config`` (nested ones included: Hydra builds those
    too) that is neither trusted (:func:`trusted_target`) nor named in ``trust`` (:func:`named_in`)."""
    found: list[str] = []
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not (isinstance(target, str) and (named_in(target, trust) or trusted_target(target))):
            found.append(f"{prefix}_target_={target}")
        for key, value in config.items():
            found += untrusted_targets(value, trust, f"{prefix}{key}.")
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            found += untrusted_targets(value, trust, f"{prefix[:-1]}[{i}].")
    return found
