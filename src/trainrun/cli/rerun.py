"""A sweep run again into the same folder: what each job does with what the earlier run left.

``train -m ... hydra.sweep.dir=sweeps/lr`` a second time gives every job the folder it had the
first time (Hydra numbers the jobs in the same order), whatever the launcher. Before training,
the job compares its config with the one its folder's ``summary.json`` was written with (a
digest of the resolved config, ``config_digest`` in :mod:`trainrun.report.record`, written
with the run's status) and decides (:func:`decide`):

* **skip**: the run finished (completed, stopped early, pruned) with this config: nothing is
  trained again, the job returns the objective it recorded;
* **resume**: it was interrupted, failed, or killed before it wrote a summary: ``resume=auto``
  continues its ``last.pt`` (resume refuses a checkpoint of a config that changes what is
  computed), or starts afresh when there is none. Training is deterministic, so a failed run
  continued from its last checkpoint ends as a run started again would;
* **replace**: it finished with another config (a YAML file changed since), or with this config
  on data files whose content changed since (the fingerprint its ``summary.json`` records, taken
  again: a skip would report a result of the old data as the new one's): its files move to
  ``previous-<n>/`` inside the job folder, nothing is lost, and the job trains afresh.

The sweep itself refuses to run into a folder that holds a sweep of other overrides
(:func:`check_same_sweep`): job 3 would mean another run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from trainrun.errors import CONFIG_ERROR, TrainrunError
from trainrun.files import LOCK, left_a_last_checkpoint
from trainrun.report.record import DIGEST, RUN_CONTROL, TRAINER_RUN_CONTROL, config_digest
from trainrun.report.sweep import FINISHED, read_summary

__all__ = ["DIGEST", "check_same_sweep", "config_digest", "decide", "move_aside", "refuse_changed_data"]

log = logging.getLogger("trainrun")

Decision = Literal["fresh", "skip", "resume", "replace", "new data"]


def decide(cfg: DictConfig, run_dir: Path) -> tuple[Decision, dict[str, Any] | None]:
    """What to do in ``run_dir``, and the summary found there."""
    summary = read_summary(run_dir)
    if summary is None:
        return ("resume" if left_a_last_checkpoint(run_dir) else "fresh"), None
    same = summary.get(DIGEST) == config_digest(cfg)
    if summary.get("status") in FINISHED:
        if not same:
            return "replace", summary
        return ("new data" if files_changed(summary.get("data")) else "skip"), summary
    return "resume", summary


def files_changed(saved: Any) -> bool:
    """Whether the data files a finished run recorded (``summary.json``'s ``data``: their paths
    and content fingerprint) hold other content now, or are gone. Data not read from files (a
    bundled set, a user's Dataset) is known by the config alone: False. Each file's digest is
    remembered by its stat in the cache folder, so files that did not change are not read."""
    if not isinstance(saved, dict) or saved.get("of") != "files" or not saved.get("paths"):
        return False
    # Here, not at the top: this module is imported by every command (a Hydra callback's), and
    # the data modules import numpy (66 ms); only a rerun with a finished job pays for them.
    from trainrun.data.identity import cache_dir, file_identity

    try:
        now = file_identity(str(saved.get("source")), list(saved["paths"]), cache_dir(), columns=None, rows=None,
                            split_seed=0)
    except (TrainrunError, OSError):
        return True
    return now.fingerprint != saved.get("fingerprint")


def refuse_changed_data(job_dirs: dict[int, str | None], study_name: str) -> None:
    """Refuse to continue an Optuna study whose finished trials (number -> job folder) were
    trained on data files that hold other content now (a job folder this machine cannot read is
    not checked): its sampler would learn from, and its best trial be chosen among, values of two
    data sets. A grid sweep trains such a job again; a study cannot take a trial back."""
    stale: list[int] = []
    files: list[str] = []
    for number, job in job_dirs.items():
        summary = read_summary(Path(job)) if job else None
        if summary is not None and files_changed(summary.get("data")):
            stale.append(number)
            files = files or [str(p) for p in summary["data"].get("paths", [])]
    if stale:
        shown = ", ".join(map(str, stale[:6])) + (", ..." if len(stale) > 6 else "")
        raise TrainrunError(
            f"study {study_name!r} holds {len(stale)} finished trial(s) ({shown}) trained on data files whose "
            f"content changed since ({', '.join(files[:3])}): continuing would rank their values with "
            "values of the new data, and its sampler would learn from both",
            key="hydra.sweeper.study_name", exit_code=CONFIG_ERROR,
            fix="run the sweep into a new hydra.sweep.dir (with a stored study elsewhere, also a new "
            "hydra.sweeper.study_name), or put back the data those trials were trained on")


def move_aside(run_dir: Path) -> Path:
    """The earlier run's files into ``previous-<n>/`` (Hydra's ``.hydra/`` and the log, which this
    job has already written, stay)."""
    n = 1
    while (run_dir / f"previous-{n}").exists():
        n += 1
    target = run_dir / f"previous-{n}"
    target.mkdir()
    for entry in run_dir.iterdir():
        if entry.name in (".hydra", LOCK, target.name) or entry.suffix == ".log" or entry.name.startswith("previous-"):
            continue
        os.replace(entry, target / entry.name)
    return target


def _computes(override: str) -> bool:
    """Whether an override may change what a job computes or how many jobs there are: all but
    one value of a run-control key (``trainer.progress=none``, ``plot=false``), which the config
    digest leaves out too."""
    key, _, value = override.lstrip("+~").partition("=")
    depth, outside = 0, False  # a comma outside brackets sweeps (tags=[a,b] is one value)
    for char in value:
        depth += {"[": 1, "{": 1, "(": 1, "]": -1, "}": -1, ")": -1}.get(char, 0)
        outside = outside or (char == "," and depth == 0)
    swept = outside or value.startswith(("choice(", "range(", "interval(", "glob(", "tag("))
    control = key in RUN_CONTROL or (key.startswith("trainer.") and key[len("trainer."):] in TRAINER_RUN_CONTROL)
    return swept or not control


def check_same_sweep(config: DictConfig, sweep_dir: Path) -> None:
    """Refuse a sweep into a folder whose ``multirun.yaml`` records other task overrides."""
    stored = sweep_dir / "multirun.yaml"
    if not stored.is_file():
        return
    try:
        before = [str(o) for o in OmegaConf.load(stored).hydra.overrides.task]
    except Exception:
        return  # not one we can read: nothing to compare
    now = [str(o) for o in config.hydra.overrides.task]
    if sorted(before) == sorted(now) or sorted(filter(_computes, before)) == sorted(filter(_computes, now)):
        return
    gone, new = sorted(set(before) - set(now)), sorted(set(now) - set(before))
    raise TrainrunError(
        f"hydra.sweep.dir={sweep_dir} holds a sweep of other overrides (only before: "
        f"{' '.join(gone) or 'none'}; only now: {' '.join(new) or 'none'}): its numbered job folders "
        "would be mixed with this sweep's", key="hydra.sweep.dir", exit_code=CONFIG_ERROR,
        fix="run the same overrides again to finish that sweep, or give this one its own hydra.sweep.dir")
