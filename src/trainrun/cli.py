"""The ``train`` and ``evaluate`` console scripts: Hydra's entry points and the error boundary,
nothing else.

Exit statuses: 0 done; 2 a config or input error (found before training, Hydra's composition
errors included); 1 a failure during training; 128 + N when signal N stopped the run after it
saved ``last.pt`` (130 for Ctrl-C, 143 for SIGTERM); 130 also for a second Ctrl-C, which stops at
once without saving. ``HYDRA_FULL_ERROR=1`` shows tracebacks.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trainrun import config as _config  # noqa: F401  (registers the schemas)
from trainrun import reference as _reference  # noqa: F401  (registers the --help resolver)
from trainrun.errors import CONFIG_ERROR, TrainrunError

log = logging.getLogger("trainrun")


def config_dir() -> str:
    """``configs/`` inside an installed wheel, or the repository's top-level ``configs/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"trainrun's configs/ folder was not found next to {here}")


_task_started = False


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _fail(err: TrainrunError) -> None:
    """Print the error for a person (and the run log), then exit with its status."""
    log.debug("error", exc_info=err)
    print(f"\nError: {err}", file=sys.stderr)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("trainrun", logging.ERROR, "", 0, f"Error: {err}", None, None))
    if _full_errors():
        raise err
    sys.exit(err.exit_code)


def resume_command(run_dir: Path) -> str:
    """The command that continues this run in its own folder."""
    overrides = [
        o for o in HydraConfig.get().overrides.task
        if not o.startswith(("resume=", "hydra.run.dir="))
    ]
    words = ["train", f"hydra.run.dir={run_dir}", "resume=auto", *overrides]
    return " ".join(shlex.quote(w) for w in words)


@hydra.main(config_path=config_dir(), config_name="train", version_base=None)
def _train(cfg: DictConfig) -> float | None:
    from trainrun.distributed import launch  # alone, as the parent of DDP workers, or one rank

    global _task_started
    _task_started = True
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from trainrun.sweep import run_job

        # A failed job is recorded in its summary.json and returns None: the sweep goes on.
        return run_job(cfg, run_dir, launch)
    try:
        summary = launch(cfg, run_dir)
    except TrainrunError as err:
        _fail(err)
        raise
    if summary["status"] == "interrupted" and summary.get("rank", 0) == 0:
        log.info(f"stopped by {summary['signal']}; last.pt is saved. Resume with:\n  "
                 f"{resume_command(run_dir)}")
        import signal

        sys.exit(128 + signal.Signals[summary["signal"]].value)
    return float(summary["objective"]["value"])


def train() -> None:
    """Console script ``train``. Under torchrun/srun every rank runs it: the ranks agree on one
    run folder and leave with a clean exit."""
    from trainrun import ranks

    with ranks.exit_as_rank():
        try:
            ranks.pin_run_dir(sys.argv)
        except TrainrunError as err:
            _fail(err)
        _train_command()


def _train_command() -> None:
    from trainrun.validate import friendly_hydra_errors

    try:
        with friendly_hydra_errors(lambda: _task_started):  # short composition errors, exit 2
            _train()
    except KeyboardInterrupt:  # a second Ctrl-C (the first one stops after the current step),
        # or one before training started: nothing is saved, the last checkpoint stays valid.
        print("\nStopped at once by Ctrl-C, without saving: checkpoints/last.pt (if any) holds "
              "the last saved state (resume=auto continues from it).", file=sys.stderr)
        sys.exit(128 + 2)
    except SystemExit as exit_:
        # Hydra exits with 1 on composition errors (typo, wrong type, unknown option), before
        # our task ran: those are config errors.
        from trainrun.sweep import SweepFailed  # every job of a sweep failed: status 1

        if exit_.code == 1 and not _task_started and not isinstance(exit_, SweepFailed):
            sys.exit(CONFIG_ERROR)
        raise


_evaluate_started = False


def _evaluate_task(cfg: DictConfig) -> None:
    from trainrun.evaluate import evaluate_run

    global _evaluate_started
    _evaluate_started = True
    try:
        evaluate_run(cfg)
    except TrainrunError as err:
        _fail(err)


def evaluate() -> None:
    """Console script ``evaluate``: score a run's checkpoint on one split (``trainrun.evaluate``,
    primary config ``configs/evaluate.yaml``). Exit statuses as for ``train``: 0 done, 2 a config
    or input error (a missing run folder, checkpoint or split)."""
    from trainrun import evaluate as _schema  # noqa: F401  (registers evaluate_schema)
    from trainrun.validate import friendly_hydra_errors

    main = hydra.main(config_path=config_dir(), config_name="evaluate", version_base=None)(
        _evaluate_task)
    try:
        with friendly_hydra_errors(lambda: _evaluate_started):
            main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _evaluate_started:  # Hydra's composition errors
            sys.exit(CONFIG_ERROR)
        raise


if __name__ == "__main__":  # python -m trainrun.cli, e.g. torchrun --nproc_per_node=2 -m trainrun.cli
    train()
