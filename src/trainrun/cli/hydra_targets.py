"""An object Hydra itself builds from a ``_target_`` under ``hydra.`` (a callback in
``hydra.callbacks``, a launcher or sweeper plugin's class) that cannot be imported or built: one
paragraph naming the key, instead of Hydra's "Error locating target ..." cut in the middle.

Hydra builds these before trainrun's task starts, with the interpreter's ``sys.path``: an
installed module or one on ``PYTHONPATH``, never the working folder (trainrun's import hygiene,
``trainrun.hygiene``: a module lying there runs only when a trainrun key names it).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

from hydra.errors import InstantiationException

from trainrun.errors import TrainrunError

# Hydra's _resolve_target and instantiate_node: "Error locating target 'x.Y', set env var ...", or
# "Error in call to target 'x.Y':\nValueError('...')", then "\nfull_key: hydra.callbacks.z"
_HYDRA_TARGET = re.compile(r"Error (?P<what>locating|in call to) target '(?P<target>[^']*)'.*?"
                           r"full_key: (?P<key>hydra\.\S+)", re.S)


# instantiate_node: "Expected a callable target, got '42' of type 'int'\nfull_key: hydra.callbacks.z"
_NOT_CALLABLE = re.compile(r"Expected a callable target, got '(?P<value>.*)' of type '(?P<type>[^']*)'.*?"
                           r"full_key: (?P<key>hydra\.\S+)", re.S)


def unimportable_hydra_target(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    if not isinstance(ex, InstantiationException):
        return None
    not_callable = _NOT_CALLABLE.search(str(ex))
    if not_callable is not None:
        key = not_callable["key"]
        return TrainrunError(f"{key}._target_ names a {not_callable['type']} ({not_callable['value']!r}), not a class",
                             key=f"{key}._target_", fix="name the class to build, as module.Class")
    found = _HYDRA_TARGET.search(str(ex))
    if found is None:
        return None
    target, key = found["target"], found["key"]
    if not target:
        return TrainrunError(f"{key}._target_ is empty", key=f"{key}._target_",
                             fix="name the class to build, as module.Class, or remove the key")
    module, _, name = target.rpartition(".")
    cause = ex.__cause__
    if found["what"] == "in call to":
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}" if cause else str(ex)
        return TrainrunError(f"{key}: building {target} raised {why}", key=key,
                             fix="fix its constructor or the arguments under the key (HYDRA_FULL_ERROR=1 shows "
                             "the traceback)")
    if module and _importable(module):
        return TrainrunError(f"{key}._target_={target}: module {module!r} has no {name!r}", key=f"{key}._target_",
                             fix=f"check the name of the class in {module!r}")
    cause = cause.__cause__ if cause is not None and cause.__cause__ is not None else cause
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
    return TrainrunError(
        f"{key}._target_={target}: Hydra cannot import it{why}. Hydra builds what is under hydra. "
        "before trainrun starts, from installed modules and PYTHONPATH; the working folder is not searched",
        key=f"{key}._target_",
        fix=f"install the package holding {module or target!r} (pip install -e <its folder>), or put its folder "
        "(not the working folder) on PYTHONPATH; for hooks into training, trainrun's callbacks=[...] finds "
        "modules in the working folder")


def _importable(module: str) -> bool:
    """Whether Hydra's ``sys.path`` finds ``module`` (its parent packages are imported: the user
    named them)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
