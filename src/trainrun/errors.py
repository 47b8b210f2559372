"""The one exception type trainrun raises for problems a user can fix, and the exit statuses.

``cli.main`` catches it, prints ``message`` (plus the key and the fix) without a traceback and
exits with ``exit_code``: 2 for a wrong config or input (found before training), 1 for a
failure during training. ``HYDRA_FULL_ERROR=1`` shows the traceback as well.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import site
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

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
    """``Type: first line of the message`` (what a traceback ends with, without the traceback).
    A sentence broken over lines is kept whole (Hydra's "is blocklisted because it allows /
    arbitrary code execution"), and a first line ending in ":" gets the line after it."""
    if isinstance(err, SystemExit):
        return f"SystemExit: the code called sys.exit({err.code!r})"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    rest = lines[1:]
    while rest and len(text) < 300 and not text.endswith((".", ":", "!", "?", ")", "]", "'", '"')):
        text = f"{text} {rest.pop(0)}"  # a sentence wrapped over lines
    end = re.search(r"[.!?] (?=[A-Z])", text)
    if end and len(text) > 160:  # a long paragraph: its first sentence
        text = text[: end.start() + 1]
    if text.endswith(":") and rest:  # "Error(s) in loading state_dict for MLP:" + the first one
        text = f"{text} {rest[0]}"
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


def failing_line(err: BaseException) -> str:
    """The source line that raised ``err`` (its innermost frame), lower-cased; "" if unknown."""
    frames = traceback.extract_tb(err.__traceback__)
    return (frames[-1].line or "").lower() if frames else ""


def named_key(err: BaseException, key: str, section: Mapping[str, Any] | None) -> str:
    """The key of ``section`` (under ``key``'s prefix) that the error names: by name in its text
    (``Invalid beta parameter`` -> ``optim.betas``), by value (``No such file: 'x.csv'`` ->
    ``data.path``), or else by name in the line of code that raised it (torch's
    ``if not 0.0 <= betas[0] < 1.0`` raising IndexError for ``optim.betas=[0.9]``); ``key``
    itself when none is named."""
    if not section:
        return key
    return (_key_in(str(err).lower(), key, section, by_value=True)
            or _key_in(failing_line(err), key, section, by_value=False) or key)


def _key_in(text: str, key: str, section: Mapping[str, Any], *, by_value: bool) -> str | None:
    """The key of ``section`` whose name (or value) ``text`` mentions first (the longest word
    there); None when it mentions none."""
    prefix = key.partition(".")[0]
    best, best_at = None, (len(text) + 1, 0)
    for name in section:
        name = str(name)
        if name.startswith("_"):
            continue
        try:
            value = section[name]
        except Exception:  # a missing (``???``) or broken value: named by its key alone
            value = None
        words = {name.lower(), name.lower().replace("_", " "), *KEY_ALIASES.get(name, ())}
        if len(name) > 3 and name.endswith("s"):
            words.add(name[:-1].lower())
        if by_value and isinstance(value, str) and len(value) >= 3:
            words.add(value.lower())
        for word in words:
            found = re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text)
            if found and (found.start(), -len(word)) < best_at:
                best, best_at = f"{prefix}.{name}", (found.start(), -len(word))
    return best


def owner_key(err: BaseException, owners: Mapping[str, Iterable[object]]) -> str | None:
    """The key of the object whose own code raised ``err``: the innermost frame of the
    traceback whose ``self`` is one of ``owners``' objects (the optimizer's ``step``, the
    scheduler's ``get_lr``, a layer's ``forward``, the Dataset's ``__getitem__``)."""
    which = {id(obj): name for name, objects in owners.items() for obj in objects}
    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        me = frame.f_locals.get("self")
        if me is not None and id(me) in which:
            return which[id(me)]
    return None


@contextlib.contextmanager
def phase(what: str | Callable[[], str], key: str, *, section: Mapping[str, Any] | None = None,
          fix: str | Callable[[str], str] | None = None, exit_code: int = CONFIG_ERROR,
          owners: Callable[[], Mapping[str, Iterable[object]]] | None = None) -> Iterator[None]:
    """Run one phase of the run (building the optimizer, loading the data, training, ...).

    Any exception raised inside, whoever raised it (torch, numpy, the user's code), leaves as
    one :class:`TrainrunError`: what failed, the key the phase owns (narrowed to the key of
    ``section`` its text names, or to the key of the object in ``owners`` whose code raised
    it), the original error's type and first line, where in the user's code it was raised, and
    a fix (``what`` may be a function, read when it failed; ``fix`` a function of the key
    named). A :class:`TrainrunError` passes through: it already says it better. Ctrl-C passes
    through too (it is not an error), but an exit (``sys.exit``, ``exit()``) raised inside is
    one: nothing in a phase exits on purpose, and a user's code that does would otherwise end
    the run with status 0 and no result.
    """
    try:
        yield
    except TrainrunError:
        raise
    except (Exception, SystemExit) as err:
        where = raised_in(err)
        named = (owner_key(err, owners()) if owners is not None else None) or named_key(err, key, section)
        raise TrainrunError(
            f"{what() if callable(what) else what} failed: {describe(err)}"
            + (f" (raised in {where})" if where else ""),
            key=named,
            fix=fix(named) if callable(fix) else fix,
            exit_code=exit_code,
        ) from err


def unexpected(err: BaseException) -> TrainrunError:
    """An error that escaped every phase's boundary (a gap in trainrun, not a user's mistake it
    knows): still one paragraph, in train.log too, with where it was raised."""
    where = raised_in(err)
    return TrainrunError(
        f"the run failed: {describe(err)}" + (f" (raised in {where})" if where else ""),
        exit_code=TRAINING_ERROR,
        fix="HYDRA_FULL_ERROR=1 shows the traceback; if it points into trainrun, please report it",
    )


def netted(run: Callable[[Any], object], cfg: Any) -> None:
    """A command's ``run`` with train's last net: whatever no phase caught is one paragraph too."""
    try:
        run(cfg)
    except TrainrunError:
        raise
    except Exception as err:
        raise unexpected(err) from err


def exits_are_errors(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The last boundary of a command's body (``train``'s ``run_training``, ``evaluate``,
    ``predict``, ``export-model``), for exits. Inside a :func:`phase` an exit is already that
    phase's error; this catches one raised anywhere else in the command (a user's module that
    runs an unguarded ``sys.exit(main())`` when imported, a logger's ``close``): status 0
    included, it is an error, never the command's own end, which would otherwise be exit 0
    with nothing done."""

    def wrap(body: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(body)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return body(*args, **kwargs)
            except SystemExit as err:
                where = raised_in(err)
                raise TrainrunError(
                    f"{command} was stopped by an exit it did not make: {describe(err)}"
                    + (f" (raised in {where})" if where else ""),
                    exit_code=TRAINING_ERROR,
                    fix="nothing inside a run exits on purpose: remove that exit, or guard a "
                    "script's sys.exit(main()) with `if __name__ == \"__main__\":`",
                ) from err

        return guarded

    return wrap
