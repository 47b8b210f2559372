"""Where a line goes: the console and the run's log file, or the log file alone; and the config
tree. Light on purpose (no torch): Hydra's logging config names :class:`ConsoleLines`, and the
sweep callback prints the shared config once, before any job imports torch.

A sweep job (``train -m``) whose console is the sweep's keeps it to one line of its own (Hydra has printed its
overrides just before): its preflight, epoch lines and summary table go to its ``train.log``
only, marked ``extra=FILE_ONLY``; the console handler's :class:`ConsoleLines` filter drops them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# ``log.info(message, extra=FILE_ONLY)``: into the run's log file, not onto the console.
FILE_ONLY = {"console": False}


class ConsoleLines(logging.Filter):
    """The console handler's filter (``configs/hydra/job_logging/trainrun.yaml``): lets through
    every record but those marked ``FILE_ONLY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def in_sweep_job() -> bool:
    """Whether this process runs a job of ``train -m`` (Hydra's multirun mode) that shares the
    sweep's console. A submitit job (SLURM or local) writes to an output file of its own, which
    the user tails as the job's progress: it prints like a single run."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    if os.environ.get("TRAINRUN_SWEEP_JOB") == "1":  # a worker of a sweep job's trainer.devices=N
        return True
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra around (library use, tests)
        return False


def config_tree(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts, resolved where it can be, without Hydra's own node."""
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation that needs Hydra's runtime
        tree = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    assert isinstance(tree, dict)
    return tree  # type: ignore[return-value]


def print_config_tree(cfg: Any) -> None:
    """The composed config as a rich tree: the groups as branches, then the top-level values."""
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    def add(branch: Tree, node: dict[str, Any]) -> None:
        for key, value in sorted(node.items(), key=lambda kv: isinstance(kv[1], dict) and bool(kv[1])):
            if isinstance(value, dict) and value:
                add(branch.add(Text(str(key), style="bold cyan")), value)
            else:
                branch.add(Text.assemble(f"{key}: ", (repr(value) if isinstance(value, str)
                                                      else str(value), "green")))

    root = Tree(Text("config", style="bold"), guide_style="dim")
    add(root, config_tree(cfg))
    Console(file=sys.stdout, width=100, highlight=False).print(root)


def rendered(renderable: Any, width: int = 100) -> str:
    """A rich table (or any renderable) as plain text, for a log line."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())
