"""Sharded checkpoints, for runs on several processes: a folder (``checkpoints/last/``) written
by every process through ``torch.distributed.checkpoint`` (DCP), asynchronously, published whole.

* **What.** The model and optimizer state as ``get_state_dict`` gives it (DDP: whole tensors,
  written once by DCP's deduplication; FSDP: each process its shards), by name, so a run on
  another number of processes (or the other strategy) loads it: DCP reshards on load. Only
  tensors go to DCP; everything else (the optimizer's hyperparameters, the run's state, the
  random streams of every rank, the config) goes to ``trainrun.pt`` beside the shards, written by
  ``torch.save`` and read with ``weights_only=True``.
* **When.** ``dcp.async_save`` copies the state to CPU memory on the training thread (the
  snapshot, what training pays) and writes on a thread of its own, over a gloo process group of
  its own (its collectives must not interleave with training's). The next save and the end of
  the run wait for it.
* **Whole or not at all.** The shards go to ``.last.<step>.tmp/``; once every process is done
  (DCP's coordinator wrote ``.metadata``), rank 0 adds ``trainrun.pt`` and renames the folder
  over ``last/`` (the old one first moves to ``.last.old``, removed after). A kill at any moment
  leaves the previous checkpoint or the new one whole; :func:`recover` puts back a previous
  one caught between the two renames.
* **One checkpoint's files.** Nothing in DCP ties a shard file to the ``.metadata`` beside it:
  a ``__1_0.distcp`` copied in from another run (or an older save) of the same model loads, and
  the run goes on with mixed weights, exit 0. So each process writes a random id of its own
  with its shards (:data:`SHARD_ID`), ``trainrun.pt`` records every process's id, and a load
  checks each id it reads back; every file ``.metadata`` names must also be there, whole
  (:func:`check_files`), before DCP reads it.
* **Trust.** DCP reads its ``.metadata`` with plain ``pickle`` and non-tensor entries with
  ``torch.load(weights_only=False)``: a hostile folder would run code. :class:`SafeReader` reads
  ``.metadata`` with an unpickler that builds only DCP's metadata classes, and refuses entries
  that are not tensors and file names that leave the folder.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.nn import Module

from trainrun.engine.publish import META, linked_copy, meta_identity, publish
from trainrun.errors import TrainrunError

TENSOR = "<dcp>"  # in trainrun.pt's copy of the state: this leaf's tensor is in the shards
SHARD_ID = "trainrun/shard_id"  # + "/<rank>": that process's id, in the file it wrote

# What DCP's .metadata pickle may build: its own metadata classes, torch's sizes, dtypes and
# layouts, and the path it records.
_ALLOWED = {("torch.distributed.checkpoint.metadata", n) for n in (
    "Metadata", "TensorStorageMetadata", "ChunkStorageMetadata", "TensorProperties", "BytesStorageMetadata",
    "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
    ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


class SafeReader(FileSystemReader):
    """DCP's file reader, reading ``.metadata`` with :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        with open(Path(self.path) / ".metadata", "rb") as f:
            meta = _MetadataUnpickler(f).load()
        if not isinstance(meta, dcp_metadata.Metadata):
            raise pickle.UnpicklingError("its .metadata is not DCP's")
        if any(not isinstance(m, dcp_metadata.TensorStorageMetadata) for m in meta.state_dict_metadata.values()):
            raise pickle.UnpicklingError("it holds entries that are not tensors")
        files = {getattr(info, "relative_path", "") for info in (meta.storage_data or {}).values()}
        if any(not name or Path(name).name != name for name in files):
            raise pickle.UnpicklingError("it names files outside its folder")
        storage = meta.storage_meta or dcp_metadata.StorageMeta()
        storage.load_id = self.load_id
        meta.storage_meta = storage
        return meta


# --------------------------------------------------------------------------- the state


def split(tree: Any, path: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """The tensors of a nested dict by path (``model/0.weight``), and the dict with each of
    them replaced by :data:`TENSOR` (what ``trainrun.pt`` keeps)."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}, TENSOR
    if not isinstance(tree, dict):
        return {}, tree
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[Any, Any] = {}
    for key, value in tree.items():
        found, rest[key] = split(value, f"{path}/{key}" if path else str(key))
        tensors.update(found)
    return tensors, rest


def join(skeleton: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """The inverse of :func:`split`."""
    if isinstance(skeleton, str) and skeleton == TENSOR:
        return tensors[path]
    if not isinstance(skeleton, dict):
        return skeleton
    return {k: join(v, tensors, f"{path}/{k}" if path else str(k)) for k, v in skeleton.items()}


def state_of(model: Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def check_metadata(folder: Path, key: str) -> dcp_metadata.Metadata:
    """Read ``.metadata`` with :class:`SafeReader` before DCP does, so that a refused or broken
    one is one paragraph: inside ``dcp.load`` torch wraps the refusal in its own exceptions (a
    ``CheckpointException``, an ``AssertionError`` "metadata is None" on the other ranks)."""
    try:
        return SafeReader(folder).read_metadata()
    except pickle.UnpicklingError as err:
        raise TrainrunError(f"refusing to load {str(folder)!r}: {err}", key=key,
                            fix="use a checkpoint folder trainrun wrote; trainrun never runs code stored in one") \
            from None
    except Exception as err:
        raise TrainrunError(f"cannot read the checkpoint folder {str(folder)!r}: its .metadata: "
                            f"{type(err).__name__}: {err}", key=key,
                            fix="use a checkpoint folder trainrun wrote, whole") from None


def with_shard_id(tensors: dict[str, torch.Tensor], rank: int, shard_id: int) -> dict[str, torch.Tensor]:
    """This process's tensors to save, with its id (written to this process's file: no other
    process holds the key, so DCP's deduplication leaves it there)."""
    return {**tensors, f"{SHARD_ID}/{rank}": torch.tensor([shard_id], dtype=torch.int64)}


def check_files(folder: Path, meta: dcp_metadata.Metadata, key: str) -> None:
    """Every file ``.metadata`` names is in ``folder`` and long enough for what it is to hold: a
    missing or cut-short shard is one paragraph, not DCP's traceback (or a rank's abort)."""
    need: dict[str, int] = {}
    for info in (meta.storage_data or {}).values():
        name = str(info.relative_path)
        need[name] = max(need.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(need.items()):
        path = folder / name
        have = path.stat().st_size if path.is_file() else None
        if have is None or have < size:
            raise TrainrunError(
                f"the checkpoint folder {str(folder)!r} is not whole: its shard {name} is "
                + ("missing" if have is None else f"{have} bytes long, and .metadata places data up to byte {size}"),
                key=key, fix="use a whole checkpoint folder (checkpoints/best/ or an older copy); trainrun "
                "publishes a folder only once every shard is written, so something changed it since")


def check_shard_ids(folder: Path, meta: dcp_metadata.Metadata, loaded: dict[str, torch.Tensor], ids: list[int],
                    key: str) -> None:
    """Each process's id read back is the one ``trainrun.pt`` recorded for it."""
    files = {index.fqn: str(info.relative_path) for index, info in (meta.storage_data or {}).items()}
    for rank, expected in enumerate(ids):
        name = f"{SHARD_ID}/{rank}"
        if not isinstance(expected, int) or int(loaded[name].item()) != expected:  # a hostile trainrun.pt too
            raise TrainrunError(
                f"the checkpoint folder {str(folder)!r} mixes checkpoints: its shard {files.get(name, name)} "
                f"(process {rank}'s) was written by another save than its trainrun.pt and .metadata (a file "
                "copied in from another run or an older checkpoint); its weights would be used mixed",
                key=key, fix="use a checkpoint folder as trainrun wrote it, every file from the same save "
                "(checkpoints/best/ or an older copy)")


def load_into(model: Module, optimizer: torch.optim.Optimizer | None, folder: Path, skeleton: Any,
              key: str = "resume", ids: list[int] | None = None, read_as: tuple[int, int] | None = None) -> None:
    """Put a sharded checkpoint's model and optimizer state into ``model`` and ``optimizer``,
    resharded for this run's processes (every process calls it); without ``optimizer``, the
    whole model into one process's ``model`` (evaluate, predict, export, test after fit).
    ``key``: the setting that named the checkpoint, for a refusal; ``ids``: each saving
    process's id, as ``trainrun.pt`` records them (None: a checkpoint from before them);
    ``read_as``: :func:`meta_identity` when the caller read ``trainrun.pt`` (a reader of a
    folder that a running job may replace meanwhile)."""
    meta = check_metadata(folder, key)
    template = {"model": model.state_dict()} if optimizer is None else state_of(model, optimizer)
    tensors, _ = split(template)
    if ids is not None and not isinstance(ids, list):  # trainrun writes a list (a hostile file: refused below)
        ids = [None]
    for rank in range(len(ids or [])):
        tensors[f"{SHARD_ID}/{rank}"] = torch.zeros(1, dtype=torch.int64)
    alone = optimizer is None or not (dist.is_available() and dist.is_initialized())
    try:
        check_files(folder, meta, key)
        _read(folder, tensors, key, alone)
        if ids:
            check_shard_ids(folder, meta, tensors, ids, key)
    except TrainrunError:
        if read_as is not None and meta_identity(folder) != read_as:  # not damage: a newer save
            raise TrainrunError(
                f"the checkpoint folder {str(folder)!r} was replaced by a newer save while this command read it "
                "(a run is writing checkpoints into it); nothing was used",
                key=key, fix="run the command again (it reads the newest save), or give it a copy of the folder "
                "that no run writes to") from None
        raise
    state = join(skeleton if optimizer is not None else {"model": skeleton["model"]}, tensors)
    if optimizer is None:
        model.load_state_dict(state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def read_whole(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded checkpoint, whole, in this process, by path (``model/0.weight``,
    ``optimizer/state/0.weight/exp_avg``): its consolidation."""
    meta = check_metadata(folder, "run")
    check_files(folder, meta, "run")
    tensors = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.state_dict_metadata.items()
               if isinstance(m, dcp_metadata.TensorStorageMetadata)}
    _read(folder, tensors, "run", True)
    return tensors


def _read(folder: Path, tensors: dict[str, torch.Tensor], key: str, alone: bool) -> None:
    """``dcp.load`` into ``tensors``; a shard it cannot read (damaged inside) is one paragraph."""
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(tensors, storage_reader=SafeReader(folder), no_dist=alone)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrainrunError(f"cannot read the checkpoint folder {str(folder)!r}: {type(err).__name__}: {first}",
                            key=key, fix="use a checkpoint folder of this run's model, whole, as trainrun wrote "
                            "it (checkpoints/best/ or an older copy)") from None


def whole_into_shards(model: Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                      optimizer_state: dict[str, Any]) -> None:
    """A one-process checkpoint (``last.pt``: whole tensors, the optimizer's state by parameter
    index) into an FSDP model's shards: indices become names in the optimizer's parameter order."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name: dict[str, Any] = {"state": {order[int(i)]: value for i, value in optimizer_state["state"].items()},
               "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]}
                                for g in optimizer_state["param_groups"]]}
    whole = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=whole)
    set_optimizer_state_dict(model, optimizer, by_name, options=whole)


class AsyncSave:
    """One sharded save in flight: DCP's write on every process, then rank 0's publication."""

    def __init__(self, tensors: dict[str, torch.Tensor], tmp: Path, group: Any) -> None:
        self.tmp = tmp
        saving = dcp.async_save(tensors, checkpoint_id=str(tmp), process_group=group)
        self.future: Future[Any] = saving if isinstance(saving, Future) else saving.upload_completion
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def publish_when_done(self, meta: bytes, finals: list[Path], write: Any) -> None:
        """Rank 0: once every shard is written, ``trainrun.pt`` and the renames (a thread)."""

        def commit() -> None:
            try:
                self.future.result()
                write(self.tmp / META, meta)
                for i, final in enumerate(finals):
                    source = self.tmp if i == len(finals) - 1 else self.tmp.with_name(f"{self.tmp.name}{i}")
                    if source != self.tmp:
                        linked_copy(self.tmp, source)
                    publish(source, final)
                    final.with_suffix(".pt").unlink(missing_ok=True)  # a one-process one of the name: older
            except BaseException as err:  # raised by wait(), on the training thread
                self.failure = err

        self.thread = threading.Thread(target=commit, name="trainrun-checkpoint-commit", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        """Block until this save is written (and, on rank 0, published); raise if it failed."""
        try:
            self.future.result()
        except BaseException as err:
            self.failure = self.failure or err
        if self.thread is not None:
            self.thread.join()
        if self.failure is not None:
            raise self.failure
