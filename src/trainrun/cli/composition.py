"""Hydra's and OmegaConf's composition errors (a typo in a key, a wrong type, an unknown
option, an unreadable override), each reworded as one short paragraph with the key, the valid
keys or choices and a "did you mean".

One small function per kind of error, tried in order by :func:`composition_error`. Each reads
what the exception carries (its type and attributes first, its message text only where Hydra or
OmegaConf put nothing else), and ``tests/unit/test_composition.py`` pins the real message each
one reads, so a Hydra or OmegaConf release that rewords one fails a test instead of a user.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from trainrun.cli.hydra_targets import unimportable_hydra_target
from trainrun.config import config_dir
from trainrun.config.closed import known_keys
from trainrun.config.groups import GROUP_SCHEMAS
from trainrun.errors import TrainrunError, did_you_mean
from trainrun.targets import accepted_parameters, locate

_TYPE_WORDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false", "String": "text"}
# What a user's own object of a group is, for the fix of an unknown option.
_OWN = {"model": "a torch.nn.Module", "data": "a data source", "loss": "a loss", "optim": "an optimizer"}

Reword = Callable[[BaseException, Sequence[str]], "TrainrunError | None"]


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _keyed(ex: BaseException) -> OmegaConfBaseException | None:
    """The OmegaConf error that names a key: ``ex`` itself, or what Hydra wrapped."""
    cause = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    return cause if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None) else None


def _text(cause: OmegaConfBaseException) -> str:
    return first_line(getattr(cause, "msg", "") or str(cause))


# --------------------------------------------------------------------------- Hydra's own


def unknown_option(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``optim=adamm``: Hydra lists the group's options on the exception."""
    if not (isinstance(ex, MissingConfigException) and ex.options is not None and ex.missing_cfg_file):
        return None
    group, _, name = str(ex.missing_cfg_file).rpartition("/")
    options = sorted(ex.options)
    fix = f"use one of: {', '.join(f'{group}={o}' for o in options)}"
    if group in _OWN:
        fix += f"; for {_OWN[group]} of your own, set {group}._target_=yourmodule.Name"
    return TrainrunError(
        f"{group}={name} is not an option of the '{group}' group; its options are "
        f"{', '.join(options)}{did_you_mean(name, options, f'{group}=')}", key=group, fix=fix)


def unknown_list_option(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``logger=[csv,neptune]``: an option inside a list; Hydra names the file it could not load
    ("Could not load 'logger/neptune'") but gives no options: they are the group's YAML files."""
    if not (isinstance(ex, MissingConfigException) and ex.missing_cfg_file and "/" in str(ex.missing_cfg_file)):
        return None
    group, _, name = str(ex.missing_cfg_file).rpartition("/")
    folder = config_dir() / group
    options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if not options:
        return None
    return TrainrunError(
        f"{group}: {name} is not an option of the '{group}' group; its options are "
        f"{', '.join(options)}{did_you_mean(name, options)}", key=group,
        fix=f"name options of the group, e.g. {group}=[{','.join(options[:2])}]")


def missing_config(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``--config-name nosuch``: no option list to offer."""
    if isinstance(ex, MissingConfigException):
        return TrainrunError(first_line(str(ex)), fix="check --config-name / --config-path")
    return None


def unreadable_override(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``'data.path=a b'`` unquoted, ``key=[1,``: Hydra's override grammar refused it."""
    if isinstance(ex, OverrideParseException):
        shown = re.search(r"input '([^']*)'", str(ex))  # the text the grammar stopped at
        culprits = [a for a in argv if "=" in a and ((shown and shown.group(1) and shown.group(1) in a)
                                                    or a in str(ex))]
        return TrainrunError(
            f"cannot read a command-line override: {first_line(str(ex))}",
            key=culprits[0].split("=", 1)[0].lstrip("+~") if culprits else None,
            fix="write overrides as key=value; lists as key=[a,b]; quote values with spaces or "
            "special characters, e.g. 'data.path=\"my file.csv\"'")
    return None


def key_already_there(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``+trainer.epochs=3``: Hydra says "Could not append to config. An item is already at 'k'"."""
    m = re.search(r"An item is already at '(.*)'", str(ex))
    if m:
        return TrainrunError(f"+{m.group(1)} adds a key, but {m.group(1)} already exists",
                             key=m.group(1), fix=f"drop the '+': {m.group(1)}=... changes the value")
    return None


def preset_key_missing(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """A key set by a preset (``experiment=...``) that the chosen option's schema lacks: Hydra
    says "In 'experiment/x': ... Key 'k' not in 'Schema' full_key: a.k"."""
    m = re.search(r"Key '(.*)' not in '(\w+)'\s+full_key: (\S+)", str(ex))
    if not m:
        return None
    where = re.match(r"In '([^']+)'", str(ex))
    source = f" (set by {where.group(1)})" if where else ""
    return TrainrunError(f"{m.group(3)} is not a key of {m.group(2)}{source}", key=m.group(3),
                         fix=f"drop {m.group(3)}, or choose the option whose schema has it")


def group_set_to_null(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``optim=null``: Hydra says "Config group override must be a string or a list"."""
    if "Config group override must be a string or a list" not in str(ex):
        return None
    nulled = [a.split("=", 1)[0].lstrip("+~") for a in argv if a.endswith("=null") and "." not in a]
    group = nulled[-1] if nulled else "a group"
    return TrainrunError(
        f"{group}=null: a group's choice cannot be null", key=nulled[-1] if nulled else None,
        fix="choose one of its options (train --help lists them)"
        + ("; logger=[] turns every logger off" if group == "logger" else ""))


# --------------------------------------------------------------------------- OmegaConf's, by key


def unknown_key(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``optim.lrr=0.1``: a key the section's schema does not have (ConfigKeyError)."""
    cause = _keyed(ex)
    if cause is None or not isinstance(cause, ConfigKeyError | AttributeError) or isinstance(cause, ValidationError):
        return None
    full_key, key = str(cause.full_key), str(cause.key)
    prefix = full_key.rpartition(".")[0]
    parent = getattr(cause, "parent_node", None)
    siblings = [str(k) for k in (parent.keys() if isinstance(parent, DictConfig) else []) if k != "hydra"]
    hint = did_you_mean(key, siblings, f"{prefix}." if prefix else "")
    m = re.search(r"use \+(\S+)", str(ex))
    append = m.group(1) if m else f"{full_key}=..."
    target = parent.get("_target_") if isinstance(parent, DictConfig) and "_target_" in siblings else None
    takes = bool(target) and _target_takes(str(target), key)
    elsewhere = _options_with(prefix, key)
    if not hint and not takes and not elsewhere:  # the right key in another section (epochs -> trainer.epochs)
        near = [k for k in known_keys()
                if k != full_key and difflib.get_close_matches(key, [k.rpartition(".")[2]], cutoff=0.75)]
        if near:
            hint = f" (did you mean {near[0]}?)"
    where = f"'{prefix}'" if prefix else "the top level of the config"
    if elsewhere:
        where += f" as chosen (only {', '.join(elsewhere)} has it)"
    if takes:
        fix = f"{target} takes {key}: add it with +{append}"
    else:
        fix = f"use {hint[15:-2]}" if hint else "correct the spelling (train --help lists the keys)"
        if elsewhere:
            fix = f"drop {full_key}, or choose {' or '.join(elsewhere)}"
        if "_target_" in siblings:
            fix += f"; to pass an extra argument that {prefix}._target_ accepts, add it with +{append}"
    valid = ", ".join(siblings) or "(none)"
    return TrainrunError(f"{full_key} is not a key of {where}{hint}\n  valid keys there: {valid}",
                         key=full_key, fix=fix)


def wrong_type(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``trainer.epochs=ten``: "Value 'ten' of type 'str' could not be converted to Integer"."""
    cause = _keyed(ex)
    m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", _text(cause)) if cause else None
    if cause is None or not m:
        return None
    want = _TYPE_WORDS.get(m.group(2), m.group(2))
    return TrainrunError(f"{cause.full_key}={m.group(1)} is not {want}", key=str(cause.full_key),
                         fix=f"give {cause.full_key} {want}")


def not_a_bool(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``plot=maybe``: "Value 'maybe' is not a valid bool"."""
    cause = _keyed(ex)
    m = re.match(r"Value '(.*)' is not a valid bool", _text(cause)) if cause else None
    if cause is None or not m:
        return None
    return TrainrunError(f"{cause.full_key}={m.group(1)} is not true or false", key=str(cause.full_key),
                         fix=f"give {cause.full_key} true or false")


def invalid_choice(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """An Enum field: "Invalid value 'stp', expected one of [stop, skip]"."""
    cause = _keyed(ex)
    m = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", _text(cause)) if cause else None
    if cause is None or not m:
        return None
    key = str(cause.full_key)
    choices = [c.strip() for c in m.group(2).split(",")]
    return TrainrunError(
        f"{key}={m.group(1)} is not a valid choice; choose one of "
        f"{', '.join(choices)}{did_you_mean(m.group(1), choices, f'{key}=')}",
        key=key, fix=f"use one of: {', '.join(f'{key}={c}' for c in choices)}")


def null_not_allowed(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``optim.lr=null``: "field 'optim.lr' is not Optional"."""
    cause = _keyed(ex)
    if cause is None or not re.match(r"field '.*' is not Optional", _text(cause)):
        return None
    return TrainrunError(f"{cause.full_key} cannot be null", key=str(cause.full_key),
                         fix=f"give {cause.full_key} a value")


def deleted_key(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``~trainer.epochs``: "DictConfig in struct mode does not support deletion"."""
    cause = _keyed(ex)
    if cause is None or "does not support deletion" not in _text(cause):
        return None
    return TrainrunError(f"~{cause.full_key} removes a key that every run reads", key=str(cause.full_key),
                         fix=f"give it a value instead ({cause.full_key}=...; train --help shows its default)")


def not_a_list(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """``data.image_shape=5``: "Invalid value assigned: int is not a ListConfig, list or tuple"."""
    cause = _keyed(ex)
    if cause is None or "is not a ListConfig" not in _text(cause):
        return None
    key = str(cause.full_key)
    given = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith(f"{key}=")), "...")
    return TrainrunError(f"{key} must be a list", key=key, fix=f"write it in brackets, e.g. {key}=[{given}]")


def other_keyed(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """Any other OmegaConf error that names its key: the key and OmegaConf's first line."""
    cause = _keyed(ex)
    return TrainrunError(f"{cause.full_key}: {_text(cause)}", key=str(cause.full_key)) if cause else None


def other_hydra(ex: BaseException, argv: Sequence[str]) -> TrainrunError | None:
    """Any other Hydra or OmegaConf error: its first line (and its cause's)."""
    if not isinstance(ex, HydraException | OmegaConfBaseException):
        return None
    lines = [first_line(str(ex))]
    if ex.__cause__ is not None and first_line(str(ex.__cause__)):
        lines.append(first_line(str(ex.__cause__)))
    return TrainrunError("; ".join(lines))


# In order: the specific ones first, the fallbacks last.
REWORDINGS: tuple[Reword, ...] = (
    unknown_option, unknown_list_option, missing_config, unreadable_override, unknown_key, wrong_type, not_a_bool,
    invalid_choice, null_not_allowed, deleted_key, not_a_list, other_keyed, key_already_there,
    preset_key_missing, group_set_to_null, unimportable_hydra_target, other_hydra,
)


def composition_error(ex: BaseException, argv: Sequence[str] = ()) -> TrainrunError | None:
    """A short :class:`TrainrunError` for a composition error (None if ``ex`` is not one);
    ``argv``: the command line's overrides."""
    for reword in REWORDINGS:
        err = reword(ex, argv)
        if err is not None:
            return err
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
    return [f"{section}={name}" for name, cls in GROUP_SCHEMAS.get(section, {}).items()
            if key in {f.name for f in dataclasses.fields(cls)}]
