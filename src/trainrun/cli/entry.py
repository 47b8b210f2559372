"""What every console script does first, before Hydra: the process's edges.

* **The console may go away** (``train ... | head -1``): ``sys.stdout`` and ``sys.stderr`` are
  guarded (:func:`trainrun.report.echo.guard_console`), so a closed pipe ends the output
  quietly instead of printing a logging traceback per line.
* **The working folder may be gone** (deleted, or moved, after the shell entered it): every
  relative path (``data.path``, ``outputs/``) and the user's own modules are looked up from it,
  so the command stops with one paragraph instead of a traceback from wherever ``os.getcwd()``
  is first called.
* **A launcher or sweeper without ``-m``** (``hydra/launcher=slurm``): Hydra ignores both
  outside a multirun and runs the one job in this process, on a login node; refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from trainrun.errors import CONFIG_ERROR, TrainrunError
from trainrun.report.echo import guard_console


def start() -> None:
    """Guard the console, then check the working folder (exit 2 with a paragraph if gone)."""
    guard_console()
    try:
        os.getcwd()
    except OSError as err:  # FileNotFoundError: deleted; PermissionError: no longer ours
        shell = os.environ.get("PWD")
        where = f" ({shell})" if shell else ""
        print(f"\nError: the working folder{where} is not there any more ({type(err).__name__}: "
              f"{err.strerror}): it was deleted or moved after this shell entered it, and every relative "
              "path (data.path, outputs/) and your own modules are found from it\n"
              "  key: the working folder\n"
              "  fix: cd into an existing folder (cd ~, or your project's folder) and run the command again",
              file=sys.stderr)
        sys.exit(CONFIG_ERROR)


def check_multirun_plugins(choices: Mapping[str, str | None], *, multirun: bool) -> None:
    """``hydra/launcher`` and ``hydra/sweeper`` act only on a multirun: chosen without ``-m`` they
    are ignored, silently, by Hydra."""
    for group in ("hydra/launcher", "hydra/sweeper"):
        choice = choices.get(group)
        if choice not in (None, "basic") and not multirun:
            raise TrainrunError(
                f"{group}={choice} acts only on a multirun: without -m Hydra ignores it and trains this "
                "one job right here, in this process (on a login node, not on the cluster)",
                key=group, fix=f"add -m: train -m {group}={choice} ... (a single job is a sweep of one)")
