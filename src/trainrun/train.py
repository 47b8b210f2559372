"""One training run from a composed config: build, resume, fit, summarize.

Knows nothing of Hydra's entry point (``cli.py``) and prints only through the reporter.
"""

from __future__ import annotations

import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from trainrun import __version__, checkpoint, explain, preflight
from trainrun.build import Run, build
from trainrun.config import objective_direction
from trainrun.distributed import AgreedInterrupt
from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.loggers import make_loggers
from trainrun.loop import TrainState, fit
from trainrun.report import Reporter
from trainrun.validate import check_config


def metric_names(run: Run) -> list[str]:
    names = ["train_loss"]
    if run.val_batches is not None:
        names += ["val_loss", f"val_{run.loss.metric}"]
        names += [f"val_{name}" for name in (run.metrics.names if run.metrics else [])]
    return names


def check_monitored(run: Run) -> None:
    """Every value the config watches must be one the run logs."""
    names = metric_names(run)
    watched = {
        "objective": run.cfg.objective,
        "checkpoint.monitor": run.cfg.checkpoint.monitor,
    }
    if run.cfg.trainer.early_stopping.patience is not None:
        watched["trainer.early_stopping.monitor"] = run.cfg.trainer.early_stopping.monitor
    if run.scheduler is not None and run.cfg.scheduler.monitor:
        watched["scheduler.monitor"] = run.cfg.scheduler.monitor
    for key, name in watched.items():
        if name not in names:
            hint = " (there is no validation split: data.val_fraction=0)" if name.startswith("val_") else ""
            raise TrainrunError(
                f"{key}={name} is not a value this run logs{hint}; it logs {', '.join(names)}",
                key=key,
                fix=f"set {key} to one of: {', '.join(names)}",
            )


def objective_value(history: list[dict[str, Any]], name: str) -> float:
    """The best value of ``name`` over the run, in the direction its name implies."""
    values = [row[name] for row in history if name in row]
    if not values:
        return float("nan")
    return min(values) if objective_direction(name) == "minimize" else max(values)


def resume(run: Run, state: TrainState, run_dir: Path, reporter: Reporter) -> bool:
    """Load the checkpoint ``cfg.resume`` points to into ``run`` and ``state``."""
    path = checkpoint.find(str(run.cfg.resume), run_dir)
    if path is None:
        reporter.info("resume=auto: no checkpoint in this run folder yet, starting fresh")
        return False
    saved = checkpoint.load(path)
    blocking, harmless = checkpoint.config_differences(saved["config"], run.cfg)
    if blocking:
        raise TrainrunError(
            f"the checkpoint {str(path)!r} was written with a different config:\n    "
            + "\n    ".join(blocking),
            key="resume",
            fix="resume with the config the run started with, or start a new run",
        )
    planned_steps = getattr(run.scheduler, "total_steps", None)  # OneCycleLR: fixed length
    checkpoint.restore(run, state, saved)
    saved_steps = getattr(run.scheduler, "total_steps", None)
    if planned_steps and saved_steps and planned_steps > saved_steps:
        raise TrainrunError(
            f"the checkpoint's {type(run.scheduler).__name__} was built for {saved_steps} steps; "
            f"this config needs {planned_steps} (trainer.epochs changed), and that schedule "
            "cannot be stretched after the fact",
            key="trainer.epochs",
            fix=f"resume with trainer.epochs={saved['config']['trainer']['epochs']}, or start a new run",
        )
    epochs = run.cfg.trainer.epochs
    if state.epoch >= epochs:
        where = f"the end of epoch {state.epoch} (all {epochs} epochs done)"
    elif state.batch:
        where = f"epoch {state.epoch + 1}, after batch {state.batch}"
    else:
        where = f"the start of epoch {state.epoch + 1}"
    reporter.info(f"resumed from {path} at {where} (step {state.step})")
    for diff in harmless:
        if checkpoint.under(diff, checkpoint.RESTORED):
            reporter.info(f"  config changed since the checkpoint, NOT applied (the saved "
                          f"optimizer/scheduler state is restored): {diff}")
        else:
            reporter.info(f"  config changed since the checkpoint: {diff}")
    return True


def run_training(cfg: DictConfig, run_dir: Path, *, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Train as configured; returns the summary (also written to ``summary.json``)."""
    started = time.perf_counter()
    check_config(cfg)  # values that cannot work, before anything is built
    reporter = Reporter(run_dir, epochs=cfg.trainer.epochs, progress=str(cfg.trainer.progress.value),
                        rank=rank)
    reporter.show_start(cfg)
    run = build(cfg, rank=rank, world_size=world_size)
    check_monitored(run)
    if cfg.preflight:  # one real batch through the built objects; changes nothing
        preflight.check(run, say=reporter.info)
    if cfg.explain:  # the binding report after one step, then stop
        return explain.explain(run)
    if rank == 0:
        reporter.use_loggers(make_loggers(cfg, run_dir), cfg)
    state = TrainState()
    if cfg.resume:
        resume(run, state, run_dir, reporter)

    with checkpoint.Interrupt() as interrupt:
        if world_size > 1:  # DDP: the ranks agree on the step at which a signal stops them all
            interrupt = AgreedInterrupt(interrupt, run)
        checkpoints = checkpoint.Checkpoints(run, run_dir / "checkpoints", interrupt)
        fit_started = time.perf_counter()
        anomaly = torch.autograd.detect_anomaly() if cfg.trainer.detect_anomaly else nullcontext()
        try:
            with anomaly:
                fit(run, state, reporter, checkpoints)
        except BaseException as err:
            reporter.loggers.close()  # an MLflow run is marked failed, event files flushed
            if cfg.trainer.detect_anomaly and "returned nan values" in str(err):
                raise TrainrunError(
                    f"{err} (torch.autograd.detect_anomaly; the forward line that made it is in the "
                    "warning above)", key="trainer.detect_anomaly", exit_code=TRAINING_ERROR,
                    fix="look at that line; lower optim.lr, clip gradients or check the data") from None
            raise
        train_seconds = time.perf_counter() - fit_started

    if checkpoints.stopped:  # a signal stopped it between steps (one after the end: completed)
        status = "interrupted"
    elif state.stop_reason:
        status = "stopped early"
        reporter.info(state.stop_reason)
    else:
        status = "completed"
    best_row = next((r for r in state.history if r["epoch"] == state.best_epoch), None)
    summary = {
        "status": status,
        "signal": interrupt.name or None,
        "stop_reason": state.stop_reason,
        "objective": {"name": cfg.objective, "value": objective_value(state.history, cfg.objective),
                      "direction": objective_direction(cfg.objective)},
        "monitor": cfg.checkpoint.monitor,
        "best_epoch": state.best_epoch,
        "final": state.history[-1] if state.history else None,
        "best": best_row,
        "epochs_run": state.epoch,
        "steps": state.step,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "num_parameters": run.num_parameters,
        "device": str(run.device),
        "world_size": world_size,
        "rank": rank,
        "task": run.info.task,
        "data_sizes": run.info.sizes,
        "run_dir": str(run_dir),
        "versions": {"trainrun": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    reporter.summary(summary, state.history, plot=cfg.plot)
    return summary
