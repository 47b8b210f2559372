"""The one exception type trainrun raises for problems a user can fix, and the exit statuses.

``cli.main`` catches it, prints ``message`` (plus the key and the fix) without a traceback and
exits with ``exit_code``: 2 for a wrong config or input (found before training), 1 for a
failure during training. ``HYDRA_FULL_ERROR=1`` shows the traceback as well.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import site
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

CONFIG_ERROR = 2
TRAINING_ERROR = 1


class TrainrunError(Exception):
    """A problem the user can fix: what is wrong, which config key, and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        fix: str | None = None,
        exit_code: int = CONFIG_ERROR,
        config: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.fix = fix
        self.exit_code = exit_code
        self.config = config  # the config itself is wrong (found before anything was built)

    def __str__(self) -> str:
        lines = [self.message]
        if self.key:
            lines.append(f"  key: {self.key}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


def did_you_mean(word: str, choices: Iterable[Any], prefix: str = "") -> str:
    """`` (did you mean <prefix><nearest>?)`` when one of ``choices`` is close to ``word``."""
    near = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{near[0]}?)" if near else ""


# --------------------------------------------------------------------------- the boundary

# Words an error's text uses for a key (torch says "learning rate" for lr).
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("learning rate",), "eps": ("epsilon",), "betas": ("beta",), "T_max": ("t_max",),
    "path": ("no such file", "is a directory", "permission denied"),
}


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (what a traceback ends with, without the traceback)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for MLP:" + the first one
        text = f"{text} {lines[1]}"
    return f"{type(err).__name__}: {text}"


def raised_in(err: BaseException) -> str:
    """Where ``err`` was raised in the user's own code (``mynet.py:12, in forward``): the
    innermost frame outside Python, the installed packages and trainrun; "" when none is."""
    libraries = [os.path.dirname(os.__file__), *site.getsitepackages(), site.getusersitepackages(),
                 os.path.dirname(os.path.abspath(__file__)), sys.prefix, sys.base_prefix]
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if not frame.filename.startswith("<") and not any(path.startswith(os.path.abspath(p)) for p in libraries if p):
            return f"{os.path.relpath(path)}:{frame.lineno}, in {frame.name}"
    return ""


def named_key(err: BaseException, key: str, section: Mapping[str, Any] | None) -> str:
    """The key of ``section`` (under ``key``'s prefix) that the error's text names, by name
    (``Invalid beta parameter`` -> ``optim.betas``) or by value (``No such file: 'x.csv'`` ->
    ``data.path``); ``key`` itself when it names none."""
    if not section:
        return key
    prefix = key.partition(".")[0]
    text = str(err).lower()
    best, best_at = key, (len(text) + 1, 0)  # the key named first (the longest word there)
    for name in section:
        name = str(name)
        if name.startswith("_"):
            continue
        value = section[name]
        words = {name.lower(), name.lower().replace("_", " "), *KEY_ALIASES.get(name, ())}
        if len(name) > 3 and name.endswith("s"):
            words.add(name[:-1].lower())
        if isinstance(value, str) and len(value) >= 3:
            words.add(value.lower())
        for word in words:
            found = re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text)
            if found and (found.start(), -len(word)) < best_at:
                best, best_at = f"{prefix}.{name}", (found.start(), -len(word))
    return best


@contextlib.contextmanager
def phase(what: str | Callable[[], str], key: str, *, section: Mapping[str, Any] | None = None,
          fix: str | Callable[[str], str] | None = None, exit_code: int = CONFIG_ERROR) -> Iterator[None]:
    """Run one phase of the run (building the optimizer, loading the data, training, ...).

    Any exception raised inside, whoever raised it (torch, numpy, the user's code), leaves as
    one :class:`TrainrunError`: what failed, the key the phase owns (narrowed to the key of
    ``section`` its text names), the original error's type and first line, where in the user's
    code it was raised, and a fix (``what`` may be a function, read when it failed; ``fix`` a
    function of the key named). A
    :class:`TrainrunError` passes through: it already says it better. Ctrl-C and exits are not
    errors and pass through too.
    """
    try:
        yield
    except TrainrunError:
        raise
    except Exception as err:
        where = raised_in(err)
        named = named_key(err, key, section)
        raise TrainrunError(
            f"{what() if callable(what) else what} failed: {describe(err)}"
            + (f" (raised in {where})" if where else ""),
            key=named,
            fix=fix(named) if callable(fix) else fix,
            exit_code=exit_code,
        ) from err
