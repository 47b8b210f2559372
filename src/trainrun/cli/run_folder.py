"""The folder one ``train`` run writes, claimed before Hydra writes into it and given back as it
was when the run fails before training.

Hydra creates the run folder and writes ``.hydra/config.yaml`` before the task starts. So, for a
single run (not a sweep):

* a folder named on the command line (``hydra.run.dir=...``: a resume, a pinned folder) is locked
  first (:class:`trainrun.files.RunFolderLock`): a second ``train`` on it is refused before it
  can overwrite anything;
* when the config itself is wrong (composition or value checks), a folder this run created is
  removed again: it would hold nothing but the wrong config;
* when the run stops with any config or input error (exit 2: nothing trained), an existing
  folder gets its ``.hydra/`` files back, so a failed ``resume=auto`` leaves the run's record as
  it was. (An input error found later, by the data, the model or preflight, keeps a new folder:
  its ``train.log`` says what was wrong.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from trainrun.errors import CONFIG_ERROR, TrainrunError
from trainrun.files import LOCK, RunFolderLock

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
# What a run leaves in a folder before training starts: removing them loses nothing.
BEFORE_TRAINING = {".hydra", "train.log", "predict.log", LOCK}


def named_run_dir(argv: list[str]) -> Path | None:
    """The ``hydra.run.dir=`` of a single run's command line (the last one given), or None."""
    if any(a in ("-m", "--multirun") for a in argv[1:]):
        return None
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(("hydra.run.dir=", "++hydra.run.dir="))]
    if given and given[-1].strip() in ("", "''", '""'):
        raise TrainrunError(
            "hydra.run.dir is empty (an unset shell variable?): the run would write its checkpoints, "
            "metrics and .hydra/ into the working folder",
            key="hydra.run.dir",
            fix="give the run its own folder, e.g. hydra.run.dir=outputs/my-run (or leave it out: "
            "outputs/<date>/<time>)",
        )
    return Path(given[-1]).expanduser() if given else None


class RunFolder:
    """One run's folder: its lock, and what it held before this run."""

    def __init__(self, folder: Path, *, new: bool | None = None) -> None:
        """``new``: whether this run created the folder (None: it did if it is not there yet)."""
        self.folder = folder.absolute()
        self.existed = self.folder.exists() if new is None else not new
        self.lock = RunFolderLock(self.folder)
        self.hydra_files = {name: (self.folder / ".hydra" / name).read_bytes()
                            for name in HYDRA_FILES if (self.folder / ".hydra" / name).is_file()}

    def claim(self) -> None:
        self.lock.acquire()

    def give_back(self, exit_code: int, *, config_error: bool) -> None:
        """After a run that failed with ``exit_code``: put the folder back as it was where the
        rules above say so, and release the lock."""
        try:
            if exit_code == CONFIG_ERROR and self.folder.is_dir():
                if not self.existed and config_error:
                    left = {p.name for p in self.folder.iterdir()}
                    if left <= BEFORE_TRAINING:
                        shutil.rmtree(self.folder, ignore_errors=True)
                        _remove_empty_parents(self.folder)
                elif self.hydra_files:
                    for name, data in self.hydra_files.items():
                        (self.folder / ".hydra" / name).write_bytes(data)
        finally:
            self.lock.release()


    def discard(self) -> None:
        """After ``explain=true`` (a report on the console, nothing trained): a folder this run
        created goes again, as after a config error; one that existed is left as it was."""
        self.give_back(CONFIG_ERROR, config_error=True)


def _remove_empty_parents(folder: Path) -> None:
    """Hydra's ``outputs/<date>/`` made for this run alone goes too, up to the current folder."""
    cwd = Path.cwd().resolve()
    parent = folder.resolve().parent
    while parent != cwd and parent.is_relative_to(cwd):
        try:
            parent.rmdir()  # only when empty
        except OSError:
            return
        parent = parent.parent
