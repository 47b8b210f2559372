"""The data's identity, by content: what a run trained on, recorded in every checkpoint and in
``summary.json``, and compared wherever a run meets data again (``resume`` refuses a data set
that changed; ``evaluate`` and ``predict`` say when a file is not the one trained on).

An identity holds the source (``data._target_``), the absolute path(s) of the files read, a
content fingerprint, the feature columns in training order, the row count and the split seed.
The fingerprint is BLAKE2b (16 bytes), streamed:

- **files** (CSV, Parquet, NPZ, NPY, a folder of shards): over their bytes, 1 MB at a time, each
  file's name inside the data set included. Hashing runs at ~350 MB/s here, so the result is
  kept per file in the cache folder, keyed by the file's size, inode and modification *and*
  change times: ``ctime`` moves whenever the bytes do and cannot be set back by ``touch``, so a
  second run of a 4 GB file pays a ``stat``, not 12 s.
- **arrays** (the bundled sets, ``data=synthetic``, a user function returning ``(X, y)``): over
  the arrays' dtype, shape and bytes, as returned.
- **a user Dataset**: over its target and arguments, its length, and the samples trainrun reads
  anyway (sample 0 and the labels); reading every sample to hash it would cost what
  ``datasets.py`` avoids. A Dataset that knows its content better declares ``fingerprint`` (a
  string, or a method returning one: a version, a manifest's hash), which is used instead.
- **a stream** (``IterableDataset``): its target and arguments, and its ``fingerprint`` if declared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from trainrun.errors import TrainrunError
from trainrun.files import atomic_write

DIGEST = 16
CHUNK = 1 << 20


@dataclass
class DataIdentity:
    """What a run's data is, by content."""

    source: str  # data._target_
    fingerprint: str  # BLAKE2b hex
    of: str  # what the fingerprint covers: "files", "arrays", "dataset", "stream"
    paths: list[str] = field(default_factory=list)  # absolute
    columns: list[str] | None = None  # the feature columns, in training order
    rows: int | None = None
    split_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> DataIdentity | None:
        if not isinstance(saved, dict) or "fingerprint" not in saved:
            return None
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in saved.items() if k in names})

    def short(self) -> str:
        where = ", ".join(self.paths) if self.paths else self.source
        rows = f", {self.rows:,} rows" if self.rows is not None else ""
        return f"{where} ({self.of} {self.fingerprint[:12]}{rows})"


def differences(saved: DataIdentity, now: DataIdentity) -> list[str]:
    """What differs between two identities, one ``"what: before -> now"`` line each."""
    lines = []
    for name in ("source", "paths", "fingerprint", "columns", "rows", "split_seed"):
        a, b = getattr(saved, name), getattr(now, name)
        if name == "columns" and (a is None or b is None):
            continue
        if a != b:
            lines.append(f"{name}: {a!r} -> {b!r}" if name != "fingerprint" else
                         f"content ({saved.of}): {a[:16]}... -> {b[:16]}...")
    return lines


# --------------------------------------------------------------------------- fingerprints


def cache_dir() -> Path:
    """Where arrays trainrun derived once are kept: ``$TRAINRUN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/trainrun``, else ``~/.cache/trainrun``."""
    if os.environ.get("TRAINRUN_CACHE_DIR"):
        return Path(os.environ["TRAINRUN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainrun"



def _memo_file(path: Path, cache: Path) -> Path:
    return cache / "fingerprints" / (hashlib.blake2b(str(path).encode(), digest_size=DIGEST).hexdigest() + ".json")


def file_digest(path: Path, cache: Path | None = None) -> str:
    """BLAKE2b of one file's bytes; remembered in ``cache`` by the file's stat (see the module)."""
    stat = path.stat()
    key = [stat.st_size, stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_ctime_ns]
    memo = _memo_file(path, cache) if cache is not None else None
    if memo is not None:
        try:
            kept = json.loads(memo.read_text())
            if kept.get("path") == str(path) and kept.get("stat") == key:
                return str(kept["digest"])
        except (OSError, ValueError, AttributeError):
            pass
    digest = hashlib.blake2b(digest_size=DIGEST)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    text = digest.hexdigest()
    if memo is not None:
        with contextlib.suppress(OSError):  # a read-only cache: hashed again next time
            atomic_write(memo, lambda f: f.write(json.dumps({"path": str(path), "stat": key, "digest": text}).encode()))
    return text


def files_fingerprint(files: Sequence[Path], root: Path | None = None, cache: Path | None = None) -> str:
    """One fingerprint over several files (a folder of shards): each file's name relative to
    ``root`` and its digest, in order."""
    digest = hashlib.blake2b(digest_size=DIGEST)
    for file in files:
        name = str(file.relative_to(root)) if root is not None else file.name
        digest.update(name.encode() + b"\0" + file_digest(file, cache).encode())
    return digest.hexdigest()


def arrays_fingerprint(arrays: Iterable[Any]) -> str:
    """BLAKE2b over arrays' dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=DIGEST)
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        a = np.asarray(array.numpy() if hasattr(array, "numpy") else array)
        if a.dtype.kind in "OUT":  # text labels
            digest.update(json.dumps([str(v) for v in a.reshape(-1).tolist()]).encode())
        else:
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


def declared_fingerprint(obj: object) -> str | None:
    """A Dataset's own ``fingerprint`` (a string, or a method returning one)."""
    value = getattr(obj, "fingerprint", None)
    if callable(value):
        value = value()
    return None if value is None else str(value)


def text_fingerprint(*parts: object) -> str:
    return hashlib.blake2b(json.dumps([str(p) for p in parts]).encode(), digest_size=DIGEST).hexdigest()


# --------------------------------------------------------------------------- files of a config


def data_files(node: object, key: str = "data.path") -> tuple[list[Path], Path | None]:
    """The files a path names (a file, a folder of shards, or a glob), absolute and sorted, and
    the folder their names are relative to."""
    text = str(node)
    if any(c in text for c in "*?["):
        base = Path(text).expanduser()
        parent = base.parent if base.parent.is_absolute() else (Path.cwd() / base.parent)
        found = sorted(p.resolve() for p in parent.glob(base.name) if p.is_file())
        if not found:
            raise TrainrunError(f"{key}={text!r} matches no file (looked in {parent})", key=key,
                                fix="give a file, a folder of shards or a pattern that matches them")
        return found, parent.resolve()
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return found, path
    return [path], None


def file_identity(source: str, paths: Sequence[str], cache: Path | None, *, columns: list[str] | None,
                  rows: int | None, split_seed: int) -> DataIdentity:
    """The identity of data read from files (each path: a file, folder or glob)."""
    everything: list[Path] = []
    digests = []
    for i, given in enumerate(paths):
        files, root = data_files(given, "data.path" if i == 0 else "data.target_path")
        everything += files
        digests.append(files_fingerprint(files, root, cache))
    fingerprint = digests[0] if len(digests) == 1 else text_fingerprint(*digests)
    shown = [str(Path(p).expanduser().resolve()) if not any(c in str(p) for c in "*?[")
             else str(Path(p).expanduser().absolute()) for p in paths]
    return DataIdentity(source=source, fingerprint=fingerprint, of="files", paths=shown, columns=columns,
                        rows=rows, split_seed=split_seed)


def absolute(path: str) -> str:
    """``path`` as an absolute path text (a glob keeps its pattern)."""
    return str(Path(path).expanduser().absolute()) if any(c in path for c in "*?[") else \
        str(Path(path).expanduser().resolve())


# The built-in sources that read files, and the keys naming them.
FILE_SOURCES = {"trainrun.data.sources.read_csv": ("path",), "trainrun.data.sources.read_parquet": ("path",),
                "trainrun.data.sources.read_npz": ("path",), "trainrun.data.sources.read_npy": ("path", "target_path")}


def identify(source: str, options: dict[str, Any], returned: object, *, columns: list[str] | None,
             rows: int | None, split_seed: int, cache: Path | None) -> DataIdentity:
    """The identity of what ``data._target_=source`` (called with ``options``) returned."""
    keys = FILE_SOURCES.get(source)
    if keys is not None:
        paths = [str(options[k]) for k in keys if options.get(k)]
        return file_identity(source, paths, cache, columns=columns, rows=rows, split_seed=split_seed)
    # a user source: the files its path-like keys name are recorded (absolute), not hashed
    named = [absolute(str(v)) for k, v in sorted(options.items())
             if (k == "path" or k.endswith(("_path", "_dir", "root"))) and isinstance(v, str) and v
             and Path(v).expanduser().exists()]
    if isinstance(returned, tuple | list) and len(returned) == 2:
        return DataIdentity(source=source, fingerprint=arrays_fingerprint(returned), of="arrays", paths=named,
                            columns=columns, rows=rows, split_seed=split_seed)
    declared = declared_fingerprint(returned)
    held = getattr(returned, "targets", None)
    is_stream = not hasattr(returned, "__len__")
    length = None if is_stream else len(returned)  # type: ignore[arg-type]
    parts = [source, json.dumps(options, sort_keys=True, default=str), length, declared,
             arrays_fingerprint([held]) if held is not None and declared is None else None]
    fingerprint = text_fingerprint(source, declared) if declared else text_fingerprint(*parts)
    return DataIdentity(source=source, fingerprint=fingerprint,
                        of="declared fingerprint" if declared else ("stream" if is_stream else "dataset"),
                        paths=named, columns=columns, rows=rows if not is_stream else None, split_seed=split_seed)


def same_data(saved: dict[str, Any] | None, info: object, *, allow: bool, path: Path) -> list[str]:
    """``resume``: the checkpoint's data identity against the data built now. A change is refused
    (the split and the statistics would differ from the run's first part without a word) unless
    ``allow`` (``resume_changed_data=true``); returns what differs. A checkpoint older than
    identities has none to compare."""
    before = DataIdentity.from_dict((saved or {}).get("identity"))
    now = getattr(info, "identity", None)
    if before is None or now is None:
        return []
    lines = differences(before, now)
    if lines and not allow:
        raise TrainrunError(
            f"the data changed since the checkpoint {str(path)!r} was written:\n    " + "\n    ".join(lines)
            + "\n  resuming would draw another split and other standardization statistics than the run's first "
            "part used, so its validation samples may have been trained on",
            key="resume",
            fix="start a new run on this data (another hydra.run.dir, without resume), or resume with the data "
            "the run started on; resume_changed_data=true continues on this data knowingly (split and statistics "
            "are then this data's)",
        )
    return lines


def training_columns(given: Sequence[str] | None, trained: Sequence[str]) -> list[str]:
    """The feature columns new data is read with: always the training's, in the training's order
    (a model takes its inputs by position; a file or a ``data.features`` list in another order
    must give the same predictions). ``data.features`` naming other columns is refused."""
    if given is None or list(given) == list(trained):
        return list(trained)
    if sorted(map(str, given)) != sorted(trained):
        missing = [c for c in trained if c not in given]
        extra = [c for c in given if c not in trained]
        raise TrainrunError(
            f"data.features={list(given)} is not the model's columns {list(trained)}"
            + (f" (missing {missing})" if missing else "") + (f" (not trained on {extra})" if extra else ""),
            key="data.features",
            fix="leave data.features out: the columns the model was trained on are picked by name, in any order",
        )
    return list(trained)


def with_stored_paths(options: DictConfig, identity: DataIdentity | None) -> list[str]:
    """The run's own data read again (``evaluate run=<run>``): its file keys set to the absolute
    paths recorded at training, so another working folder reads the same file, not a relative
    path resolved elsewhere. Returns the keys changed."""
    keys = FILE_SOURCES.get(str(options.get("_target_"))) if identity is not None else None
    changed = []
    for key, path in zip(keys or (), identity.paths if identity is not None else (), strict=False):
        if options.get(key) and str(options[key]) != path:
            options[key] = path
            changed.append(key)
    return changed
