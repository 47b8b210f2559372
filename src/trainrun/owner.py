"""The one owner of every folder a trainrun command writes: a run folder (``train``, a sweep
job), a sweep folder, ``predict``'s folder, the output folder of ``evaluate`` and
``export-model``.

A folder is known by what it holds, not by its name. Before a command writes anything into a
folder, :meth:`Owner.claim`:

* refuses a folder that holds symbolic links where trainrun or Hydra open files (the folder
  itself, ``.hydra/``, ``checkpoints/``, ``profiler/``; and, for an output folder inside a run, every folder
  between the two): a ``train.log``, ``.trainrun.lock`` or ``checkpoints`` planted as a link
  would have the run write to a file elsewhere. The lock is opened with ``O_NOFOLLOW`` and must
  be a plain file; every other file is written by :func:`trainrun.files.atomic_write` (a new
  file renamed into place: never through a link);
* refuses a folder that holds another run (:func:`held`): a folder where a trainrun command or a
  Hydra job wrote, with results beyond what a failed start leaves. A ``train`` may continue its
  own run (``resume=``), ``evaluate`` and ``export-model`` may replace their own results; nothing
  else may write over another command's folder;
* takes the OS lock (:class:`trainrun.files.RunFolderLock`), whose file names the command that
  holds it: a second command on the same folder is refused while the first runs, and the next
  one knows what kind of folder it is.

What Hydra writes (``.hydra/``, the job's log file) happens before the task starts: ``train`` and
``predict`` claim their folder from a Hydra callback's ``on_run_start``
(:class:`trainrun.cli.run_folder.OwnRunFolder`), which Hydra calls before it creates or writes
anything in the folder, with the folder Hydra itself will use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trainrun.errors import TrainrunError
from trainrun.files import CHECKPOINTS, EVAL_JSON, LOCK, PREPROCESSING_JSON, PROFILER, RunFolderLock

# What a command leaves in a folder before its results: a folder holding only these holds no run.
BEFORE_RESULTS = frozenset({".hydra", "train.log", "predict.log", LOCK, "multirun.yaml", ".submitit"})
# Where a symbolic link is refused: the folder's own entries and those of the folders trainrun and
# Hydra write files into.
WRITTEN_INTO = ("", ".hydra", CHECKPOINTS, PROFILER)
# Commands that may write over their own earlier results in a folder (evaluate the same checkpoint
# again); the others continue their own run (train resume=...) or need a folder of their own.
REPLACE_OWN = frozenset({"evaluate", "export-model"})
# What those write that names the checkpoint their results came from: they replace results of the
# same checkpoint only (evaluate run=B out=<A's evaluation> would lose A's).
SOURCE_RECORD = {"evaluate": EVAL_JSON, "export-model": PREPROCESSING_JSON}


def links(folder: Path, below: Path | None = None) -> list[str]:
    """The symbolic links among the folders between ``below`` and ``folder`` and in
    :data:`WRITTEN_INTO`, as paths relative to ``below`` (or ``folder``)."""
    base = below if below is not None else folder
    found = []
    if below is not None and folder != below and folder.is_relative_to(below):
        step = below
        for part in folder.relative_to(below).parts:
            step = step / part
            if step.is_symlink():
                found.append(str(step.relative_to(base)))
    for inner in WRITTEN_INTO:
        place = folder / inner if inner else folder
        if inner and place.is_symlink():
            continue  # named above, as an entry of the folder
        try:
            entries = list(os.scandir(place)) if place.is_dir() and not place.is_symlink() else []
        except OSError:
            entries = []
        found += [str((place / e.name).relative_to(base)) for e in entries if e.is_symlink()]
    return sorted(set(found))


def held(folder: Path) -> tuple[str | None, list[str]]:
    """Whether ``folder`` holds a run: ``(command, results)`` with the results it holds (empty:
    no run) and the command whose lock file it keeps (None: unknown, a run from before commands
    were recorded or a Hydra job of another program)."""
    if not folder.is_dir():
        return None, []
    names = sorted(p.name for p in folder.iterdir())
    if LOCK not in names and ".hydra" not in names and "multirun.yaml" not in names:
        return None, []  # never a command's folder: an empty folder, or one of the user's
    results = [n for n in names if n not in BEFORE_RESULTS]
    try:
        words = (folder / LOCK).read_text(errors="replace").split() if (folder / LOCK).is_file() else []
    except OSError:
        words = []
    command = words[0] if words and words[0] != "pid" else None
    return command, results


def recorded_source(folder: Path, command: str) -> str | None:
    """The checkpoint ``command``'s results in ``folder`` came from (None: not recorded)."""
    try:
        record = json.loads((folder / SOURCE_RECORD[command]).read_text())
    except (KeyError, OSError, ValueError):
        return None
    source = record.get("checkpoint") if isinstance(record, dict) else None
    return source if isinstance(source, str) else None


def enclosing(folder: Path, home: Path | None = None) -> Path | None:
    """The nearest folder above ``folder`` that a command claimed (it keeps a lock file), up to
    ``home`` (the run folder an output folder belongs in), or None."""
    for parent in folder.parents:
        if parent == home:
            return None
        if os.path.lexists(parent / LOCK):
            return parent
    return None


def _a(command: str | None) -> str:
    return f"{'an' if command[0] in 'aeiou' else 'a'} {command}" if command else "another"


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


class Owner:
    """The claim of one command on one folder (see the module's rules)."""

    def __init__(self, folder: Path, command: str, *, key: str, fix_other: str, below: Path | None = None,
                 source: Path | None = None, home: Path | None = None) -> None:
        """``key``: the setting that names the folder; ``fix_other``: what to do instead of
        writing over another run; ``below``: the folder it lies in that the user named (an
        output folder inside a run folder); ``source``: the checkpoint an output comes from (its
        command replaces only results of the same one); ``home``: the run folder it may lie in
        (another command's folder above it is refused)."""
        self.folder = Path(os.path.abspath(folder))
        self.command, self.key, self.fix_other = command, key, fix_other
        self.below = Path(os.path.abspath(below)) if below is not None else None
        self.lock = RunFolderLock(self.folder, command, key)
        self.source = str(source.resolve()) if source is not None else None
        self.home = Path(os.path.abspath(home)) if home is not None else self.below

    def check(self, *, continuing: bool = False) -> None:
        """Refuse links and another run's folder (``continuing``: this command continues the
        run the folder holds: ``train resume=...``)."""
        self.check_links()
        self.check_run(continuing=continuing)

    def check_links(self) -> None:
        planted = links(self.folder, self.below)
        if planted:
            raise TrainrunError(
                f"{self.folder} holds symbolic links where trainrun writes ({_listed(planted)}): "
                f"{self.command} would write through them into files elsewhere",
                key=self.key,
                fix="remove the links (or copy the folder without them: cp -rP), or name another folder",
            )

    def check_run(self, *, continuing: bool = False, found: tuple[str | None, list[str]] | None = None) -> None:
        """``found``: what :func:`held` saw (before this claim made a lock file). A folder inside
        another command's folder (``hydra.run.dir=<a run>/checkpoints``) is that run's."""
        self.check_enclosing()
        command, results = found if found is not None else held(self.folder)
        if not results:
            return
        own = command == self.command or (command is None and continuing)  # None: a run of an older release
        other_source = recorded_source(self.folder, self.command) if own and self.source else None
        if own and (continuing or self.command in REPLACE_OWN) and self.same_source(other_source):
            return
        if other_source is not None:
            raise TrainrunError(
                f"{self.folder} holds the {self.command} results of another checkpoint ({other_source}): "
                f"{self.command} of {self.source} would replace them", key=self.key, fix=self.fix_other)
        kind = f"{_a(command)} run"
        raise TrainrunError(
            f"{self.folder} holds {kind} ({_listed(results)}): {self.command} would write over its files",
            key=self.key, fix=self.fix_other,
        )

    def same_source(self, recorded: str | None) -> bool:
        """Whether results recorded for ``recorded`` are this checkpoint's: the same file, or the
        same place in a run folder copied or moved with its results (``cp -r run run2``: the
        results inside run2 name run/checkpoints/best.pt, this is run2/checkpoints/best.pt)."""
        if recorded is None or recorded == self.source:
            return True
        if self.source is None or self.home is None or not self.folder.is_relative_to(self.home):
            return False
        here = Path(self.source)
        if not here.is_relative_to(self.home):
            return False
        inside = here.relative_to(self.home).parts
        was = Path(recorded).parts
        return len(was) > len(inside) and was[-len(inside):] == inside

    def check_enclosing(self) -> None:
        """Refuse a folder inside another command's folder (``hydra.run.dir=<a run>/checkpoints``)."""
        outer = enclosing(self.folder, self.home)
        if outer is not None:
            command = held(outer)[0]
            raise TrainrunError(
                f"{self.folder} lies inside {outer}, the folder of {_a(command)} run: "
                f"{self.command} would write into a folder another command owns", key=self.key,
                fix=f"give {self.key}= a folder outside {outer}")

    def claim(self, *, continuing: bool = False) -> None:
        """Links refused, then the lock (a folder another process writes is refused as such),
        then another run refused; the lock names this command only once all passed, and a lock
        file made for a refused claim is removed again: a refusal changes nothing. The lock is
        held until :meth:`release` or the process ends."""
        if self.lock.held:
            return
        self.check_links()
        self.check_enclosing()  # before the lock: acquiring it makes the folder
        found = held(self.folder)  # as it was: acquiring may create the lock file
        made = not os.path.lexists(self.folder / LOCK)
        self.lock.acquire(mark=False)
        try:
            self.check_run(continuing=continuing, found=found)
        except TrainrunError:
            if made:
                (self.folder / LOCK).unlink(missing_ok=True)
            self.lock.release()
            raise
        self.lock.mark()

    def release(self) -> None:
        self.lock.release()


def output_owner(out: Path, command: str, run_folder: Path | None, source: Path | None = None,
                 home: Path | None = None) -> Owner:
    """The owner of ``evaluate``'s or ``export-model``'s output folder: ``out=`` as given, or the
    default inside the run folder (``run_folder``; no link on the way to it either), for the
    results of the checkpoint ``source`` of the run folder ``home`` (``out=`` may lie in it)."""
    default = "<run folder>/eval/..." if command == "evaluate" else "<run folder>/export/..."
    return Owner(out, command, key="out", below=run_folder, source=source, home=home or run_folder,
                 fix_other=f"give out= a folder of its own (or leave it out: {default})")
