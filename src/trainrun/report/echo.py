"""Where a line goes: the console and the run's log file, or the log file alone; and the config
tree. Light on purpose (no torch): Hydra's logging config names :class:`ConsoleLines`, and the
sweep callback prints the shared config once, before any job imports torch.

A sweep job (``train -m``) whose console is the sweep's keeps it to one line of its own (Hydra has printed its
overrides just before): its preflight, epoch lines and summary table go to its ``train.log``
only, marked ``extra=FILE_ONLY``; the console handler's :class:`ConsoleLines` filter drops them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainrun.config.plain import plain

if TYPE_CHECKING:  # rich is imported when something is printed
    from rich.console import Console, RenderableType

# ``log.info(message, extra=FILE_ONLY)``: into the run's log file, not onto the console.
FILE_ONLY = {"console": False}


class ConsoleLines(logging.Filter):
    """The console handler's filter (``configs/hydra/job_logging/trainrun.yaml``): lets through
    every record but those marked ``FILE_ONLY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class RunLog(logging.FileHandler):
    """The run's log file (``train.log``; ``configs/hydra/job_logging/trainrun.yaml``), opened with
    ``O_NOFOLLOW``: a link planted in its place is an error, never a way to append to a file
    elsewhere (the run folder's owner refuses links before Hydra opens it: this holds even for
    one planted since)."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_APPEND if "a" in self.mode else os.O_TRUNC
        return open(os.open(self.baseFilename, flags, 0o666), self.mode, encoding=self.encoding, errors=self.errors)


class RankLines(logging.Filter):
    """``[rank N] `` before every line a DDP process other than rank 0 logs (a warning, an
    error), so two processes never read as one on a shared console or log."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.prefix = f"[rank {rank}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


def mark_rank(rank: int) -> None:
    """In a process of rank ``rank`` > 0: prefix its log lines with its rank, and send Python
    warnings (torch's among them) through the same log, prefixed too."""
    if rank <= 0:
        return
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RankLines) for f in handler.filters):
            handler.addFilter(RankLines(rank))


# --------------------------------------------------------------------------- a console that goes away


class _Console:
    """``sys.stdout`` / ``sys.stderr`` as trainrun's commands use them (:func:`guard_console`):
    when the reader goes away (``train ... | head -1``, a closed terminal), the failed write
    ends quietly, as in other command-line tools: the stream's file descriptor is pointed at
    ``/dev/null`` (so no later write, nor the interpreter's last flush, fails again), and
    whoever asked is told once (:func:`when_console_closes`: ``train`` stops after the step, as
    on a signal, with ``last.pt`` saved). Every other attribute is the stream's own."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            self._gone(err)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            self._gone(err)

    def _gone(self, err: OSError) -> None:
        if err.errno != errno.EPIPE:  # BrokenPipeError; a full disk is not a reader going away
            raise err
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)
        _closed.append(self._stream.fileno())
        for callback in list(_listeners):
            callback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_closed: list[int] = []  # the file descriptors whose reader went away
_listeners: list[Callable[[], None]] = []


def guard_console() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once per process: each command's entry and each
    DDP worker, before logging is configured, which takes the stream objects)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Console):
            setattr(sys, name, _Console(stream))


class ConsoleHandler(logging.StreamHandler):
    """The console handler of Hydra's job logging (``configs/hydra/job_logging/*.yaml``): a
    ``StreamHandler`` whose stream is guarded, in whichever process configures the logging (a
    joblib or submitit worker too, where no command entry ran first)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        super().__init__(stream if isinstance(stream, _Console) else _Console(stream))


@contextlib.contextmanager
def when_console_closes(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` once if the console's reader goes away while inside (at once if it
    already has)."""
    if _closed:
        callback()
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def in_sweep_job() -> bool:
    """Whether this process runs a job of ``train -m`` (Hydra's multirun mode) that shares the
    sweep's console. A submitit job (SLURM or local) writes to an output file of its own, which
    the user tails as the job's progress: it prints like a single run."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    if os.environ.get("TRAINRUN_SWEEP_JOB") == "1":  # a worker of a sweep job's trainer.devices=N
        return True
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra around (library use, tests)
        return False


def console(file: IO[str] | None = None, width: int | None = None, *, color: bool = True) -> Console:
    """The one way trainrun makes a rich console: markup and emoji off, so text that is not
    trainrun's own (a layer named ``[/bold]``, a tag ``[/baseline]``, a data path or class name
    with brackets, an error message) prints as written instead of being read as rich markup,
    which either restyles it or raises ``MarkupError`` and loses the output. trainrun's own
    styling goes through ``Text`` and ``style=`` arguments, never markup in strings."""
    from rich.console import Console

    return Console(file=file or sys.stdout, width=width, markup=False, emoji=False, highlight=False,
                   color_system="auto" if color else None)


def config_tree(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain dicts, resolved where it can be, without Hydra's own node."""
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    try:
        return plain(cfg)
    except Exception:  # an interpolation that needs Hydra's runtime
        return plain(cfg, resolve=False)


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a rich tree: the groups as branches, then the top-level values."""
    from rich.text import Text
    from rich.tree import Tree

    def add(branch: Tree, node: dict[str, Any]) -> None:
        for key, value in sorted(node.items(), key=lambda kv: isinstance(kv[1], dict) and bool(kv[1])):
            if isinstance(value, dict) and value:
                add(branch.add(Text(str(key), style="bold cyan")), value)
            else:
                branch.add(Text.assemble(f"{key}: ", (repr(value) if isinstance(value, str)
                                                      else str(value), "green")))

    root = Tree(Text("config", style="bold"), guide_style="dim")
    add(root, config_tree(cfg))
    console(sys.stdout, width=100).print(root)


def rendered(renderable: RenderableType, width: int = 100) -> str:
    """A rich table (or any renderable) as plain text, for a log line."""
    buffer = io.StringIO()
    console(buffer, width=width, color=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())
