"""The folder one ``train`` (or ``predict``) run writes, claimed before Hydra writes into it and
given back as it was when the run fails before training.

Hydra creates the run folder and writes ``.hydra/config.yaml`` and the job's log before the task
starts. So, for a single run (not a sweep):

* the folder Hydra is about to use (``hydra.run.dir`` as Hydra resolved it, never a parse of the
  command line) is claimed by :class:`OwnRunFolder`, a Hydra callback whose ``on_run_start``
  Hydra calls before it creates or writes anything there: :class:`trainrun.owner.Owner` refuses
  links, a folder holding another run (unless ``resume=`` continues it) and a folder another
  command is writing (its lock); a refusal leaves the folder untouched;
* when the config itself is wrong (composition or value checks), a folder this run created is
  removed again: it would hold nothing but the wrong config;
* when the run stops with any config or input error (exit 2: nothing trained), an existing
  folder gets its ``.hydra/`` files back, so a failed ``resume=auto`` leaves the run's record as
  it was. (An input error found later, by the data, the model or preflight, keeps a new folder:
  its ``train.log`` says what was wrong.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trainrun.cli import ranks
from trainrun.errors import CONFIG_ERROR, TrainrunError
from trainrun.files import LOCK, SUMMARY_JSON, RunFolderLock, left_a_last_checkpoint
from trainrun.owner import Owner, held

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
# What a run leaves in a folder before training starts: removing them loses nothing.
BEFORE_TRAINING = {".hydra", "train.log", "predict.log", LOCK}
FIX_OTHER = {
    "train": "continue that run with resume=auto, or give this one a new folder (hydra.run.dir=<new folder>, "
             "or leave it out: outputs/<date>/<time>)",
    "predict": "give the predictions a new folder (hydra.run.dir=<new folder>, or leave it out: "
               "predictions/<date>/<time>)",
    "sweep": "give the sweep a new folder (hydra.sweep.dir=<new folder>, or leave it out)",
}


# resume=auto into a folder whose run left no last.pt: there is nothing to continue, and starting
# afresh there would replace that run's metrics and summary.
NOTHING_TO_RESUME = ("resume=auto continues a run from its checkpoints/last.pt, and this one has none "
                     "(trained with checkpoint.enabled=false, or it ended before its first checkpoint): "
                     "give this run a new folder (hydra.run.dir=<new folder>, or leave it out)")


NEW_FOLDER = "give this run a new folder (hydra.run.dir=<new folder>, or leave it out: outputs/<date>/<time>)"


class RunFolder:
    """One run's folder: its owner (lock, links, another run), and what it held before this run."""

    def __init__(self, folder: Path, *, new: bool | None = None, command: str = "train") -> None:
        """``new``: whether this run created the folder (None: it did if it is not there yet)."""
        self.folder = folder.absolute()
        self.existed = self.folder.exists() if new is None else not new
        self.owner = Owner(self.folder, command, key="hydra.run.dir", fix_other=FIX_OTHER.get(command, ""))
        self.lock: RunFolderLock = self.owner.lock
        self.hydra_files = {name: (self.folder / ".hydra" / name).read_bytes()
                            for name in HYDRA_FILES
                            if (self.folder / ".hydra" / name).is_file() and not (self.folder / ".hydra").is_symlink()
                            and not (self.folder / ".hydra" / name).is_symlink()}

    def claim(self, *, continuing: bool = False) -> None:
        self.owner.claim(continuing=continuing)

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


# --------------------------------------------------------------------------- before Hydra writes

_CLAIMED: dict[Path, RunFolder] = {}  # this process's claims, by folder


def claimed(folder: Path) -> RunFolder | None:
    """The :class:`RunFolder` :class:`OwnRunFolder` claimed for ``folder`` in this process."""
    return _CLAIMED.get(Path(os.path.abspath(folder)))


def claimed_folders() -> list[RunFolder]:
    return list(_CLAIMED.values())


def owned_job(train_job: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A sweep job's training with links in its folder refused (``cli.sweep.run_job`` holds the
    job folder's lock; the sweep's folder was checked whole by :meth:`OwnRunFolder.on_multirun_start`;
    a job run again continues or sets aside its own folder: ``cli.rerun``). A refusal fails this
    job, not the sweep."""

    def run(cfg: DictConfig, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
        Owner(run_dir, "train", key="hydra.sweep.dir", fix_other=FIX_OTHER["sweep"]).check_links()
        return train_job(cfg, run_dir, **kwargs)

    return run


class Refused(SystemExit):
    """A claim refused inside a Hydra callback: Hydra turns a callback's exceptions into warnings,
    so the refusal leaves it as an exit, and the console script reports ``error``."""

    def __init__(self, error: TrainrunError) -> None:
        super().__init__(error.exit_code)
        self.error = error


def continues(cfg: DictConfig, folder: Path) -> bool:
    """Whether this ``train`` continues the run ``folder`` holds: ``resume=auto``, or a resume
    from that folder's own checkpoints."""
    resume = cfg.get("resume")
    if not resume:
        return False
    if str(resume) == "auto":  # a run that left a last.pt or last/ (resume refuses a bad one), or none yet
        return left_a_last_checkpoint(folder) or killed_before_its_first_checkpoint(folder)
    path = Path(os.path.abspath(Path(str(resume)).expanduser()))
    return path == folder or path.is_relative_to(folder)


def killed_before_its_first_checkpoint(folder: Path) -> bool:
    """A train run that would have written checkpoints (its ``.hydra/config.yaml`` says so) and
    ended before the first one, without a ``summary.json``: ``resume=auto`` starts it afresh
    (what it leaves, a deterministic run writes again). Anything else (another command's
    folder, a sweep's, a run without checkpoints or one that ended) is not trained over."""
    if held(folder)[0] != "train" or (folder / SUMMARY_JSON).exists():
        return False
    try:
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    except Exception:  # none, or not a config
        return False
    return OmegaConf.select(config, "checkpoint.enabled", default=False) is True


class OwnRunFolder(Callback):
    """``hydra.callbacks.run_folder`` of ``train`` and ``predict``: claims the folder Hydra is about
    to write (``on_run_start``, before Hydra creates it, writes ``.hydra/`` or opens the job's
    log), and a sweep's folder (``on_multirun_start``, before ``multirun.yaml``). Only the
    process that writes claims (rank 0 under torchrun/srun); every rank refuses links."""

    def __init__(self, command: str) -> None:
        self.command = command

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        given = str(config.hydra.run.dir)
        try:
            if not given.strip():
                raise TrainrunError(
                    "hydra.run.dir is empty (an unset shell variable?): the run would write its checkpoints, "
                    "metrics and .hydra/ into the working folder",
                    key="hydra.run.dir",
                    fix="give the run its own folder, e.g. hydra.run.dir=outputs/my-run (or leave it out: "
                    "outputs/<date>/<time>)",
                )
            folder = RunFolder(Path(os.path.abspath(given)), command=self.command)  # as Hydra's run_job makes it
            if self.command == "train" and str(config.get("resume")) == "auto" and not continues(config, folder.folder):
                folder.owner.fix_other = NOTHING_TO_RESUME if held(folder.folder)[0] == "train" else NEW_FOLDER
            if ranks.owns_run_folder():  # rank 0, or the train that started trainer.devices=N's workers
                folder.claim(continuing=self.command == "train" and continues(config, folder.folder))
                _CLAIMED[folder.folder] = folder
            else:
                folder.owner.check(continuing=True)  # links only: rank 0 decides the rest
        except TrainrunError as err:
            raise Refused(err) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep's folder: links refused, and a folder another command wrote (a training run).
        No lock: several drivers may share one sweep folder, and a sweep run again into its
        folder finishes it (``cli.rerun`` refuses one of other overrides)."""
        if not ranks.owns_run_folder():
            return
        sweep = Owner(Path(str(config.hydra.sweep.dir)), "sweep", key="hydra.sweep.dir", fix_other=FIX_OTHER["sweep"])
        try:
            sweep.check(continuing=True)
        except TrainrunError as err:
            raise Refused(err) from None
