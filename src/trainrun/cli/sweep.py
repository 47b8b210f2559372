"""Sweeps (``train -m``), the job side: each job records its outcome and never aborts the sweep,
and the ``SweepSummary`` Hydra callback writes the summary at the end.

- :func:`run_job` is the multirun path of ``train``'s task. A job that fails is recorded in its
  own ``summary.json`` (``status: failed`` and the error's first line) and returns ``None`` to
  the sweeper, so Hydra does not abort the sweep and Optuna records the trial as failed. A
  non-finite objective is returned as ``None`` too. A folder a previous run of the same sweep
  left is skipped (finished with this config), resumed, or set aside (:mod:`trainrun.cli.rerun`).
  A job stopped by a signal under submitit hands over to submitit's own handler, which requeues
  it; the requeued job resumes from its own last checkpoint (:func:`resume_if_requeued`).
- :class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``configs/train.yaml``).
  At the end of every multirun it writes ``summary.csv`` from the job folders
  (:mod:`trainrun.report.sweep`) and prints a table sorted by the objective, best first. When
  every job failed, ``train -m`` exits with status 1.

Only light imports here: the callback is instantiated in every ``train`` process.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainrun.cli.gpus import assign_devices, in_joblib_worker, limit_threads
from trainrun.cli.ranks import owns_run_folder
from trainrun.cli.rerun import DIGEST, check_same_sweep, config_digest, decide, move_aside
from trainrun.cli.trial import trial_number, trial_report
from trainrun.config.choices import direction
from trainrun.engine.publish import META, recover
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import CHECKPOINTS, LAST, SWEEP_CSV, RunFolderLock
from trainrun.report.echo import print_config_tree
from trainrun.report.sweep import OK, finite_or_none, first_line, mark_failed, read_summary, summarize, update_summary

log = logging.getLogger("trainrun")


class SweepFailed(SystemExit):
    """The sweep cannot start (2), or every job of it failed (1): ``train -m`` exits with this."""



# --------------------------------------------------------------------------- inside a job


def requeue_count() -> int:
    """How many times SLURM requeued this job (``SLURM_RESTART_COUNT``; 0 elsewhere)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


# What a job handing over to submitit's requeue writes into its summary.json (see _interrupted).
REQUEUED = "requeued by submitit"


def resume_if_requeued(cfg: DictConfig, run_dir: Path) -> bool:
    """A requeued job lands in its own folder again: continue from its last checkpoint (``last.pt``,
    or the sharded folder ``last/`` that ``trainer.devices=N`` writes). SLURM counts the restarts;
    submitit's local executor does not, so its job's own summary says it too."""
    restarts = requeue_count()
    checkpoints = run_dir / CHECKPOINTS
    recover(checkpoints)  # a kill between the two renames of a sharded save
    sharded = checkpoints / Path(LAST).stem
    last = sharded if (sharded / META).is_file() else checkpoints / LAST
    summary = read_summary(run_dir) or {}
    handed_over = summary.get("status") == "interrupted" and REQUEUED in str(summary.get("error"))
    if not (restarts or handed_over) or not last.exists():
        return False
    if cfg.resume != "auto":
        by = f"SLURM (restart {restarts})" if restarts else "submitit"
        log.info(f"requeued by {by}: resuming from this job's {last}")
        cfg.resume = "auto"
    return True


def _submitit_requeue_handler(signum: int) -> Callable[[int, Any], None] | None:
    """submitit's checkpoint-and-requeue handler when it owns ``signum`` in this process."""
    handler = signal.getsignal(signum)
    if callable(handler) and getattr(handler, "__name__", "") in ("checkpoint_and_try_requeue", "checkpoint_and_exit"):
        return handler
    return None


def _skipped(summary: dict[str, Any], run_dir: Path) -> float | None:
    """A job whose run finished with this config: nothing to train again."""
    objective = summary.get("objective") or {}
    value = finite_or_none(objective.get("value"))
    log.info(f"{summary.get('status')} before with this config ({objective.get('name')} {value}); "
             f"not trained again: {run_dir}")
    return value if summary.get("status") in OK else None


def run_job(
    cfg: DictConfig, run_dir: Path, train_job: Callable[..., dict[str, Any]]
) -> float | None:
    """One job of a multirun: train, and never let a failure abort the sweep. A folder a
    previous run of the same sweep left is skipped, resumed or set aside (:mod:`rerun`).

    Returns the objective for the sweeper (None when the job failed or it is not finite).
    """
    started = time.perf_counter()
    objective = {"name": cfg.objective, "value": None,
                 "direction": direction(str(cfg.objective))}
    trial = trial_number()
    mine: dict[str, Any] = {DIGEST: config_digest(cfg), **({"trial": trial} if trial is not None else {})}
    # One process of a job owns its folder: the others of a job with several tasks (submitit's
    # tasks_per_node, srun) train beside it and would find it locked. Only the owner moves an
    # earlier run aside and writes summary.json: another rank's write could land after the
    # owner's and replace its summary (seen: a finished run recorded as failed).
    owner = owns_run_folder()
    lock = RunFolderLock(run_dir) if owner else None
    try:
        if lock is not None:
            lock.acquire()  # another driver running this very job: leave its folder alone
    except TrainrunError as err:
        log.error(f"Error: {err}")
        return None
    SIGNALS.in_job = True
    try:
        try:
            resume_if_requeued(cfg, run_dir)  # a requeued cluster job says so, and resumes
            decision, previous = decide(cfg, run_dir)
            if decision == "skip" and previous is not None:
                return _skipped(previous, run_dir)
            if decision == "replace" and owner:
                log.info(f"this folder held a run of another config: moved to {move_aside(run_dir)}")
            elif decision == "new data" and owner:
                log.info(f"this folder held a run of this config on data files that changed since: moved to "
                         f"{move_aside(run_dir)}")
            elif decision == "resume" and not cfg.resume:
                log.info(f"this job ran before without finishing: resume=auto in {run_dir}")
                cfg.resume = "auto"
            limit_threads(cfg)
            devices = assign_devices(run_dir)
            if devices is not None:
                mine["cuda_visible_devices"] = ",".join(devices)
            judge = trial_report(cfg)
            summary = train_job(cfg, run_dir, judges=[judge] if judge is not None else [])
        except Exception as err:
            if isinstance(err, TrainrunError):
                log.error(f"Error: {err}")
            else:
                log.error(f"Error: {first_line(err)}", exc_info=err)
            if owner:
                mark_failed(run_dir, first_line(err), objective=objective,
                            total_seconds=time.perf_counter() - started, **mine)
            SIGNALS.exit_if_held()  # a signal held while this job failed: the sweep stops now
            return None
        if owner:
            update_summary(run_dir, **mine)
    finally:
        SIGNALS.in_job = False
        if lock is not None:
            lock.release()
    if summary["status"] == "interrupted":
        return _interrupted(summary, run_dir, owner)
    SIGNALS.exit_if_held()  # held, but the job ended before its loop could take it over
    return finite_or_none(summary["objective"]["value"]) if summary["status"] in OK else None


def _interrupted(summary: dict[str, Any], run_dir: Path, owner: bool) -> float | None:
    """The run stopped on a signal after saving ``last.pt``; decide what the job does now (only
    the folder's owner writes to its summary)."""
    write = update_summary if owner else (lambda run_dir, **values: values)
    name = summary["signal"]
    signum = signal.Signals[name].value
    requeue = _submitit_requeue_handler(signum)
    if requeue is not None:
        # Under submitit the signal means preemption or time-out: submitit's own handler (which
        # trainrun's replaced while training) checkpoints the job and requeues it, then exits.
        write(run_dir, error=f"stopped by {name}; {REQUEUED}")
        log.info(f"stopped by {name}; last.pt is saved, handing over to submitit to requeue")
        try:
            requeue(signum, None)
        except Exception as err:  # submitit decided not to requeue (e.g. too many time-outs)
            write(run_dir, status="failed", error=f"stopped by {name}; not requeued: {first_line(err)}")
            return None
    note = f"stopped by {name}; last.pt is saved (resume=auto continues it in this folder)"
    write(run_dir, error=note)
    log.info(note)
    if in_joblib_worker():
        return None  # a worker process: the sweep's other jobs go on
    # The basic launcher (Ctrl-C stops the whole sweep) or a cluster job (no result: the cluster
    # requeues it or reports it as cancelled).
    sys.exit(128 + signum)



# --------------------------------------------------------------------------- the whole sweep


class SweepSignals:
    """The sweep driver's SIGTERM handler (``train -m`` would otherwise end on the spot, with no
    summary): outside a job it exits (the summary is written by the exit hook, the Optuna
    sweeper marks its running trials failed); inside a job it holds the signal, which the
    job's loop takes over as it starts (``engine.signals.Signals``): the job saves ``last.pt``
    after one step and the sweep exits with 128 + N."""

    def __init__(self) -> None:
        self.held: int | None = None
        self.in_job = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.in_job:
            self.held = self.held or signum
            os.write(2, f"\n{name}: the sweep stops once this job has saved its state\n".encode())
            return
        os.write(2, f"\n{name}: the sweep stops; running the same command again into this sweep folder "
                    "continues it\n".encode())
        raise SystemExit(128 + signum)

    def exit_if_held(self) -> None:
        if self.held is not None:
            sys.exit(128 + self.held)


SIGNALS = SweepSignals()


class SweepSummary(Callback):
    """Hydra callback: ``summary.csv`` and a table at the end of every multirun.

    Also written if the sweep itself ends early (a sweeper error, Ctrl-C), from an exit hook.
    """

    def __init__(self, table: bool = True, fail_if_all_failed: bool = True) -> None:
        self.table = table
        self.fail_if_all_failed = fail_if_all_failed
        self._pending: tuple[Path, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_same_sweep(config, Path(str(config.hydra.sweep.dir)))  # before anything is written
        except TrainrunError as err:  # Hydra turns a callback's exception into a warning: exit here
            print(f"\nError: {err}", file=sys.stderr)
            raise SweepFailed(err.exit_code) from None
        self._pending = (Path(str(config.hydra.sweep.dir)), str(config.get("objective", "val_loss")))
        atexit.register(self._at_exit)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            # Outside a job's loop (between jobs, in the sweeper, waiting for workers or the
            # cluster) SIGTERM would end the process on the spot: exit instead, so the summary is
            # written (the exit hook) and the Optuna sweeper marks its running trials failed.
            signal.signal(signal.SIGTERM, SIGNALS)
        # What the jobs share, once: the sweep's command line (and the config tree if asked);
        # each job then prints one line after Hydra's own "#N : overrides" line.
        overrides = " ".join(str(o) for o in config.hydra.overrides.task) or "none"
        log.info(f"sweep: {overrides} -> {config.hydra.sweep.dir}")
        if config.get("print_config"):
            print_config_tree(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        objective = str(config.get("objective", "val_loss"))
        self._pending = None
        if not sweep_dir.is_dir():
            return
        rows = summarize(sweep_dir, objective, table=self.table, plot=bool(config.get("plot")))
        if rows and self.fail_if_all_failed and not any(r["status"] in OK for r in rows):
            log.error(f"every job of the sweep failed ({len(rows)}); see {sweep_dir / SWEEP_CSV}")
            raise SweepFailed(TRAINING_ERROR)

    def _at_exit(self) -> None:
        if self._pending is None:
            return
        sweep_dir, objective = self._pending
        self._pending = None
        if sweep_dir.is_dir():
            try:
                summarize(sweep_dir, objective, table=self.table)
            except Exception as err:  # never mask the reason the sweep stopped
                print(f"could not write the sweep summary: {first_line(err)}", file=sys.stderr)
