"""Checkpoints: what exact continuation needs, written atomically, loaded safely.

A checkpoint holds the model (with its head), optimizer, scheduler and grad-scaler states, the
:class:`~trainrun.loop.TrainState` (epoch, step, position inside the epoch and that epoch's batch
losses so far, best value, history), every random stream, and the composed config. The shuffle
order needs no state: each epoch's permutation is seeded by the seed and the epoch number.

Files are written through :func:`trainrun.atomic.atomic_write` and read with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainrun import distributed
from trainrun.atomic import atomic_write
from trainrun.errors import TrainrunError

FORMAT = 1
LAST, BEST = "last.pt", "best.pt"
# Config keys whose change refuses a resume: the weights' shapes and meaning (model, loss, data:
# its split, scaling and batches), what the saved optimizer/scheduler states belong to, how steps
# group batches and in which order they come (seed), and what "best" means for best.pt.
MUST_MATCH = ("model", "loss", "data", "optim._target_", "scheduler._target_",
              "scheduler.interval", "trainer.accumulate_grad_batches", "trainer.seed",
              "checkpoint.monitor", "checkpoint.mode")
# ...except these, which change nothing in what is computed.
NEVER_BLOCK = ("data.num_workers",)
# Hyperparameters that the optimizer/scheduler state in the checkpoint restores: a new value is
# allowed but has no effect (reported as such).
RESTORED = ("optim", "scheduler")
# Run-control keys, never compared.
IGNORED = ("resume", "print_config", "explain")


# --------------------------------------------------------------------------- files


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialize to memory first, then write atomically: a kill leaves the old file intact."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load(path: str | Path, key: str = "resume") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything else with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise TrainrunError(f"checkpoint not found: {str(path)!r}", key=key)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own first line suggests weights_only=False: the opposite of what to do here.
        why = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line.upper()),
                   "it is not a plain tensor/value pickle")
        raise TrainrunError(
            f"refusing to load {str(path)!r}: it holds pickled Python objects, not only tensors "
            f"and plain values ({why}). trainrun loads checkpoints with "
            "torch.load(weights_only=True) and never runs code stored in one.",
            key=key,
            fix="use a checkpoint written by trainrun; do not load files from a source you do "
            "not trust with weights_only=False",
        ) from None
    except Exception as err:
        raise TrainrunError(
            f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}", key=key
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TrainrunError(
            f"{str(path)!r} is not a trainrun checkpoint (no 'format': {FORMAT} entry)", key=key
        )
    return payload


def find(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint ``resume`` points to: ``auto`` (this run folder's last.pt, if any), a
    checkpoint file, or a run folder (its last.pt)."""
    if resume == "auto":
        candidate = run_dir / "checkpoints" / LAST
        return candidate if candidate.is_file() else None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / LAST
    if not path.is_file():
        raise TrainrunError(
            f"resume={resume!r}: no checkpoint at {str(path)!r}",
            key="resume",
            fix="give a checkpoint file, a run folder holding checkpoints/last.pt, or resume=auto",
        )
    return path


# --------------------------------------------------------------------------- state


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def payload(run: Any, state: Any, step_losses: torch.Tensor | None = None) -> dict[str, Any]:
    """Everything needed to continue ``run`` from ``state`` exactly. ``step_losses``: under DDP,
    every rank's batch losses of the unfinished epoch (``[world_size, n]``, from
    :func:`trainrun.distributed.gather_rows`); by default this process's."""
    if step_losses is None:
        step_losses = state.step_losses
    return {
        "format": FORMAT,
        "model": run.module.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "state": {
            "epoch": state.epoch,
            "step": state.step,
            "batch": state.batch,
            "best": state.best,
            "best_epoch": state.best_epoch,
            "history": state.history,
            "stop_reason": state.stop_reason,
        },
        "step_losses": None if step_losses is None else step_losses.detach().cpu(),
        "rng": rng_state(),
        "config": OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True),
        "schemas": schema_names(run.cfg),
    }


def schema_names(cfg: DictConfig) -> dict[str, str]:
    """The schema class of each config section (``data`` -> ``SklearnDataConfig``), so that the
    plain config stored in a checkpoint can be typed again (``evaluate`` rebuilds from it)."""
    names = {}
    for key in cfg:
        kind = OmegaConf.get_type(cfg, str(key))
        if dataclasses.is_dataclass(kind) and kind.__module__ == "trainrun.config":
            names[str(key)] = kind.__name__
    return names


def restore(run: Any, state: Any, saved: dict[str, Any]) -> None:
    """Put a loaded checkpoint back into ``run`` and ``state``."""
    losses = distributed.rank_row(saved["step_losses"], run)  # under DDP: this rank's losses
    if losses is not None and len(losses) != len(run.train_batches):
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch of {len(losses)} batches; this "
            f"run has {len(run.train_batches)} batches per epoch (batch size or number of "
            "processes changed), so it cannot continue that epoch",
            key="resume",
            fix="resume with the batch size and trainer.devices the run started with",
        )
    run.module.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    if run.scheduler is not None and saved["scheduler"] is not None:
        run.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"] is not None:
        run.scaler.load_state_dict(saved["scaler"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    state.step_losses = None if losses is None else losses.to(run.device)
    set_rng_state(saved["rng"])


def config_differences(saved: dict[str, Any], cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Keys whose values differ between a checkpoint's config and ``cfg``: (blocking, harmless)."""
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    diffs: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
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


# --------------------------------------------------------------------------- during the run


class Interrupt:
    """Turns SIGINT/SIGTERM/SIGUSR1/SIGUSR2 into a request to stop after the current step.

    A second SIGINT (Ctrl-C twice) stops at once.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self.quiet = False  # DDP ranks other than 0 set it: one message, not one per process

    def __enter__(self) -> Interrupt:
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None and not self.quiet:  # os.write: print() is unsafe in a handler
            again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step, "
                        f"saving checkpoints/last.pt{again}\n".encode())
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def stop_requested(self) -> bool:
        """Asked once per optimizer step (under DDP, ``distributed.AgreedInterrupt`` answers)."""
        return self.signum is not None


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete temporary files a killed write left behind (``.last.pt.<random>.tmp``). They are
    never read as checkpoints (only ``last.pt`` / ``best.pt`` / a named file are), so this is
    only tidying."""
    stale = sorted(folder.glob(".*.pt.*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class Checkpoints:
    """Saves ``last.pt`` / ``best.pt`` in ``folder`` as the loop asks (only on rank 0)."""

    def __init__(self, run: Any, folder: Path, interrupt: Interrupt | None = None) -> None:
        self.run, self.folder, self.interrupt = run, folder, interrupt
        self.cfg = run.cfg.checkpoint
        self.writes = run.rank == 0 and self.cfg.enabled
        self.every_n_steps = self.cfg.every_n_steps  # read once: after_step runs every step
        self.stopped = False  # True once a signal stopped the run (after saving last.pt)
        if self.writes:
            remove_partial_writes(folder)

    def save(self, state: Any, name: str = LAST) -> None:
        losses = distributed.gather_rows(state.step_losses, self.run)  # DDP: every rank calls save
        if self.writes:
            save(self.folder / name, payload(self.run, state, losses))

    def after_step(self, state: Any) -> bool:
        """After each optimizer step: True stops the run (a signal came; last.pt is saved)."""
        if self.interrupt is not None and self.interrupt.stop_requested():
            self.save(state)
            self.stopped = True
            return True
        every = self.every_n_steps
        if every and state.step % every == 0 and state.batch < len(self.run.train_batches):
            self.save(state)
        return False

    def epoch_end(self, state: Any, improved: bool) -> None:
        if improved:
            self.save(state, BEST)
        if (state.epoch % self.cfg.every_n_epochs == 0 or state.epoch == self.run.cfg.trainer.epochs
                or state.stop_reason):
            self.save(state)
