"""What a ``_target_`` names, and whether it may run.

Three rules every command and process share: the working folder is importable for the user's
modules but never shadows an installed one (:func:`user_folder_importable`); a target is
located by the longest importable module prefix (:func:`locate`); and a config stored in a
checkpoint is data, whose targets are built only when trainrun's own or torch's classes, or
covered by what the user trusts (:func:`untrusted_targets`): ``trust=[mymod]`` covers what is
*defined* in ``mymod`` (:func:`defined_in`), never what is merely reachable through it
(``mymod.np.load``). The stored config is resolved before it is checked (:mod:`trainrun.stored`),
and trainrun's moved targets are read under their new names (:data:`MOVED`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import site
import sys
import sysconfig
from collections.abc import Callable, Collection, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.errors import TrainrunError
from trainrun.hygiene import user_folder_importable as add_working_folder
from trainrun.hygiene import working_folder_last


def user_folder_importable(top: str = "") -> str:
    """The working folder, importable (after everything installed: :func:`trainrun.hygiene.
    working_folder_last`) when ``top`` names a module nothing installed provides: a user's
    ``mynet`` of ``model._target_=mynet.Net``. Until a target needs it, a trainrun command keeps
    the working folder off ``sys.path`` (:func:`trainrun.hygiene.protect`)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""
    if cwd in sys.path:
        return working_folder_last()
    try:
        installed = bool(top) and (top in sys.modules or importlib.util.find_spec(top) is not None)
    except (ImportError, ValueError):
        installed = False
    return cwd if installed else add_working_folder(top)


def locate(target: str, key: str) -> Any:
    """Import ``target`` (``pkg.module.Name``, or ``module.Name`` of a file in the current
    folder): the longest importable module prefix, then attributes."""
    parts = target.split(".")
    cwd = user_folder_importable(parts[0])
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


# trainrun's public targets that moved (the rooms of 90f584c): a checkpoint written before names
# the old ones. Its stored config is read under the new names (trainrun.stored), so evaluate,
# predict, export-model and resume=... keep working; nothing else is renamed.
MOVED: dict[str, str] = {
    "trainrun.models.MLP": "trainrun.build.models.MLP",
    "trainrun.models.Linear": "trainrun.build.models.Linear",
    "trainrun.models.CNN": "trainrun.build.models.CNN",
    "trainrun.report.loggers.CsvLogger": "trainrun.report.loggers.csv_logs.CsvLogger",
    "trainrun.report.loggers.TensorBoardLogger": "trainrun.report.loggers.tensorboard.TensorBoardLogger",
    "trainrun.report.loggers.MLflowLogger": "trainrun.report.loggers.mlflow.MLflowLogger",
    "trainrun.report.loggers.WandbLogger": "trainrun.report.loggers.wandb.WandbLogger",
}


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


def defined_in(obj: object, name: str) -> bool:
    """Whether ``obj`` is *defined* in the module (or package) or the class ``name``: by its own
    ``__module__`` and ``__qualname__``, never by the attribute path that reached it
    (``mymod.np.load`` is numpy's ``load``, defined in numpy, whatever path names it)."""
    module: object = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
    qualname: object = "" if isinstance(obj, ModuleType) else getattr(obj, "__qualname__", "")
    if not isinstance(module, str) or not isinstance(qualname, str):
        return False
    if module == name or module.startswith(f"{name}."):
        return True
    parts = name.split(".")  # a class (or function) of a module: mynet.Net covers Net and Net.from_file
    return any(module == ".".join(parts[:cut]) and qualname and
               (qualname == ".".join(parts[cut:]) or qualname.startswith(".".join(parts[cut:]) + "."))
               for cut in range(1, len(parts)))


def definition(target: str) -> object | None:
    """The object ``target`` names, imported (only for a target the user trusts), or None."""
    try:
        return locate(target, "trust")
    except TrainrunError:
        return None


def covered_by(target: str, trust: Collection[str]) -> bool:
    """Whether ``trust`` covers ``target``: named in it (:func:`named_in`), and what it resolves to
    is defined in the module or class named (:func:`defined_in`). A target that cannot be
    imported runs nothing: building it says so."""
    named = [t for t in trust if target == t or target.startswith(f"{t}.")]
    if not named:
        return False
    obj = definition(target)
    return obj is None or any(defined_in(obj, t) for t in named)


def users_module(target: str) -> str | None:
    """The top-level module of ``target`` when it is the user's own: a file or package in the
    working folder that nothing installed provides. A refusal suggests trusting only these."""
    top = target.split(".")[0]
    try:
        cwd = Path.cwd()
    except OSError:
        return None
    if not top.isidentifier() or top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return None
    if not ((cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()):
        return None
    elsewhere = [p for p in sys.path if p not in ("", str(cwd))]
    return top if importlib.machinery.PathFinder.find_spec(top, elsewhere) is None else None


def untrusted_targets(config: object, trust: Collection[str] = (), prefix: str = "") -> list[str]:
    """Every ``<key>._target_=<name>`` in ``config`` (nested ones included: Hydra builds those
    too) that is neither trusted (:func:`trusted_target`) nor covered by ``trust`` (:func:`covered_by`)."""
    found: list[str] = []
    if isinstance(config, Mapping):
        target = config.get("_target_")
        trusted = isinstance(target, str) and (trusted_target(target) or covered_by(target, trust))
        if target is not None and not trusted:
            found.append(f"{prefix}_target_={target}")
        for key, value in config.items():
            found += untrusted_targets(value, trust, f"{prefix}{key}.")
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            found += untrusted_targets(value, trust, f"{prefix[:-1]}[{i}].")
    return found
