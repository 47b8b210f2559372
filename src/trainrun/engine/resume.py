"""Resuming: find the checkpoint ``resume=`` points to, refuse one written with a config that
changes what is computed, and put it back into the built run.

``resume=auto`` continues this run folder's ``last.pt`` (or starts fresh); a checkpoint file or
a run folder continues that one. Differences that change the weights' shapes or meaning (model,
loss, data, the optimizer's or scheduler's class, accumulation, seed, what "best" means) refuse
the resume with the keys named; others (more epochs) are allowed and reported, and changed
optimizer/scheduler values are reported as not applied (their saved state is restored).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainrun.build.setup import Setup
from trainrun.data.identity import same_data
from trainrun.data.iterable import restore_stream
from trainrun.engine.checkpoint import load, restore
from trainrun.engine.state import TrainState
from trainrun.errors import TrainrunError
from trainrun.files import CHECKPOINTS, LAST

# Config keys whose change refuses a resume: the weights' shapes and meaning (model, loss, data:
# its split, scaling and batches), what the saved optimizer/scheduler states belong to, how steps
# group batches and in which order they come (seed), and what "best" means for best.pt.
MUST_MATCH = ("model", "loss", "data", "optim._target_", "scheduler._target_",
              "scheduler.interval", "trainer.accumulate_grad_batches", "trainer.seed",
              "checkpoint.monitor", "checkpoint.mode")
# ...except these, which change nothing in what is computed.
# (data.delimiter: checkpoints of CSV runs from before it existed hold none; a delimiter that
# reads the file otherwise fails to find its columns.)
# (model.output, loss.input: declarations checked against the model, computing nothing; older
# checkpoints hold none.)
NEVER_BLOCK = ("data.num_workers", "data.delimiter", "data.persistent_workers", "data.prefetch_factor",
               "data.pin_memory", "model.output", "loss.input")
# Hyperparameters that the optimizer/scheduler state in the checkpoint restores: a new value is
# allowed but has no effect (reported as such).
RESTORED = ("optim", "scheduler")
# Run-control keys, never compared.
IGNORED = ("resume", "resume_changed_data", "print_config", "model_summary", "explain")


def find(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint ``resume`` points to: ``auto`` (this run folder's last.pt, if any), a
    checkpoint file, or a run folder (its last.pt)."""
    if resume == "auto":
        candidate = run_dir / CHECKPOINTS / LAST
        if not os.path.lexists(candidate):
            return None  # none yet: a fresh start
        if candidate.is_symlink() or not candidate.is_file():
            # Something is there: it is refused, never taken for "none yet" and replaced.
            what = "a symbolic link" if candidate.is_symlink() else "not a plain file"
            raise TrainrunError(
                f"resume=auto: {str(candidate)!r} is {what}, not a checkpoint this run wrote; starting "
                "fresh would replace it", key="resume",
                fix="move it away and resume from the checkpoint you mean (resume=<file>), or start a "
                "new run in a new folder")
        return candidate
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / CHECKPOINTS / LAST
    if not path.is_file():
        raise TrainrunError(
            f"resume={resume!r}: no checkpoint at {str(path)!r}",
            key="resume",
            fix="give a checkpoint file, a run folder holding checkpoints/last.pt, or resume=auto",
        )
    return path


def config_differences(saved: dict[str, Any], cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Keys whose values differ between a checkpoint's config and ``cfg``: (blocking, harmless)."""
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    diffs: list[str] = []

    def walk(a: object, b: object, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix[:-1]}: {a!r} -> {b!r}")

    walk(saved, now, "")
    diffs = [d for d in diffs if not under(d, IGNORED)]
    blocking = [d for d in diffs if under(d, MUST_MATCH) and not under(d, NEVER_BLOCK)]
    return blocking, [d for d in diffs if d not in blocking]


def under(diff: str, keys: tuple[str, ...]) -> bool:
    """Whether a ``"key: old -> new"`` line is about one of ``keys`` or a key below one."""
    return any(diff.startswith((f"{k}.", f"{k}:")) for k in keys)


def resume(setup: Setup, state: TrainState, run_dir: Path, say: Callable[[str], None]) -> bool:
    """Load the checkpoint ``cfg.resume`` points to into ``setup`` and ``state``; False when
    ``resume=auto`` found none (a fresh start)."""
    cfg = setup.cfg
    path = find(str(cfg.resume), run_dir)
    if path is None:
        say("resume=auto: no checkpoint in this run folder yet, starting fresh")
        return False
    saved = load(path, trust=True)  # compared with this config, never built from
    blocking, harmless = config_differences(saved["config"], cfg)
    if blocking:
        raise TrainrunError(
            f"the checkpoint {str(path)!r} was written with a different config:\n    "
            + "\n    ".join(blocking),
            key="resume",
            fix="resume with the config the run started with, or start a new run",
        )
    changed = same_data(saved.get("data"), setup.info, allow=bool(cfg.get("resume_changed_data")), path=path)
    planned_steps = getattr(setup.scheduler, "total_steps", None)  # OneCycleLR: fixed length
    restore(setup, state, saved)
    restore_stream(setup.train_batches, saved.get("loader"), state.batch, setup.world_size)  # a stream's place
    saved_steps = getattr(setup.scheduler, "total_steps", None)
    if planned_steps and saved_steps and planned_steps > saved_steps:
        raise TrainrunError(
            f"the checkpoint's {type(setup.scheduler).__name__} was built for {saved_steps} steps; "
            f"this config needs {planned_steps} (trainer.epochs changed), and that schedule "
            "cannot be stretched after the fact",
            key="trainer.epochs",
            fix=f"resume with trainer.epochs={saved['config']['trainer']['epochs']}, or start a new run",
        )
    epochs = setup.settings.epochs
    if state.epoch >= epochs:
        where = f"the end of epoch {state.epoch} (all {epochs} epochs done)"
    elif state.batch:
        where = f"epoch {state.epoch + 1}, after batch {state.batch}"
    else:
        where = f"the start of epoch {state.epoch + 1}"
    say(f"resumed from {path} at {where} (step {state.step})")
    for line in changed:  # resume_changed_data=true: what differs, said once
        say(f"  data changed since the checkpoint (resume_changed_data=true): {line}")
    for diff in harmless:
        if under(diff, RESTORED):
            say(f"  config changed since the checkpoint, NOT applied (the saved "
                f"optimizer/scheduler state is restored): {diff}")
        else:
            say(f"  config changed since the checkpoint: {diff}")
    return True
