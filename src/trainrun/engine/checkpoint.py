"""Checkpoints: what exact continuation needs, written atomically off the training thread, loaded safely.

A checkpoint holds the model (with its head), optimizer, scheduler and grad-scaler states, the
:class:`~trainrun.engine.state.TrainState` (epoch, step, position inside the epoch and that
epoch's batch losses so far, best value, history), every random stream, the composed
config, and what the training split taught the data pipeline (``data``: feature statistics,
label encoding, sample shape; :mod:`trainrun.data.fitted`), which ``predict`` applies to new
data. The shuffle order needs no state: each epoch's permutation is seeded by the seed and the
epoch number.

Writing: the payload is serialized to memory on the training thread (a consistent snapshot of
that moment), then written, fsynced and renamed into place on a background thread
(:class:`CheckpointWriter`, through ``files.BackgroundWrites``), so training goes on meanwhile.
The next save and the end of the run wait for it. Serializing on the background thread instead
was measured slower: ``torch.save`` is Python work (one ``persistent_id`` call per pickled
object) that holds the GIL, so the training thread waited for it anyway, and more (docs/performance.md).
Reading: ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pickle
import random
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainrun.build.setup import Setup
from trainrun.config.plain import plain, schema_names
from trainrun.data.iterable import data_entries
from trainrun.engine.collectives import gather_rows, rank_row
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.engine.recognize import checked_config, malformed, not_an_archive, which_file
from trainrun.engine.state import TrainState
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import LAST, BackgroundWrites, WriteFailed, atomic_write

FORMAT = 1


# --------------------------------------------------------------------------- files


def serialize(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    """Put ``data`` at ``path`` atomically: a kill leaves the old file or the new, whole."""
    return atomic_write(path, lambda f: f.write(data))


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialize and write one checkpoint now, on this thread."""
    return write_file(Path(path), serialize(payload))


def load(path: str | Path, key: str = "resume", *, trust: bool | Collection[str] = (),
         trust_option: str | None = None, unbuilt: Collection[str] = ()) -> dict[str, Any]:
    """A checkpoint, recognized as one before anything is read from it (:func:`read`), whole
    (every part :func:`payload` writes, of the right kind), and trusted. Its stored config is
    data: every ``_target_`` in it must be trainrun's own or a torch.nn / torch.optim class
    (:func:`trainrun.targets.untrusted_targets`) unless ``trust`` covers it, or is True for a
    caller that never builds from the stored config (resume compares it only).
    ``trust_option``: the caller's config key that fills ``trust``, named in the refusal;
    ``unbuilt``: sections of the stored config the caller never builds (not checked). Checked,
    compared and built: the config resolved first (:func:`trainrun.stored.stored_config`)."""
    payload = read(path, key)
    wrong = malformed(payload)
    if wrong:
        raise TrainrunError(f"{str(path)!r} is not a whole trainrun checkpoint: {wrong}", key=key,
                            fix=which_file(key))
    payload["config"] = checked_config(payload["config"], path, key, trust, trust_option, unbuilt)
    return payload


def read(path: str | Path, key: str = "resume") -> dict[str, Any]:
    """The payload of a file trainrun wrote with :func:`save` (a whole ``torch.save`` archive with
    ``format: 1``), read with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    use = which_file(key)
    if not path.is_file():
        raise TrainrunError(f"checkpoint not found: {str(path)!r}", key=key, fix=use)
    broken = not_an_archive(path)
    if broken:
        raise TrainrunError(f"{str(path)!r} is not a trainrun checkpoint: {broken}", key=key, fix=use)
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
            f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}", key=key, fix=use
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TrainrunError(
            f"{str(path)!r} is not a trainrun checkpoint (no 'format': {FORMAT} entry)", key=key, fix=use
        )
    return payload


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete temporary files a killed write left behind (``.last.pt.<random>.tmp``). They are
    never read as checkpoints (only ``last.pt`` / ``best.pt`` / a named file are), so this is
    only tidying."""
    stale = sorted(folder.glob(".*.pt.*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# --------------------------------------------------------------------------- state


def rng_state() -> dict[str, Any]:
    """Every random stream's state. Python's 625 numbers go in one tensor: as a tuple, each was
    one more object for ``torch.save`` to pickle (a quarter of a small model's checkpoint time)."""
    np_state = np.random.get_state(legacy=True)  # numpy's stub says a dict without legacy=True
    assert isinstance(np_state, tuple)  # the global RandomState (MT19937): its legacy tuple
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]  # a tensor, or a tuple in older checkpoints
    random.setstate((version, tuple(internal.tolist() if isinstance(internal, torch.Tensor) else internal), gauss))


def open_epoch_losses(state: TrainState, batches: int) -> torch.Tensor | None:
    """The batch losses of the unfinished epoch as a checkpoint holds them: ``[batches]``, zeros
    for the batches not done yet; None at an epoch's end."""
    done = state.step_losses
    if not done:
        return None
    losses = done.stacked()
    return torch.cat([losses, losses.new_zeros(batches - len(done))])


def payload(setup: Setup, state: TrainState, step_losses: torch.Tensor | None = None,
            config: dict[str, Any] | None = None, schemas: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything needed to continue ``setup`` from ``state`` exactly. ``step_losses``: under
    DDP, every rank's batch losses of the unfinished epoch (``[world_size, n]``); by default
    this process's. ``config``/``schemas``: the plain config and its schema names, when the
    caller already has them (they do not change during a run)."""
    if step_losses is None:
        step_losses = open_epoch_losses(state, len(setup.train_batches))
    return {
        "format": FORMAT,
        "model": setup.raw_model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict() if setup.scheduler is not None else None,
        "scaler": setup.scaler.state_dict() if setup.scaler.is_enabled() else None,
        # epoch, step, batch, best, best_epoch, best_step, row_start, history, stop_reason
        "state": {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "step_losses"},
        "step_losses": None if step_losses is None else step_losses.detach().cpu(),
        "rng": rng_state(),
        "config": config or plain(setup.cfg),
        "schemas": schemas or schema_names(setup.cfg),
        # "data": the training split's statistics and encodings (predict); "loader": a stream's place
        **data_entries(setup.info, setup.train_batches, state.batch),
    }


def restore(setup: Setup, state: TrainState, saved: dict[str, Any]) -> None:
    """Put a loaded checkpoint back into ``setup`` and ``state``."""
    losses = rank_row(saved["step_losses"], setup.rank, setup.world_size)  # DDP: this rank's
    if losses is not None and len(losses) != len(setup.train_batches):
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch of {len(losses)} batches; this "
            f"run has {len(setup.train_batches)} batches per epoch (batch size or number of "
            "processes changed), so it cannot continue that epoch",
            key="resume",
            fix="resume with the batch size and trainer.devices the run started with",
        )
    setup.raw_model.load_state_dict(saved["model"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    if setup.scheduler is not None and saved["scheduler"] is not None:
        setup.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"] is not None:
        setup.scaler.load_state_dict(saved["scaler"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    state.step_losses = EpochLosses(None if losses is None else losses.to(setup.device)[: state.batch])
    set_rng_state(saved["rng"])


# --------------------------------------------------------------------------- during the run


class CheckpointWriter:
    """Writes ``last.pt`` / ``best.pt`` into ``folder`` (rank 0 only; every rank calls
    :meth:`save`, which gathers the ranks' batch losses under DDP).

    :meth:`save` serializes the state on the calling thread and hands the bytes to a background
    thread, which writes each file atomically, in order. A save first
    waits for the writes of the one before (so at most one snapshot waits in memory), and
    :meth:`close` waits for the last; a write that failed (disk full, folder gone) is reported
    then, with the previous file intact. ``seconds``: what checkpoints cost the training thread.
    """

    def __init__(self, setup: Setup, folder: Path, enabled: bool = True) -> None:
        self.setup, self.folder = setup, folder
        self.writes = setup.rank == 0 and enabled
        self.seconds = 0.0
        self.saved: list[Callable[[list[Path]], None]] = []  # told the paths once on disk (on_checkpoint)
        self._config = plain(setup.cfg)
        self._schemas = schema_names(setup.cfg)
        # write_file looked up at each write: tests/killpoints.py hooks it to kill at exact moments
        self._background = BackgroundWrites("trainrun-checkpoints", lambda path, data: write_file(path, data))
        if self.writes:
            remove_partial_writes(folder)

    def save(self, state: TrainState, *names: str) -> None:
        """Snapshot ``state`` now and write it to each of ``names`` (default ``last.pt``)."""
        started = time.perf_counter()
        losses = gather_rows(open_epoch_losses(state, len(self.setup.train_batches)),
                             self.setup.world_size)  # a collective under DDP
        if not self.writes:
            return
        self._wait(self._background.wait)
        data = serialize(payload(self.setup, state, losses, self._config, self._schemas))  # the snapshot
        paths = [self.folder / name for name in names or (LAST,)]
        self._background.put(paths, data)  # best + last: once
        if self.saved:  # a listener reads the files: they are on disk first
            self._wait(self._background.wait)
        self.seconds += time.perf_counter() - started
        for listener in self.saved:
            listener(paths)

    def wait(self) -> None:
        """Block until every handed-over write is on disk; raise if one failed."""
        self._timed(self._background.wait)

    def close(self) -> None:
        """Wait for the last write and stop the background thread; raise if a write failed."""
        self._timed(self._background.close)

    def _timed(self, wait: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            self._wait(wait)
        finally:
            self.seconds += time.perf_counter() - started

    @staticmethod
    def _wait(wait: Callable[[], None]) -> None:
        try:
            wait()
        except WriteFailed as failed:
            raise TrainrunError(
                f"could not write the checkpoint {str(failed.path)!r}: {type(failed.error).__name__}: "
                f"{failed.error}; the checkpoint written before it (if any) is intact",
                key="hydra.run.dir",
                fix="free disk space or make the run folder writable, then resume=auto",
                exit_code=TRAINING_ERROR,
            ) from failed.error

    def close_quietly(self) -> None:
        """:meth:`close` while another error ends the run: that error is the one to report."""
        with contextlib.suppress(TrainrunError):
            self.close()

