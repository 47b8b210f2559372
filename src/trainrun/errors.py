"""The one exception type trainrun raises for problems a user can fix, and the exit statuses.

``cli.main`` catches it, prints ``message`` (plus the key and the fix) without a traceback and
exits with ``exit_code``: 2 for a wrong config or input (found before training), 1 for a
failure during training. ``HYDRA_FULL_ERROR=1`` shows the traceback as well.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.fix = fix
        self.exit_code = exit_code

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
