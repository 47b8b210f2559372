"""An Optuna study as trainrun's sweeps share it: the storage, who runs each trial, and the trials
a driver left behind.

Used by the sweeper (``hydra_plugins.trainrun_launcher.optuna_sweeper``, the *driver*: it asks,
launches and tells) and by each job (:mod:`trainrun.cli.trial`: it reports its epochs), which
may run in another process or on another machine. Both open the same storage from the same
config (:func:`open_storage`):

* ``hydra.sweeper.storage=null``: a journal file in the sweep folder (``optuna.journal``), so
  jobs in worker processes or on a cluster can report to the study, and running the same
  command into the same sweep folder continues it;
* ``journal:<file>``: Optuna's journal file storage anywhere, for clusters that share only a
  file system (several drivers append to one file under its lock);
* anything else is an SQLAlchemy URL (``sqlite:///optuna.db``,
  ``postgresql+psycopg://user:pw@host/db``): Optuna's ``RDBStorage``.

Each trial a driver asks records the driver (host, pid, the process's start time) and a lease
the driver renews every ``LEASE_EVERY_S`` seconds. A RUNNING trial whose driver is gone (dead on
this host, or its lease older than ``stale_after_s``) was left behind by an interrupted driver:
the next driver collects it from its job folder when the job finished on its own, and marks it
failed otherwise (:func:`clean_left_behind`). Only Optuna's public API is used (``tell`` by
trial number, ``Trial`` handles, ``BaseStorage`` lookups).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy import exc as sqlalchemy_exc

from trainrun.errors import CONFIG_ERROR, TrainrunError
from trainrun.report.sweep import FINISHED, OK, finite_or_none, read_summary

log = logging.getLogger("trainrun")

JOURNAL = "optuna.journal"  # the study of a sweep without a storage, inside its folder
# User attributes of a trial (what a driver and a job agree on).
DRIVER, LEASE, SWEEP_DIR, JOB_DIR, LEFT = ("trainrun_driver", "trainrun_lease", "trainrun_sweep_dir",
                                           "trainrun_job_dir", "trainrun_left_behind")
LEASE_EVERY_S = 30.0


def storage_spec(storage: object, sweep_dir: Path) -> str:
    """The storage a sweep uses, as text: an SQLAlchemy URL or ``journal:<absolute file>``."""
    if storage is None or str(storage) in ("", "null"):
        return f"journal:{(sweep_dir / JOURNAL).absolute()}"
    text = str(storage)
    if text.startswith("journal:"):
        return f"journal:{Path(text[len('journal:'):]).expanduser().absolute()}"
    return text


def shown(spec: str) -> str:
    """A storage for the log: a database URL without its password."""
    if "://" in spec and "@" in spec:
        scheme, rest = spec.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return spec


def open_storage(spec: str) -> BaseStorage:
    """The Optuna storage of :func:`storage_spec`'s text."""
    try:
        if spec.startswith("journal:"):
            path = Path(spec[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        return _rdb_storage(spec)
    except Exception as err:
        raise TrainrunError(
            f"cannot open the Optuna storage {shown(spec)!r}: {type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}",
            key="hydra.sweeper.storage", exit_code=CONFIG_ERROR,
            fix="give an SQLAlchemy URL (sqlite:///optuna.db, postgresql+psycopg://user:password@host/db), "
            "journal:<file> on a shared file system, or null (a journal in the sweep folder)") from None


def _rdb_storage(spec: str) -> RDBStorage:
    """``RDBStorage(spec)``, tried again when another driver is making the same empty database's
    tables at the same moment: Optuna creates them on open (``create_all``, then its version
    rows), and the slower of two drivers started together gets PostgreSQL's duplicate-table or
    duplicate-row error. A second try finds the tables made."""
    engine_kwargs = {"pool_pre_ping": True} if not spec.startswith("sqlite") else None
    for wait_s in (0.2, 0.5, 1.0, 2.0):
        try:
            return RDBStorage(spec, engine_kwargs=engine_kwargs)
        except (sqlalchemy_exc.IntegrityError, sqlalchemy_exc.ProgrammingError, sqlalchemy_exc.InternalError):
            time.sleep(wait_s)
    return RDBStorage(spec, engine_kwargs=engine_kwargs)


def trial_handle(study: optuna.Study, number: int) -> Trial:
    """A handle on trial ``number`` of ``study`` (opened by :func:`load` or :func:`create`), through
    the public lookups of its storage (``BaseStorage``)."""
    storage = _STORAGES[study]
    study_id = storage.get_study_id_from_name(study.study_name)
    return Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


# The storage each open study was made with (gone with the study: a sweep of many jobs in one
# process keeps none of the earlier ones).
_STORAGES: weakref.WeakKeyDictionary[optuna.Study, BaseStorage] = weakref.WeakKeyDictionary()


def load(spec: str, study_name: str, **kwargs: Any) -> optuna.Study:
    """``optuna.load_study`` on the storage of ``spec``."""
    storage = open_storage(spec)
    study = optuna.load_study(study_name=study_name, storage=storage, **kwargs)
    _STORAGES[study] = storage
    return study


def create(spec: str, **kwargs: Any) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)`` on the storage of ``spec``."""
    storage = open_storage(spec)
    study = optuna.create_study(storage=storage, load_if_exists=True, **kwargs)
    _STORAGES[study] = storage
    return study


# --------------------------------------------------------------------------- drivers


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Driver:
    """The process running a sweep: ``host``, ``pid`` and that process's start time."""

    host: str
    pid: int
    started: str

    @classmethod
    def this(cls) -> Driver:
        return cls(socket.gethostname(), os.getpid(), _started(os.getpid()) or "")

    def text(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def parse(cls, text: object) -> Driver | None:
        try:
            host, pid, started = str(text).rsplit(":", 2)
            return cls(host, int(pid), started)
        except ValueError:
            return None

    def gone(self, lease: float | None, stale_after_s: float) -> bool:
        """Whether the driver no longer runs: on this host, its process ended (or the pid is
        another process now); elsewhere, its lease has not been renewed for ``stale_after_s``."""
        if self.host == socket.gethostname():
            return _started(self.pid) != self.started
        return lease is None or time.time() - lease > stale_after_s


class Lease:
    """The driver renews the lease of the trials it runs (a thread), so that drivers on other
    machines can tell a live trial from one left behind."""

    def __init__(self, every_s: float = LEASE_EVERY_S) -> None:
        self.every_s = every_s
        self.trials: dict[int, Trial] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainrun-optuna-lease", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def hold(self, trial: Trial) -> None:
        trial.set_user_attr(LEASE, time.time())
        with self._lock:
            self.trials[trial.number] = trial

    def release(self, number: int) -> None:
        with self._lock:
            self.trials.pop(number, None)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with self._lock:
                held = list(self.trials.values())
            for trial in held:
                try:
                    trial.set_user_attr(LEASE, time.time())
                except Exception as err:  # finished meanwhile, or the database is away a moment
                    log.debug(f"lease of trial {trial.number}: {err}")


# --------------------------------------------------------------------------- outcomes


def outcome(job_dir: Path) -> tuple[TrialState, float | None, str]:
    """What a job folder says of its trial: (state, value, why) from its ``summary.json``."""
    summary = read_summary(job_dir)
    if summary is None:
        return TrialState.FAIL, None, f"no summary.json in {job_dir}: the job died before it finished"
    status = str(summary.get("status"))
    value = finite_or_none((summary.get("objective") or {}).get("value"))
    if status in OK and value is not None:
        return TrialState.COMPLETE, value, status
    if status == "pruned":
        return TrialState.PRUNED, None, str(summary.get("stop_reason") or "pruned")
    if status in OK:
        return TrialState.FAIL, None, f"objective {(summary.get('objective') or {}).get('name')} is not finite"
    return TrialState.FAIL, None, str(summary.get("error") or status)


def tell(study: optuna.Study, number: int, job_dir: Path) -> tuple[TrialState, float | None, str]:
    """Tell the study what trial ``number``'s job folder says (nothing if it is already told)."""
    state, value, why = outcome(job_dir)
    study.tell(number, value if state == TrialState.COMPLETE else None,
               state=state, skip_if_finished=True)
    return state, value, why


def clean_left_behind(study: optuna.Study, stale_after_s: float) -> list[str]:
    """RUNNING trials of ``study`` whose driver is gone: collected from their job folder when the
    job finished on its own (a cluster job outlives its driver), else marked failed. Returns
    one line per trial."""
    lines = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = Driver.parse(trial.user_attrs.get(DRIVER))
        if driver is None or not driver.gone(trial.user_attrs.get(LEASE), stale_after_s):
            continue  # another live driver's, or not asked by trainrun
        job_dir = Path(str(trial.user_attrs.get(JOB_DIR, "")))
        summary = read_summary(job_dir) if trial.user_attrs.get(JOB_DIR) else None
        try:
            if summary is not None and summary.get("status") in FINISHED:
                state, value, _ = tell(study, trial.number, job_dir)
                lines.append(f"trial {trial.number}: its driver ({driver.host} pid {driver.pid}) is gone; "
                             f"the job finished on its own: collected as {state.name}"
                             + (f" ({value:.6g})" if value is not None else ""))
                continue
            trial_handle(study, trial.number).set_user_attr(LEFT, f"driver {driver.host} pid {driver.pid}")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            lines.append(f"trial {trial.number}: left RUNNING by a driver that is gone ({driver.host} pid "
                         f"{driver.pid}): marked FAIL")
        except Exception as err:  # told by another driver meanwhile
            log.debug(f"trial {trial.number}: {err}")
    return lines


def counted(trial: FrozenTrial, sweep_dir: Path, stale_after_s: float) -> bool:
    """Whether ``trial`` counts toward this sweep folder's ``n_trials``: finished here (a trial
    failed only because its driver was interrupted does not), or running under a live driver."""
    if trial.user_attrs.get(SWEEP_DIR) != str(sweep_dir):
        return False
    if trial.state == TrialState.RUNNING:
        driver = Driver.parse(trial.user_attrs.get(DRIVER))
        return driver is not None and not driver.gone(trial.user_attrs.get(LEASE), stale_after_s)
    if trial.state == TrialState.FAIL and LEFT in trial.user_attrs:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
