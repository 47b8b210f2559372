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
import site
import sys
import sysconfig
from collections.abc import Collection, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.errors import TrainrunError, phase


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
            f"cannot import {key}._target_={target!r}: {_first_line(err)}",
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


def accepted_parameters(obj: Any) -> tuple[set[str], bool]:
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


# Why trainrun passes each provided value (the message when a user's key would replace one).
PROVIDED_WHY = {
    "in_features": "the data's sample size", "in_shape": "the data's sample shape",
    "out_features": "the number of classes or target columns", "params": "the model's parameters",
    "optimizer": "the run's optimizer", "total_steps": "trainer.epochs × batches per epoch",
    "mode": "the monitor's direction (scheduler.mode)", "run_dir": "the run folder",
    "resume": "whether the run resumes (resume=)", "tags": "the run's tags (tags=)",
}


def _kind(obj: Any) -> str:
    return f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"


def build_from_config(
    node: DictConfig, key: str, *, what: str, expect: type | tuple[type, ...] | None = None,
    expect_text: str = "", consumed: Iterable[str] = (), **provided: Any,
) -> Any:
    """Instantiate ``node`` (the config at ``key``); ``what`` says it ("building the optimizer"). Leaves out
    the ``consumed`` keys that trainrun reads itself and passing ``provided`` values the target
    accepts. ``expect``: what the object must be (checked on the class before building, and on
    the result, so a factory function is checked too); ``expect_text`` says it in words.

    Building runs inside the error boundary: whatever the target raises becomes one paragraph
    naming ``key`` (or the key of ``node`` its message names)."""
    target = node.get("_target_")
    if not target:
        raise TrainrunError(f"{key} has no _target_", key=f"{key}._target_",
                            fix=f"choose a preset ({key}=...; train --help lists them) or name a class: "
                            f"{key}._target_=mymodule.MyClass")
    obj = locate(target, key)
    wanted = expect_text or (expect.__name__ if isinstance(expect, type) else "")
    if expect is not None and isinstance(obj, type) and not issubclass(obj, expect):
        raise TrainrunError(
            f"{key}._target_={target} is {_kind(obj)}, not {wanted}",
            key=f"{key}._target_",
            fix=f"name {wanted} in {key}._target_ (or a function that returns one)",
        )
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
        if name in provided:  # a value trainrun passes itself would silently replace the user's
            given = provided[name]
            shown = f"={given!r}" if isinstance(given, int | float | str | tuple) else ""
            raise TrainrunError(
                f"{key}.{name}={value!r} would be ignored: trainrun passes {name}{shown} to "
                f"{target} itself ({PROVIDED_WHY.get(name, 'from the run it builds')})",
                key=f"{key}.{name}",
                fix=f"remove {key}.{name}; to change it, change what it comes from",
            )
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
    accepted = ", ".join(sorted(names)) or "no keyword arguments"
    with phase(f"{what} ({key}._target_={target})", f"{key}._target_", section=node,
               fix=lambda named: f"check {named}" if named != f"{key}._target_"
               else f"check the values under {key}; {target} accepts {accepted}"):
        # The located object itself, not its name: Hydra does not import it a second time.
        factory = instantiate({"_target_": obj, "_partial_": True, "_convert_": "all", **kwargs})
        built = factory(**passed)
    if expect is not None and not isinstance(built, expect):
        raise TrainrunError(
            f"{key}._target_={target} built {_kind(built)}, not {wanted}",
            key=f"{key}._target_",
            fix=f"make {target} return {wanted}",
        )
    return built


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def check_steps_alone(optimizer: Any, target: str) -> None:
    """The loop calls ``optimizer.step()`` with no argument: an optimizer whose ``step`` needs a
    closure (LBFGS re-evaluates the loss itself) cannot be driven by it."""
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):
        return
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise TrainrunError(
            f"optim._target_={target}: its step() needs a closure (a function that recomputes the "
            "loss), but trainrun's loop calls optimizer.step() once per batch, after backward, "
            "with no argument",
            key="optim._target_",
            fix="choose an optimizer whose step() works without a closure (sgd, adam, adamw, "
            "rmsprop, adagrad)",
        )


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


def untrusted_targets(config: Any, trust: Collection[str] = (), prefix: str = "") -> list[str]:
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
