"""Checkpoints: what exact continuation needs, written atomically off the training thread, loaded safely.

A checkpoint holds the model (with its head), optimizer, scheduler and grad-scaler states, the
:class:`~trainrun.engine.state.TrainState` (epoch, step, position inside the epoch and that
epoch's batch losses so far, best value, history), every random stream, the composed
config, and what the training split taught the data pipeline (``data``: feature statistics,
label encoding, sample shape; :mod:`trainrun.data.fitted`), which ``predict`` applies to new
data. The shuffle order needs no state: each epoch's permutation is seeded by the seed and the
epoch number.

One process writes one file (``last.pt``); several write one folder (``last/``) of shards
through DCP, with this payload less its tensors beside them (:mod:`trainrun.engine.sharded`).
The epoch rows are kept once, in ``history.jsonl``, which the checkpoint refers to
(:mod:`trainrun.engine.history`). Writing: :mod:`trainrun.engine.writer`. Reading:
``torch.load(weights_only=True)``, which refuses pickled code, and a restricted unpickler for
DCP's metadata.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import random
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainrun.build.setup import Setup
from trainrun.config.plain import plain, schema_names
from trainrun.data.iterable import data_entries
from trainrun.engine.collectives import rank_row
from trainrun.engine.epoch_losses import EpochLosses
from trainrun.engine.history import rows_of
from trainrun.engine.publish import META, recover
from trainrun.engine.recognize import checked_config, malformed, not_an_archive, which_file
from trainrun.engine.state import TrainState
from trainrun.errors import TrainrunError
from trainrun.files import atomic_write

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


def find(folder: Path, name: str) -> Path | None:
    """The checkpoint ``name`` (``last``/``best``) in a ``checkpoints/`` folder: ``name.pt`` (one
    process) or the folder ``name/`` (several), the one written last when both are there (a run
    resumed on another number of processes writes the other kind)."""
    recover(folder)
    found = [p for p in (folder / f"{name}.pt", folder / name / META) if p.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    return newest.parent if newest.name == META else newest


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
    payload = read(Path(path) / META if Path(path).is_dir() else path, key)
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
    """Delete what a killed write left behind (``.last.pt.<random>.tmp``, a sharded save's
    ``.last.<step>.tmp/``). They are never read as checkpoints (only ``last.pt`` / ``best.pt`` /
    ``last/`` / ``best/`` / a named file are), so this is only tidying."""
    recover(folder)
    stale = sorted(folder.glob(".*.tmp*")) if folder.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
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
            config: dict[str, Any] | None = None, schemas: dict[str, str] | None = None, *,
            history: Any = None, loss_sums: torch.Tensor | None = None,
            skeleton: dict[str, Any] | None = None, rngs: list[dict[str, Any]] | None = None,
            shard_ids: list[int] | None = None) -> dict[str, Any]:
    """Everything needed to continue ``setup`` from ``state`` exactly. ``step_losses``: under
    DDP, every rank's batch losses of the unfinished epoch (``[world_size, n]``), and
    ``loss_sums`` each global batch's sum of loss x samples over the ranks (what another number
    of processes continues from); by default this process's. ``config``/``schemas``: the plain
    config and its schema names, when the caller already has them (they do not change during a
    run). ``history``: what the checkpoint holds of the epoch rows (by default all of them; the
    writer's reference to ``history.jsonl``). ``skeleton``/``rngs``: a sharded checkpoint's state
    without its tensors (:mod:`trainrun.engine.sharded`), every rank's random streams and the id
    each rank wrote with its shards."""
    if step_losses is None:
        step_losses = open_epoch_losses(state, len(setup.train_batches))
    return {
        "format": FORMAT,
        "model": setup.raw_model.state_dict() if skeleton is None else {},
        "optimizer": setup.optimizer.state_dict() if skeleton is None else skeleton["optimizer"],
        "scheduler": setup.scheduler.state_dict() if setup.scheduler is not None else None,
        "scaler": setup.scaler.state_dict() if setup.scaler.is_enabled() else None,
        # epoch, step, batch, best, best_epoch, best_step, row_start, history, stop_reason; the
        # history as the writer's reference to history.jsonl when it keeps the rows there
        "state": {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "step_losses"}
        | ({} if history is None else {"history": history}),
        "step_losses": None if step_losses is None else step_losses.detach().cpu(),
        "step_loss_sums": None if loss_sums is None else loss_sums.detach().cpu(),
        "rng": rng_state() if rngs is None else rngs[0],
        "rngs": rngs,
        # how the epoch was cut, kept on a resume with another number of processes
        "layout": {"world_size": setup.world_size, "global_batch": setup.batch_size * setup.world_size,
                   "batches": len(setup.train_batches), "strategy": setup.strategy,
                   "sharded": skeleton is not None, "shard_ids": shard_ids},
        "model_names": None if skeleton is None else skeleton["model"],
        "config": config or plain(setup.cfg),
        "schemas": schemas or schema_names(setup.cfg),
        # "data": the training split's statistics and encodings (predict); "loader": a stream's place
        **data_entries(setup.info, setup.train_batches, state.batch),
    }


def restore(setup: Setup, state: TrainState, saved: dict[str, Any], source: Path) -> None:
    """Put a checkpoint loaded from ``source`` back into ``setup`` and ``state``: on any number
    of processes (DCP reshards a sharded one; a whole one goes to every process, or into FSDP's
    shards), the open epoch's batch losses shared out again when that number changed."""
    losses = rank_row(saved["step_losses"], setup.rank, setup.world_size, saved.get("step_loss_sums"),
                      setup.train_batches.sizes)
    if losses is not None and len(losses) != len(setup.train_batches):
        raise TrainrunError(
            f"the checkpoint was saved in the middle of an epoch of {len(losses)} batches; this "
            f"run has {len(setup.train_batches)} batches per epoch (batch size or number of "
            "processes changed), so it cannot continue that epoch",
            key="resume",
            fix="resume with the batch size and trainer.devices the run started with",
        )
    if (saved.get("layout") or {}).get("sharded") or (setup.world_size > 1 and setup.strategy == "fsdp"):
        from trainrun.engine import sharded  # DCP takes seconds to import: only where it is used

        if (saved.get("layout") or {}).get("sharded"):
            sharded.load_into(setup.raw_model, setup.optimizer, source,
                              {"model": saved["model_names"], "optimizer": saved["optimizer"]},
                              ids=saved["layout"].get("shard_ids"))
        else:
            sharded.whole_into_shards(setup.raw_model, setup.optimizer, saved["model"], saved["optimizer"])
    else:
        setup.raw_model.load_state_dict(saved["model"])
        setup.optimizer.load_state_dict(saved["optimizer"])
    if setup.scheduler is not None and saved["scheduler"] is not None:
        setup.scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"] is not None:
        setup.scaler.load_state_dict(saved["scaler"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    state.history = rows_of(source, saved["state"]["history"])
    state.step_losses = EpochLosses(None if losses is None else losses.to(setup.device)[: state.batch])
    rngs = saved.get("rngs") or [saved["rng"]]  # every rank's (sharded), else rank 0's for all
    set_rng_state(rngs[setup.rank] if len(rngs) == setup.world_size else rngs[0])
