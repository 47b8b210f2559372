"""Writing checkpoints during a run, off the training thread: :class:`CheckpointWriter`.

One process: the payload is serialized to memory on the training thread (a consistent snapshot
of that moment), then written, fsynced and renamed into place on a background thread (through
``files.BackgroundWrites``), so training goes on meanwhile. Serializing on the background thread
instead was measured slower: ``torch.save`` is Python work (one ``persistent_id`` call per
pickled object) that holds the GIL, so the training thread waited for it anyway, and more
(docs/performance.md).

Several processes: every process hands its state to ``dcp.async_save`` (which copies it to CPU
memory, then writes on its own thread), and rank 0 publishes the folder once every shard is on
disk (:mod:`trainrun.engine.sharded`).

Both: the epoch rows since the last save are appended to ``history.jsonl`` before the
checkpoint that counts them; a save first waits for the one before (at most one snapshot waits
in memory), and :meth:`CheckpointWriter.close` for the last; a write that failed (disk full,
folder gone) is reported then, with the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainrun.build.setup import Setup
from trainrun.config.plain import plain, schema_names
from trainrun.engine import checkpoint
from trainrun.engine.collectives import all_reduce_sum, gather_objects, gather_rows
from trainrun.engine.history import HISTORY, HistoryStore, append
from trainrun.engine.state import TrainState
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import LAST, BackgroundWrites, WriteFailed, atomic_write


class CheckpointWriter:
    """Writes ``last.pt`` / ``best.pt`` (one process) or ``last/`` / ``best/`` (several) into
    ``folder``. Every rank calls :meth:`save` (a collective with several processes); rank 0
    alone writes files, except the shards, which each process writes. ``seconds``: what
    checkpoints cost the training thread."""

    def __init__(self, setup: Setup, folder: Path, enabled: bool = True) -> None:
        self.setup, self.folder = setup, folder
        self.enabled = enabled
        self.writes = setup.rank == 0 and enabled
        self.sharded = setup.world_size > 1
        self.seconds = 0.0
        self.saved: list[Callable[[list[Path]], None]] = []  # told the paths once on disk (on_checkpoint)
        self._config = plain(setup.cfg)
        self._schemas = schema_names(setup.cfg)
        self._history = HistoryStore(folder / HISTORY)
        self._history_started = False  # on the background thread: the first write replaces the file
        self._background = BackgroundWrites("trainrun-checkpoints", self._write)
        self._saving: Any = None  # the sharded save in flight (sharded.AsyncSave)
        self._group: Any = None
        self._count = 0
        if self.writes:
            checkpoint.remove_partial_writes(folder)

    def _write(self, path: Path, data: bytes) -> None:
        if path.name != HISTORY:  # checkpoint.write_file looked up at each write: tests/killpoints.py hooks it
            checkpoint.write_file(path, data)
            shutil.rmtree(path.with_suffix(""), ignore_errors=True)  # a sharded one of the same name: older
        elif self._history_started:
            append(path, data)
        else:
            atomic_write(path, lambda f: f.write(data))
            self._history_started = True

    def save(self, state: TrainState, *names: str) -> None:
        """Snapshot ``state`` now and write it to each of ``names`` (default ``last.pt``)."""
        started = time.perf_counter()
        setup = self.setup
        open_losses = checkpoint.open_epoch_losses(state, len(setup.train_batches))
        losses = gather_rows(open_losses, setup.world_size)  # a collective under DDP
        sums = None
        if open_losses is not None and setup.world_size > 1:  # each global batch's loss x samples
            sums = all_reduce_sum(open_losses * setup.train_batches.sizes, setup.world_size)
        paths: list[Path] = []
        if self.sharded and self.enabled:
            paths = self._save_shards(state, losses, sums, [Path(n).stem for n in names or (LAST,)])
        elif self.writes:
            self._wait(self._background.wait)
            history, rows, whole = self._history.reference(state.history)
            data = checkpoint.serialize(checkpoint.payload(  # the snapshot
                setup, state, losses, self._config, self._schemas, history=history, loss_sums=sums))
            if rows or whole:  # the rows first, then the checkpoint that counts them
                self._background.put(self.folder / HISTORY, rows)
            paths = [self.folder / name for name in names or (LAST,)]
            self._background.put(paths, data)  # best + last: once
        if self.writes and self.saved:  # a listener reads the files: they are on disk first
            self._wait_all()
        self.seconds += time.perf_counter() - started
        if self.writes:
            for listener in self.saved:
                listener(paths)

    def _save_shards(self, state: TrainState, losses: torch.Tensor | None, sums: torch.Tensor | None,
                     names: list[str]) -> list[Path]:
        """Start this process's part of a sharded save; the folders it will be published as."""
        from trainrun.engine.sharded import AsyncSave, split, state_of, with_shard_id  # DCP: seconds to import

        setup = self.setup
        shard_id = int.from_bytes(os.urandom(8), "little", signed=True)  # ties this save's files together
        gathered = gather_objects((checkpoint.rng_state(), shard_id), setup.world_size)
        rngs, ids = [g[0] for g in gathered], [g[1] for g in gathered]
        if self._group is None:  # DCP's collectives run on its thread: a process group of their own
            self._group = dist.new_group(backend="gloo")
        self.wait()
        tensors, skeleton = split(state_of(setup.raw_model, setup.optimizer))
        tmp = self.folder / f".{names[0]}.{state.step}.{self._count}.tmp"
        self._count += 1
        self._saving = AsyncSave(with_shard_id(tensors, setup.rank, shard_id), tmp, self._group)
        if self.writes:
            history, rows, _ = self._history.reference(state.history)
            meta = checkpoint.serialize(checkpoint.payload(
                setup, state, losses, self._config, self._schemas, history=history, loss_sums=sums,
                skeleton=skeleton, rngs=rngs, shard_ids=ids))

            def write(path: Path, data: bytes) -> None:
                self._write(self.folder / HISTORY, rows)
                checkpoint.write_file(path, data)

            self._saving.publish_when_done(meta, [self.folder / n for n in names], write)
        return [self.folder / n for n in names]

    def wait(self) -> None:
        """Block until every handed-over write is on disk; raise if one failed."""
        self._timed(self._wait_all)

    def _wait_all(self) -> None:
        self._wait(self._background.wait)
        saving, self._saving = self._saving, None
        if saving is not None:
            self._wait(saving.wait)

    def close(self) -> None:
        """Wait for the last write and stop the background thread; raise if a write failed."""
        self._timed(self._wait_all)
        self._timed(self._background.close)

    def _timed(self, wait: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            wait()
        finally:
            self.seconds += time.perf_counter() - started

    @staticmethod
    def _wait(wait: Callable[[], None]) -> None:
        try:
            wait()
        except WriteFailed as failed:
            raise _write_error(failed.path, failed.error) from failed.error
        except OSError as err:
            raise _write_error(Path(err.filename or "checkpoints"), err) from err

    def close_quietly(self) -> None:
        """:meth:`close` while another error ends the run: that error is the one to report."""
        with contextlib.suppress(TrainrunError):
            self.close()


def _write_error(path: Path, error: BaseException) -> TrainrunError:
    return TrainrunError(
        f"could not write the checkpoint {str(path)!r}: {type(error).__name__}: {error}; the checkpoint "
        "written before it (if any) is intact",
        key="hydra.run.dir",
        fix="free disk space or make the run folder writable, then resume=auto",
        exit_code=TRAINING_ERROR,
    )
