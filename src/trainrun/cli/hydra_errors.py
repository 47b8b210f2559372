"""Hydra's and OmegaConf's composition errors (a typo in a key, a wrong type, an unknown
option, an unreadable override), made into one short paragraph with the key, the valid keys or
choices and a "did you mean"; and :func:`run_app`, the entry point that lets them reach it.

Hydra prints its own report of an error it catches around composition and exits 1, unless
``HYDRA_FULL_ERROR=1`` (documented) tells it to re-raise. :func:`run_app` sets that variable
around Hydra's entry point so every such error comes here, and gives the task the variable as
the user set it (:func:`as_user_set`), so workers, jobs and our own messages see the user's
choice: ``HYDRA_FULL_ERROR=1 train ...`` still shows full tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig

from trainrun.cli.entry import start
from trainrun.config.checks import known_keys
from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.errors import CONFIG_ERROR, TrainrunError, did_you_mean
from trainrun.targets import accepted_parameters, locate

FULL_ERROR = "HYDRA_FULL_ERROR"
# The user's own HYDRA_FULL_ERROR, set by run_app while it forces the variable to 1 for Hydra, so
# the processes started meanwhile (joblib workers, cluster jobs) know the user's choice. Only
# run_app sets it: importing this module changes no environment (a test runner that imports it
# must not hand a stale value to the `train` commands it starts).
_USER_FULL_ERROR = "TRAINRUN_USER_HYDRA_FULL_ERROR"
USER_VALUE = os.environ.get(_USER_FULL_ERROR, os.environ.get(FULL_ERROR, ""))


def full_errors() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return USER_VALUE == "1"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


_TYPE_WORDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false",
               "String": "text"}


def composition_error(ex: BaseException) -> TrainrunError | None:
    """A short :class:`TrainrunError` for a Hydra/OmegaConf composition error (None if ``ex``
    is not one)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(ex, MissingConfigException) and ex.options is not None and ex.missing_cfg_file:
        group, _, name = str(ex.missing_cfg_file).rpartition("/")
        options = sorted(ex.options)
        own = {"model": "a torch.nn.Module", "data": "a data source", "loss": "a loss",
               "optim": "an optimizer"}.get(group)
        fix = f"use one of: {', '.join(f'{group}={o}' for o in options)}"
        if own:
            fix += f"; for {own} of your own, set {group}._target_=yourmodule.Name"
        return TrainrunError(
            f"{group}={name} is not an option of the '{group}' group; its options are "
            f"{', '.join(options)}{did_you_mean(name, options, f'{group}=')}",
            key=group, fix=fix,
        )
    if isinstance(ex, MissingConfigException):
        return TrainrunError(_first_line(str(ex)), fix="check --config-name / --config-path")
    if isinstance(ex, OverrideParseException):
        return TrainrunError(
            f"cannot read a command-line override: {_first_line(str(ex))}",
            fix="write overrides as key=value; lists as key=[a,b]; quote values with spaces or "
            "special characters, e.g. 'data.path=\"my file.csv\"'",
        )
    cause = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        full_key, key = str(cause.full_key), str(cause.key)
        prefix = full_key.rpartition(".")[0]
        parent = getattr(cause, "parent_node", None)
        if isinstance(cause, ConfigKeyError | AttributeError) and not isinstance(cause, ValidationError):
            siblings = [k for k in (parent.keys() if isinstance(parent, DictConfig) else [])
                        if k != "hydra"]
            hint = did_you_mean(key, siblings, f"{prefix}." if prefix else "")
            m = re.search(r"use \+(\S+)", str(ex))
            append = m.group(1) if m else f"{full_key}=..."
            target = parent.get("_target_") if isinstance(parent, DictConfig) and "_target_" in siblings else None
            takes = bool(target) and _target_takes(str(target), key)
            elsewhere = _options_with(prefix, key)
            if not hint and not takes and not elsewhere:  # the right key in another section?
                leaf_near = [k for k in known_keys() if k != full_key  # (epochs -> trainer.epochs)
                             and difflib.get_close_matches(key, [k.rpartition(".")[2]], cutoff=0.75)]
                if leaf_near:
                    hint = f" (did you mean {leaf_near[0]}?)"
            where = f"'{prefix}'" if prefix else "the top level of the config"
            if elsewhere:
                where += f" as chosen (only {', '.join(elsewhere)} has it)"
            valid = ", ".join(str(s) for s in siblings) or "(none)"
            if takes:
                fix = f"{target} takes {key}: add it with +{append}"
            else:
                fix = f"use {hint[15:-2]}" if hint else "correct the spelling (train --help lists the keys)"
                if elsewhere:
                    fix = f"drop {full_key}, or choose {' or '.join(elsewhere)}"
                if "_target_" in siblings:
                    fix += f"; to pass an extra argument that {prefix}._target_ accepts, add it with +{append}"
            return TrainrunError(
                f"{full_key} is not a key of {where}{hint}\n  valid keys there: {valid}",
                key=full_key, fix=fix,
            )
        text = _first_line(getattr(cause, "msg", "") or str(cause))
        m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", text)
        if m:
            want = _TYPE_WORDS.get(m.group(2), m.group(2))
            return TrainrunError(f"{full_key}={m.group(1)} is not {want}", key=full_key,
                                 fix=f"give {full_key} {want}")
        m = re.match(r"Value '(.*)' is not a valid bool", text)
        if m:
            return TrainrunError(f"{full_key}={m.group(1)} is not true or false", key=full_key,
                                 fix=f"give {full_key} true or false")
        m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", text)
        if m:
            choices = [c.strip() for c in m.group(2).split(",")]
            return TrainrunError(
                f"{full_key}={m.group(1)} is not a valid choice; choose one of "
                f"{', '.join(choices)}{did_you_mean(m.group(1), choices, f'{full_key}=')}",
                key=full_key, fix=f"use one of: {', '.join(f'{full_key}={c}' for c in choices)}",
            )
        if re.match(r"field '.*' is not Optional", text):
            return TrainrunError(f"{full_key} cannot be null", key=full_key,
                                 fix=f"give {full_key} a value")
        if "does not support deletion" in text:
            return TrainrunError(f"~{full_key} removes a key that every run reads", key=full_key,
                                 fix=f"give it a value instead ({full_key}=...; train --help shows its default)")
        if "is not a ListConfig" in text:
            return TrainrunError(f"{full_key} must be a list", key=full_key,
                                 fix=f"write it in brackets, e.g. {full_key}=[1,8,8]")
        return TrainrunError(f"{full_key}: {text}", key=full_key)
    m = re.search(r"An item is already at '(.*)'", str(ex))
    if m:
        return TrainrunError(f"+{m.group(1)} adds a key, but {m.group(1)} already exists",
                             key=m.group(1), fix=f"drop the '+': {m.group(1)}=... changes the value")
    m = re.search(r"Key '(.*)' not in '(\w+)'\s+full_key: (\S+)", str(ex))
    if m:  # a key set by a preset (experiment=...) that the chosen option's schema lacks
        where = re.match(r"In '([^']+)'", str(ex))
        source = f" (set by {where.group(1)})" if where else ""
        return TrainrunError(
            f"{m.group(3)} is not a key of {m.group(2)}{source}",
            key=m.group(3),
            fix=f"drop {m.group(3)}, or choose the option whose schema has it",
        )
    if "Config group override must be a string or a list" in str(ex):
        nulled = [a.split("=", 1)[0].lstrip("+~") for a in sys.argv[1:] if a.endswith("=null") and "." not in a]
        group = nulled[-1] if nulled else "a group"
        return TrainrunError(
            f"{group}=null: a group's choice cannot be null", key=nulled[-1] if nulled else None,
            fix="choose one of its options (train --help lists them)" + (
                "; logger=[] turns every logger off" if group == "logger" else ""),
        )
    if isinstance(ex, HydraException | OmegaConfBaseException):
        lines = [_first_line(str(ex))]
        if cause is not None and _first_line(str(cause)):
            lines.append(_first_line(str(cause)))
        return TrainrunError("; ".join(lines))
    return None



def _target_takes(target: str, name: str) -> bool:
    """Whether the class or function ``target`` takes a keyword ``name`` (False if it cannot be
    imported: the composition error is then about the key, not the target)."""
    try:
        names, _ = accepted_parameters(locate(target, "_target_"))
    except Exception:
        return False
    return name in names


def _options_with(section: str, key: str) -> list[str]:
    """The options of group ``section`` whose schema has ``key`` (``data.n_samples`` is
    data=synthetic's), when the chosen option lacks it."""
    schemas = GROUP_SCHEMAS.get(section, {})
    return [f"{section}={name}" for name, cls in schemas.items()
            if key in {f.name for f in dataclasses.fields(cls)}]


@contextlib.contextmanager
def as_user_set() -> Iterator[None]:
    """Inside the task: ``HYDRA_FULL_ERROR`` as the user set it (inherited by the processes the
    task starts); back to ``1`` for Hydra afterwards (a later sweep job's composition error)."""
    _set(USER_VALUE)
    try:
        yield
    finally:
        os.environ[FULL_ERROR] = "1"


def _set(value: str) -> None:
    if value:
        os.environ[FULL_ERROR] = value
    else:
        os.environ.pop(FULL_ERROR, None)


def run_app(main: Callable[[], Any], task_started: Callable[[], bool]) -> None:
    """Run a ``@hydra.main`` function; an error Hydra raises around the task (composition, the
    sweeper) prints as one paragraph and exits 2 before any task ran, 1 after."""
    start()  # the console guarded, the working folder there (train() did it before its own steps)
    os.environ[_USER_FULL_ERROR] = USER_VALUE
    os.environ[FULL_ERROR] = "1"
    try:
        main()
    except Exception as ex:
        if full_errors():
            raise
        err = composition_error(ex)
        if err is None and isinstance(ex, OSError) and not task_started():  # Hydra making the run folder
            where = f" {ex.filename!r}" if getattr(ex, "filename", None) else ""
            err = TrainrunError(
                f"cannot write the run folder{where}: {type(ex).__name__}: {ex.strerror or ex}",
                key="hydra.run.dir",
                fix="choose a folder this user can create and write (hydra.run.dir=<folder>), "
                "on a disk with free space")
        if err is None:
            err = TrainrunError(f"{type(ex).__name__}: {_first_line(str(ex))}",
                                fix="HYDRA_FULL_ERROR=1 shows the traceback")
            err.exit_code = 1 if task_started() else CONFIG_ERROR
        print(f"\nError: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    finally:
        _set(USER_VALUE)
        os.environ.pop(_USER_FULL_ERROR, None)
