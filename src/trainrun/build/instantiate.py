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
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainrun.config.plain import plain
from trainrun.errors import TrainrunError, phase
from trainrun.targets import accepted_parameters, locate


def takes_flat_samples(node: DictConfig, key: str) -> bool:
    """Whether the target of ``node`` asks for ``in_features`` and not for ``in_shape``: a model
    written as ``nn.Linear(in_features, ...)`` first, which wants each sample as a flat vector
    (digits then arrive as ``[N, 64]``, not ``[N, 1, 8, 8]``). A model that asks for
    ``in_shape`` (or for neither, or takes ``**kwargs`` only) gets the samples as the data shapes them."""
    target = node.get("_target_")
    if not target:
        return False
    names, _ = accepted_parameters(imported(target, key))
    return "in_features" in names and "in_shape" not in names


def imported(target: str, key: str) -> Any:
    """:func:`trainrun.targets.locate` as a phase of its own: importing a user's module runs its
    top level, and an exit there (``sys.exit(main())`` unguarded) is an error of that import."""
    with phase(f"importing {key}._target_={target}", f"{key}._target_",
               fix=f"a module named by {key}._target_ must import without side effects: guard a "
               "script's code with `if __name__ == \"__main__\":`"):
        return locate(target, key)


# Why trainrun passes each provided value (the message when a user's key would replace one).
PROVIDED_WHY = {
    "in_features": "the data's sample size", "in_shape": "the data's sample shape",
    "out_features": "the number of classes or target columns", "params": "the model's parameters",
    "optimizer": "the run's optimizer", "total_steps": "trainer.epochs × batches per epoch",
    "mode": "the monitor's direction (scheduler.mode)", "run_dir": "the run folder",
    "resume": "whether the run resumes (resume=)", "tags": "the run's tags (tags=)",
}


def _kind(obj: object) -> str:
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
    obj = imported(target, key)
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
    values = plain(node)
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


def check_steps_alone(optimizer: torch.optim.Optimizer, target: str) -> None:
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
