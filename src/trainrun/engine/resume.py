"""Resuming: find the checkpoint ``resume=`` points to, refuse one written with a config that
changes what is computed, and put it back into the built run.

``resume=auto`` continues this run folder's ``last.pt`` (or starts fresh); a checkpoint file or
a run folder continues that one. Differences that change the weights' shapes or meaning (model,
loss, data, the optimizer's or scheduler's class, accumulation, seed, what "best" means) refuse
the resume with the keys named; others (more epochs) are allowed and reported, and changed
optimizer/scheduler values are reported as not applied (their saved state is restored).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainrun.build.setup import Setup
from trainrun.data.identity import same_data
from trainrun.data.iterable import restore_stream
from trainrun.data.order import global_bounds
from trainrun.engine.checkpoint import find as find_named
from trainrun.engine.checkpoint import load, restore
from trainrun.engine.publish import META
from trainrun.engine.state import TrainState
from trainrun.errors import TrainrunError
from trainrun.files import CHECKPOINTS, LAST, last_checkpoints

# Config keys whose change refuses a resume: the weights' shapes and meaning (model, loss, data:
# its split, scaling and batches), what the saved optimizer/scheduler states belong to (a plateau's
# best value is of its monitor: trainrun reads scheduler.monitor, the state does not restore it),
# how steps group batches and in which order they come (seed), and what "best" means for best.pt.
MUST_MATCH = ("model", "loss", "data", "optim._target_", "scheduler._target_",
              "scheduler.interval", "scheduler.monitor", "trainer.accumulate_grad_batches", "trainer.seed",
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
    """The checkpoint ``resume`` points to: ``auto`` (this run folder's last checkpoint, if
    any), a checkpoint file or sharded checkpoint folder, or a run folder (its last one)."""
    if resume == "auto":
        checkpoints = run_dir / CHECKPOINTS
        for candidate in last_checkpoints(run_dir):
            if candidate.is_symlink() or (candidate.suffix and os.path.lexists(candidate) and not candidate.is_file()):
                # Something is there: it is refused, never taken for "none yet" and replaced.
                what = "a symbolic link" if candidate.is_symlink() else "not a plain file"
                raise TrainrunError(
                    f"resume=auto: {str(candidate)!r} is {what}, not a checkpoint this run wrote; starting "
                    "fresh would replace it", key="resume",
                    fix="move it away and resume from the checkpoint you mean (resume=<file>), or start a "
                    "new run in a new folder")
        return find_named(checkpoints, Path(LAST).stem)  # None: none yet, a fresh start
    path = Path(resume).expanduser()
    if path.is_dir() and not (path / META).is_file():
        path = find_named(path / CHECKPOINTS, Path(LAST).stem) or path / CHECKPOINTS / LAST
    if not (path.is_file() or (path / META).is_file()):
        raise TrainrunError(
            f"resume={resume!r}: no checkpoint at {str(path)!r}",
            key="resume",
            fix="give a checkpoint file, a run folder holding checkpoints/last.pt (or last/), or resume=auto",
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
        elif prefix == "loss.class_weights." and b == "balanced" and isinstance(a, list):
            return  # the run's config holds the numbers 'balanced' gave on the same (checked) data
        elif a != b:
            diffs.append(f"{prefix[:-1]}: {a!r} -> {b!r}")

    walk(saved, now, "")
    diffs = [d for d in diffs if not under(d, IGNORED)]
    blocking = [d for d in diffs if under(d, MUST_MATCH) and not under(d, NEVER_BLOCK)]
    return blocking, [d for d in diffs if d not in blocking]


def _same_class_weights(saved: dict[str, Any], cfg: DictConfig) -> None:
    """``loss.class_weights=balanced`` on a resume passes :func:`config_differences` (the
    checkpoint holds the numbers its run used, whatever the user typed then); once built, the
    numbers ``balanced`` gives now must be those, or the loss would change in the middle of the run."""
    before, now = (saved.get("loss") or {}).get("class_weights"), cfg.loss.get("class_weights")
    if not isinstance(before, list) or now is None:
        return
    now = [float(w) for w in now]
    if len(before) == len(now) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(before, now, strict=True)):
        return
    run = "[" + ",".join(repr(float(w)) for w in before) + "]"  # as stored: the fix must pass the comparison
    raise TrainrunError(
        f"the checkpoint's run weighed its classes {run}; loss.class_weights=balanced gives "
        f"[{', '.join(f'{w:.3g}' for w in now)}] on this run's training split, so the loss would change "
        "in the middle of the run", key="loss.class_weights",
        fix=f"resume with loss.class_weights={run} (the run's own weights), or start a new run")


def under(diff: str, keys: tuple[str, ...]) -> bool:
    """Whether a ``"key: old -> new"`` line is about one of ``keys`` or a key below one."""
    return any(diff.startswith((f"{k}.", f"{k}:")) for k in keys)


@dataclass(frozen=True)
class Resumed:
    """A checkpoint found and checked before the run is built: it decides the batch size."""

    path: Path
    saved: dict[str, Any]
    batch_size: int  # per process: the checkpoint's global batch over this run's processes
    note: str | None  # the header line when that differs from data.batch_size


def open_resume(cfg: DictConfig, run_dir: Path, world_size: int) -> Resumed | None:
    """The checkpoint ``cfg.resume`` points to, loaded and compared with ``cfg``; None when
    ``resume=auto`` found none (a fresh start). Its global batch is kept: on ``world_size``
    processes each takes ``global // world_size`` samples of every global batch."""
    path = find(str(cfg.resume), run_dir)
    if path is None:
        return None
    saved = load(path, trust=True)  # compared with this config, never built from
    blocking, _ = config_differences(saved["config"], cfg)
    if blocking:
        raise TrainrunError(
            f"the checkpoint {str(path)!r} was written with a different config:\n    "
            + "\n    ".join(blocking),
            key="resume",
            fix="resume with the config the run started with, or start a new run",
        )
    layout = saved.get("layout") or {}
    losses = saved["step_losses"]
    saved_world = int(layout.get("world_size") or (losses.shape[0] if losses is not None and losses.dim() == 2 else 1))
    batch = int(saved["config"]["data"]["batch_size"])
    global_batch = int(layout.get("global_batch") or batch * saved_world)
    if global_batch % world_size:
        raise TrainrunError(
            f"the checkpoint's global batch is {global_batch} samples ({saved_world} process(es) x "
            f"{global_batch // saved_world}); {world_size} processes cannot share it equally, and another "
            "global batch would change what the run computes",
            key="trainer.devices",
            fix=f"resume with a number of processes that divides {global_batch}: trainer.devices="
            + "|".join(str(d) for d in range(1, global_batch + 1) if global_batch % d == 0 and d <= 64))
    per_process = global_batch // world_size
    note = None
    if per_process != int(cfg.data.batch_size):
        note = (f"batch: {per_process} per process x {world_size} = the checkpoint's global batch of {global_batch} "
                f"(data.batch_size={cfg.data.batch_size} was per process on {saved_world})")
    return Resumed(path, saved, per_process, note)


def resume(setup: Setup, state: TrainState, resumed: Resumed | None, say: Callable[[str], None]) -> bool:
    """Load the checkpoint :func:`open_resume` found into ``setup`` and ``state``; False when
    there was none (a fresh start)."""
    cfg = setup.cfg
    if resumed is None:
        say("resume=auto: no checkpoint in this run folder yet, starting fresh")
        return False
    path, saved = resumed.path, resumed.saved
    _, harmless = config_differences(saved["config"], cfg)
    # the data first: a changed data set explains the weights and the batches that follow from it
    changed = same_data(saved.get("data"), setup.info, allow=bool(cfg.get("resume_changed_data")), path=path)
    _same_class_weights(saved["config"], cfg)
    batches = (saved.get("layout") or {}).get("batches")
    if batches and batches != len(setup.train_batches) and not changed:  # changed data: other batches, allowed
        global_batch = setup.batch_size * setup.world_size
        fitting = [m for m in range(1, min(global_batch, 64) + 1) if global_batch % m == 0
                   and len(global_bounds(setup.info.sizes["train"], global_batch // m, 0, m)) == batches]
        raise TrainrunError(
            f"the checkpoint's epochs had {batches} global batches; on {setup.world_size} processes this run "
            f"has {len(setup.train_batches)} (an epoch's last, short global batch is kept only when it has a "
            "sample for every process), so its epochs would differ",
            key="trainer.devices",
            fix=f"resume with a number of processes that gives {batches} global batches of {global_batch}: "
            f"trainer.devices={'|'.join(map(str, fitting))}")
    planned_steps = getattr(setup.scheduler, "total_steps", None)  # OneCycleLR: fixed length
    restore(setup, state, saved, path)
    restore_stream(setup.train_batches, saved.get("loader"), state.batch, setup.world_size)  # a stream's place
    saved_steps = getattr(setup.scheduler, "total_steps", None)
    if planned_steps and saved_steps and planned_steps > saved_steps:
        epochs = saved["config"]["trainer"]["epochs"]
        why = "trainer.epochs changed" if epochs != setup.settings.epochs else \
            "the steps per epoch changed: data.batch_size, trainer.accumulate_grad_batches or data"
        raise TrainrunError(
            f"the checkpoint's {type(setup.scheduler).__name__} was built for {saved_steps} steps; "
            f"this config needs {planned_steps} ({why}), and that schedule "
            "cannot be stretched after the fact",
            key="trainer.epochs" if epochs != setup.settings.epochs else "resume",
            fix=f"resume with trainer.epochs={epochs} and the run's own batches, or start a new run",
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
