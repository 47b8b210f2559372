"""The run folder's file names, and writing files so that a crash at any moment leaves the old
content or the new, never half.

The bytes go to a temporary file in the same folder, are flushed and fsynced, and the file is
renamed over the target (atomic on POSIX); then the folder is fsynced so the rename survives.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import json
import os
import stat
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from trainrun.errors import TrainrunError

# What a run folder holds (``.hydra/`` is Hydra's).
CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
LAST_SHARDED = "last"  # checkpoints/last/: the folder several processes write (DCP) instead of last.pt


def last_checkpoints(run_dir: Path) -> tuple[Path, Path]:
    """Where a run folder's last checkpoint lies: ``last.pt`` (one process) or ``last/`` (several)."""
    return run_dir / CHECKPOINTS / LAST, run_dir / CHECKPOINTS / LAST_SHARDED


def left_a_last_checkpoint(run_dir: Path) -> bool:
    """Whether something stands where the last checkpoint goes (a link too: resume refuses it)."""
    return any(os.path.lexists(p) for p in last_checkpoints(run_dir))
SUMMARY_JSON = "summary.json"
METRICS_CSV, METRICS_JSONL = "metrics.csv", "metrics.jsonl"
PARAMS_CSV = "params.csv"
CURVES_PNG = "curves.png"
# What lr_find and the profiler write (lr_find=true|apply, debug=profile).
LR_FIND_CSV, LR_FIND_PNG = "lr_find.csv", "lr_find.png"
PROFILER = "profiler"
# What a sweep folder holds next to its job folders.
SWEEP_CSV, SWEEP_PNG = "summary.csv", "sweep.png"
# What ``evaluate``, ``predict`` and ``export`` write.
EVAL_JSON, PREDICTIONS_CSV, PREDICT_JSON = "eval.json", "predictions.csv", "predict.json"
REPORT_TXT, CONFUSION_PNG = "report.txt", "confusion.png"  # evaluate report=true: per class
EXPORT, PREPROCESSING_JSON = "export", "preprocessing.json"

# mkstemp creates files readable by the owner only; give them the mode open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def written_as(path: Path) -> tuple[int, int] | None:
    """Which write of ``path`` is there now (its inode and time; None: absent). Every write here
    is a new file renamed into place (:func:`atomic_write`), so another write changes it."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary file, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def append_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Append ``data`` (one line) to ``path`` and fsync it: one ``write`` call, so a kill leaves
    the line whole or absent, never half of it (a writer that rewrites the file whole on its
    next start, as the metrics logger does, repairs a torn one after a power cut)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike[str], value: object) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


class BackgroundWrites:
    """Atomic writes (:func:`atomic_write`, or ``write(path, data)``) on a background thread, in
    the order handed over: the caller gives the bytes, or a function that makes them there, and
    goes on. An fsync costs a few milliseconds, two per file; on the training thread, the metrics
    files of 30 short epochs cost more than a checkpoint's serialization (docs/performance.md).

    :meth:`wait` blocks until everything handed over is on disk and raises the first failure
    (:class:`WriteFailed`; that file keeps its previous content, and nothing after it is
    written); :meth:`close` waits and ends the thread. One thread serves all writes until then
    (starting one per write cost ~0.5 ms on a busy machine, more than the copy of a checkpoint).
    It is a daemon, so a run that stops with an error without closing never keeps the process
    alive; what it was handed is still written before the interpreter exits (``atexit``).
    """

    def __init__(self, name: str, write: Callable[[Path, bytes], Any] | None = None) -> None:
        self.name = name
        self._write = write or (lambda path, data: atomic_write(path, lambda f: f.write(data)))
        self._pending: collections.deque[tuple[list[Path], bytes | Callable[[], bytes], bool]] = collections.deque()
        self._changed = threading.Condition()
        self._busy = False  # a job is being written
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failure: WriteFailed | None = None

    def put(self, paths: Path | list[Path], data: bytes | Callable[[], bytes], *, append: bool = False) -> None:
        """Write ``data`` (made once, if a function) to each of ``paths``, after what came before;
        ``append``: add it to the end of the file (:func:`append_bytes`) instead."""
        with self._changed:
            if self._thread is None:
                thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                thread.start()  # kept only once started: a failed start must not make close() join it
                self._thread, self._closing = thread, False
                _OPEN.add(self)
            self._pending.append(([paths] if isinstance(paths, Path) else list(paths), data, append))
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                paths, data, append = self._pending.popleft()
                self._busy = self._failure is None  # after a failure nothing more is written
            if self._busy:
                path = paths[0]
                try:
                    made = data() if callable(data) else data
                    for path in paths:
                        (append_bytes if append else self._write)(path, made)
                except BaseException as err:  # raised by wait(), on the caller's thread
                    with self._changed:
                        self._failure = WriteFailed(path, err)
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    def wait(self) -> None:
        """Block until every handed-over write is on disk; raise :class:`WriteFailed` if one failed."""
        with self._changed:
            while self._pending or self._busy:
                self._changed.wait()
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def close(self) -> None:
        """:meth:`wait`, then end the thread (a later :meth:`put` starts another)."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._closing = True
            self._changed.notify_all()
        if thread is not None:
            thread.join()
            _OPEN.discard(self)
        self.wait()


_OPEN: weakref.WeakSet[BackgroundWrites] = weakref.WeakSet()


@atexit.register
def _finish_writes() -> None:
    """At exit, what was handed over is written (the owner did not close: an error ended it)."""
    for writes in list(_OPEN):
        with contextlib.suppress(Exception):
            writes.close()


class WriteFailed(OSError):
    """A background write failed: ``path`` keeps its previous content; ``error`` is why."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error} (writing {path})")
        self.path, self.error = path, error


# --------------------------------------------------------------------------- one writer per run folder

LOCK = ".trainrun.lock"


class RunFolderLock:
    """An OS lock (``flock``) on ``<run folder>/.trainrun.lock``, held while this process
    writes the folder: a second ``train`` on the same folder is refused instead of overwriting
    the first one's files. The OS releases it when the process dies, however it dies (SIGKILL
    included), so a stale lock never blocks a resume. The file says which command holds it
    (``train pid 123``; it stays when released, so the folder's kind is known later), and is
    opened with ``O_NOFOLLOW``: a link planted in its place is refused, never written through."""

    def __init__(self, folder: Path, command: str = "train", key: str = "hydra.run.dir") -> None:
        self.folder = folder
        self.command, self.key = command, key
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, mark: bool = True) -> None:
        """Take the lock (refused when another process holds it); ``mark``: write this command and
        pid into it now (else :meth:`mark`, once the caller decided to write the folder)."""
        if self._fd is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
        except OSError as err:
            link = (self.folder / LOCK).is_symlink()
            raise TrainrunError(
                f"{self.folder / LOCK} is a symbolic link: trainrun would write through it" if link else
                f"cannot write the run folder {str(self.folder)!r}: {type(err).__name__}: "
                f"{err.strerror or err}",
                key=self.key,
                fix="remove the link, or name another folder" if link else
                f"choose a folder this user can create and write ({self.key}=<folder>), on a "
                "disk with free space",
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TrainrunError(f"{self.folder / LOCK} is not a plain file", key=self.key,
                                fix="remove it, or name another folder")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            words = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            who = words[0] if words and words[0] != "pid" else "train"
            holder = " ".join(words[1:] if words and words[0] != "pid" else words) or "another process"
            raise TrainrunError(
                f"another {who} ({holder}) is writing into {self.folder}; two runs in one folder "
                "would overwrite each other's checkpoints and metrics",
                key=self.key,
                fix=f"wait for it to finish (or stop it), or give this run its own {self.key}",
            ) from None
        self._fd = fd
        if mark:
            self.mark()

    def mark(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{self.command} pid {os.getpid()}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
