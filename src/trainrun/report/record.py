"""What produced a result: the record each run keeps in ``summary.json`` (``record``), that a
sweep's ``summary.csv`` shows as its ``commit`` column, and that ``evaluate`` and ``predict``
copy from the training run into their own reports.

* ``git``: the commit of the working folder's repository and whether tracked files differ from
  it (``dirty``), or null outside a repository (or without git). git runs with its file-system
  monitor hook off, so a repository's own config cannot run code through it;
* ``command``: the full command line, as the shell would take it again;
* ``versions``: Python and the installed versions of the packages a result depends on.

* ``data_fingerprint``: the content fingerprint of the data the run read, from the one
  implementation of the data's identity that resume and evaluate compare
  (:mod:`trainrun.data.identity`; the full identity is ``summary.json``'s ``data``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainrun.files import SUMMARY_JSON

# The distributions whose versions a result depends on (those installed are recorded).
PACKAGES = ("trainrun", "torch", "numpy", "hydra-core", "omegaconf", "scikit-learn", "torchmetrics",
            "pyarrow", "optuna", "hydra-joblib-launcher", "hydra-submitit-launcher", "submitit")
GIT_TIMEOUT_S = 5.0
# summary.json's key for config_digest: written with the run's status, so a sweep run again knows
# what the run computed even when its job was stopped right after (trainrun.cli.rerun).
DIGEST = "config_digest"
# Keys that change nothing a run computes: left out of the digest (a rerun may differ in them).
RUN_CONTROL = ("resume", "print_config", "model_summary", "plot", "tags")
TRAINER_RUN_CONTROL = ("progress", "threads")


def config_digest(cfg: DictConfig) -> str:
    """A digest of what a run computes: its resolved config without Hydra's node and without
    run-control keys."""
    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(tree, dict)
    tree = {k: v for k, v in tree.items() if k not in (*RUN_CONTROL, "hydra")}
    if isinstance(tree.get("trainer"), dict):
        tree["trainer"] = {k: v for k, v in tree["trainer"].items() if k not in TRAINER_RUN_CONTROL}
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-c", "core.fsmonitor=false", "-C", str(folder), *args],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: Path) -> dict[str, Any] | None:
    """``{"repository", "commit", "dirty"}`` of the repository holding ``folder``, or None."""
    head = _git(folder, "rev-parse", "--show-toplevel", "HEAD")
    if not head or len(head.splitlines()) != 2:
        return None  # not a repository, or one without a commit yet
    top, commit = head.splitlines()
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"repository": top, "commit": commit, "dirty": None if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[tuple[str, str], ...]:
    """The versions, read once per process (a sweep's jobs in one process share them)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(found.items())


def versions() -> dict[str, str]:
    return dict(_installed())


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def run_record(folder: Path | None = None, **extra: Any) -> dict[str, Any]:
    """This process's record: git state of ``folder`` (the working folder by default), the
    command line, host and package versions, plus ``extra`` (e.g. ``training``)."""
    folder = folder or Path.cwd()
    record: dict[str, Any] = {"git": git_state(folder), "command": command_line(), "cwd": str(folder),
                              "host": socket.gethostname(), "versions": versions()}
    record.update(extra)
    return record


def training_record(run_dir: Path) -> dict[str, Any] | None:
    """The record in a training run's ``summary.json`` (None for a run from before records)."""
    try:
        summary = json.loads((run_dir / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return None
    record = summary.get("record") if isinstance(summary, dict) else None
    return record if isinstance(record, dict) else None


def data_text(record: dict[str, Any] | None) -> str:
    """The ``data`` column of ``summary.csv``: the data's fingerprint (its first 12 characters)."""
    return str((record or {}).get("data_fingerprint") or "")[:12]


def commit_text(record: dict[str, Any] | None) -> str:
    """The ``commit`` column of ``summary.csv``: ``<sha>``, ``<sha>+dirty``, or empty."""
    git = (record or {}).get("git") or {}
    commit = str(git.get("commit") or "")
    return f"{commit}+dirty" if commit and git.get("dirty") else commit
