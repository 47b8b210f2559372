""":func:`run_app`, the entry point that lets Hydra's and OmegaConf's composition errors reach
trainrun, which words them as one short paragraph (:mod:`trainrun.cli.composition`).

Hydra prints its own report of an error it catches around composition and exits 1, unless
``HYDRA_FULL_ERROR=1`` (documented) tells it to re-raise. :func:`run_app` sets that variable
around Hydra's entry point so every such error comes here, and gives the task the variable as
the user set it (:func:`as_user_set`), so workers, jobs and our own messages see the user's
choice: ``HYDRA_FULL_ERROR=1 train ...`` still shows full tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from trainrun.cli.composition import composition_error, first_line
from trainrun.cli.entry import start
from trainrun.errors import CONFIG_ERROR, TrainrunError

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
        if full_errors() and isinstance(ex, TrainrunError):  # the traceback, and still our exit status
            traceback.print_exc()
            sys.exit(ex.exit_code)
        if full_errors():
            raise
        err = ex if isinstance(ex, TrainrunError) else composition_error(ex, sys.argv[1:])  # a launcher's, a sweeper's
        if err is None and isinstance(ex, OSError) and not task_started():  # Hydra making the run folder
            where = f" {ex.filename!r}" if getattr(ex, "filename", None) else ""
            err = TrainrunError(
                f"cannot write the run folder{where}: {type(ex).__name__}: {ex.strerror or ex}",
                key="hydra.run.dir",
                fix="choose a folder this user can create and write (hydra.run.dir=<folder>), "
                "on a disk with free space")
        if err is None:
            err = TrainrunError(f"{type(ex).__name__}: {first_line(str(ex))}",
                                fix="HYDRA_FULL_ERROR=1 shows the traceback")
            err.exit_code = 1 if task_started() else CONFIG_ERROR
        print(f"\nError: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    finally:
        _set(USER_VALUE)
        os.environ.pop(_USER_FULL_ERROR, None)
