"""Recognizing a checkpoint before anything is read from it: a whole ``torch.save`` archive
(not empty, not cut short, not a file of another kind), then a payload holding the parts
:func:`trainrun.engine.checkpoint.payload` writes, each of the right kind. A file that is not one
gets one sentence naming what is wrong and which files to use, instead of an ``EOFError`` from
torch or a ``KeyError`` deep inside a resume.
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from trainrun.errors import TrainrunError
from trainrun.stored import stored_config
from trainrun.targets import definition, named_in, untrusted_targets, users_module

# What a checkpoint holds, and of what kind: checked when it is loaded, before anything is read
# from it, so a file that is not one gets one sentence instead of a KeyError deep in a resume.
PARTS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optimizer": dict, "scheduler": (dict, type(None)), "scaler": (dict, type(None)),
    "state": dict, "step_losses": (torch.Tensor, type(None)), "rng": dict, "config": dict,
}
STATE_PARTS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "step": int, "batch": int, "best": (float, int, type(None)),
    "best_epoch": (int, type(None)), "history": (list, dict), "stop_reason": (str, type(None)),
}
# Entries a later trainrun added (trainer.val_every_n_steps): checked when present, an older
# checkpoint without them loads with the defaults.
OPTIONAL_STATE_PARTS: dict[str, type | tuple[type, ...]] = {"best_step": (int, type(None)), "row_start": int}
RNG_PARTS = ("torch", "cuda", "numpy", "python")
CONFIG_SECTIONS = ("model", "loss", "optim", "data", "trainer")


def which_file(key: str) -> str:
    """The fix for a file that is not a usable checkpoint: which files are."""
    if key == "resume":
        return ("resume from a run's checkpoints/last.pt (resume=auto: this run folder's; "
                "resume=<run folder>: another run's), or start a new run")
    return f"give {key}= a run folder, or a checkpoints/best.pt or last.pt that trainrun wrote"


def not_an_archive(path: Path) -> str:
    """Why ``path`` cannot be a checkpoint written by ``torch.save`` (a zip archive), or ""."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes; a copy or a write that never finished?)"
    if not zipfile.is_zipfile(path):
        return (f"it is not a torch.save archive ({size} bytes: cut short by an interrupted copy, "
                "or a file of another kind)")
    return ""


def malformed(payload: dict[str, Any]) -> str:
    """What is missing or of the wrong kind in a loaded payload ("" when it is whole)."""
    for name, kind in PARTS.items():
        if name not in payload:
            return f"it has no {name!r} entry"
        if not isinstance(payload[name], kind):
            return f"its {name!r} entry is a {type(payload[name]).__name__}"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model"].items()):
        return "its 'model' entry is not a state dict of tensors"
    state = payload["state"]
    for name, kind in STATE_PARTS.items():
        value = state.get(name)
        if name not in state or not isinstance(value, kind) or isinstance(value, bool):
            return f"its state.{name} is {value!r}"
    for name, kind in OPTIONAL_STATE_PARTS.items():
        if name in state and (not isinstance(state[name], kind) or isinstance(state[name], bool)):
            return f"its state.{name} is {state[name]!r}"
    extra = set(state) - set(STATE_PARTS) - set(OPTIONAL_STATE_PARTS)
    if extra:
        return f"its state holds unknown entries: {', '.join(sorted(map(str, extra)))}"
    if any(state[n] < 0 for n in ("epoch", "step", "batch")):
        return "its state counts are negative"
    history = state["history"]  # the rows (older checkpoints), or which rows of history.jsonl
    if isinstance(history, dict) and not (isinstance(history.get("rows"), int) and history["rows"] >= 0
                                          and isinstance(history.get("sha256"), str)):
        return "its state.history does not say which rows of history.jsonl it holds"
    if isinstance(history, list) and not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in history):
        return "its state.history is not a list of epoch rows"
    missing = [n for n in RNG_PARTS if n not in payload["rng"]]
    if missing:
        return f"its random-stream state lacks {', '.join(missing)}"
    gone = [n for n in CONFIG_SECTIONS if not isinstance(payload["config"].get(n), dict)]
    if gone:
        return f"its stored config has no {', '.join(gone)} section"
    return ""


def checked_config(config: dict[str, Any], path: Path | str, key: str, trust: bool | Collection[str],
                   trust_option: str | None, unbuilt: Collection[str]) -> dict[str, Any]:
    """The stored config as it will be used (:func:`trainrun.stored.stored_config`: resolved,
    moved targets renamed), refused unless trusted (``trust=True``: a caller that builds nothing
    from it, resume)."""
    resolved = stored_config(config, path, key)
    if trust is not True:
        refuse_untrusted(resolved, path, key, () if trust is False else trust, trust_option, unbuilt)
    return resolved


def refuse_untrusted(config: dict[str, Any], path: Path | str, key: str, trust: Collection[str],
                     trust_option: str | None, unbuilt: Collection[str]) -> None:
    """Refuse a stored config that names code neither trusted nor covered by ``trust``
    (:func:`trainrun.targets.untrusted_targets`); ``unbuilt`` sections are not checked. The fix
    suggests trusting only the user's own modules (:func:`trainrun.targets.users_module`), never
    a target the file names from elsewhere."""
    refused = untrusted_targets({k: v for k, v in config.items() if k not in unbuilt}, trust)
    if not refused:
        return
    names = sorted({r.partition("=")[2] for r in refused})
    named = [n for n in names if named_in(n, trust)]  # named, but not defined where trust says
    own = [n for n in names if n not in named and users_module(n)]  # in the user's own modules
    others = [n for n in names if n not in named and n not in own]
    notes = "".join(f"; {n} is {_defined_as(n)}, which {trust_option or 'trust'}=[...] does not cover: "
                    "it covers only what is defined in the module or class it names" for n in named)
    fix = "use a checkpoint whose config names only trainrun's and torch's classes and your own code"
    if own and trust_option:
        fix = (f"if the file is yours (a run of your own code) or you trust it: {trust_option}=[{','.join(own)}]")
        if others or named:
            fix += f"; {', '.join(others + named)} cannot be trusted from a stored config"
    raise TrainrunError(
        f"refusing to build what the config stored in {str(path)!r} names: {', '.join(refused)}{notes}. "
        "A config inside a checkpoint is data: trainrun builds from it only its own classes "
        "and torch.nn / torch.optim ones unless you name the code to trust, so that a file "
        "from elsewhere cannot run code",
        key=key,
        fix=fix,
    )


def _defined_as(target: str) -> str:
    obj = definition(target)
    module = getattr(obj, "__name__", "") if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "") if not isinstance(obj, ModuleType) else ""
    where = ".".join(filter(None, [module if isinstance(module, str) else "", qualname]))
    return f"{where}, defined in {module}" if where and isinstance(module, str) else "not defined in a module it names"
