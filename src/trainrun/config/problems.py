"""A value that cannot work (:class:`Problem`), and several of them as one error."""

from __future__ import annotations

from dataclasses import dataclass

from trainrun.errors import TrainrunError


@dataclass(frozen=True)
class Problem:
    """One value that cannot work: what is wrong, the key, and its fix."""

    key: str
    message: str
    fix: str


def as_error(problems: list[Problem]) -> TrainrunError:
    """One problem: its own paragraph. Several: one line each, with its fix, under one heading."""
    if len(problems) == 1:
        only = problems[0]
        return TrainrunError(only.message, key=only.key, fix=only.fix)
    lines = [f"{len(problems)} values cannot work:"]
    lines += [f"  - {p.message} (fix: {p.fix})" for p in problems]
    return TrainrunError("\n".join(lines), key=", ".join(dict.fromkeys(p.key for p in problems)),
                         fix="change each value as its line says, then run the same command again")
