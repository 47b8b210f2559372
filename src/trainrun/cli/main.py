"""The ``train``, ``evaluate``, ``predict`` and ``export`` console scripts: Hydra's entry points,
``--help``, and the error boundary's last line (message, exit status).

Exit statuses: 0 done; 2 a config or input error (found before training, Hydra's composition
errors included); 1 a failure during training; 128 + N when signal N stopped the run after it
saved ``last.pt`` (130 for Ctrl-C, 143 for SIGTERM); 130 also for a second Ctrl-C, which stops at
once without saving. ``HYDRA_FULL_ERROR=1`` shows tracebacks.

Torch is imported only once the config has composed (inside the task): a typo exits in under a
second instead of paying torch's import first.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # python -m trainrun.cli.main: the working folder shadows nothing
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
import logging
import signal
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trainrun.cli import help as cli_help
from trainrun.cli import ranks
from trainrun.cli.entry import check_multirun_plugins, start
from trainrun.cli.failures import record
from trainrun.cli.hydra_errors import as_user_set, full_errors, run_app
from trainrun.cli.ranks import resume_command
from trainrun.cli.run_folder import Refused, RunFolder, claimed, claimed_folders, continues, owned_job
from trainrun.config import config_dir
from trainrun.config.choices import text
from trainrun.config.schemas import register
from trainrun.config.values import check_config
from trainrun.errors import TrainrunError, netted, unexpected
from trainrun.hygiene import protect

log = logging.getLogger("trainrun")
register()  # the schemas, before Hydra composes anything

_task_started = False
# How long a rank other than 0 waits before leaving on an error rank 0 reports: rank 0 prints
# and exits well within it, and the launcher then stops the waiting ranks.
RANK_QUIET_EXIT_S = 10.0


def _report(err: TrainrunError) -> None:
    """Print the error for a person, and into the run's log."""
    if ranks.launched_by_train():  # a worker of trainer.devices=N: train reports the launch's failure
        return record(err)
    log.debug("error", exc_info=err)
    print(f"\nError: {err}", file=sys.stderr)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("trainrun", logging.ERROR, "", 0, f"Error: {err}", None, None))
            handler.close()  # nothing more goes there (and the folder may be given back)


def _fail(err: TrainrunError, reported: bool = False) -> None:
    """Report the error (unless done), then exit with its status."""
    if not reported:
        _report(err)
    if full_errors():
        raise err
    sys.exit(err.exit_code)


@hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
def _train_task(cfg: DictConfig) -> float | None:
    global _task_started
    _task_started = True
    with as_user_set():
        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            _check_before_torch(cfg, run_dir)
        # Imported here, once the config composed and its values passed: these import torch.
        from trainrun.cli.launch import launch  # alone, as the parent of DDP workers, or one rank
        from trainrun.cli.sweep import run_job

        if hydra_cfg.mode == RunMode.MULTIRUN:
            # A failed job is recorded in its summary.json and returns None: the sweep goes on.
            return run_job(cfg, run_dir, owned_job(launch))  # no links in its folder
        # Claimed before Hydra wrote into it (OwnRunFolder.on_run_start), the folder Hydra chose.
        folder = claimed(run_dir) or RunFolder(run_dir, new=True)
        writer = ranks.owns_run_folder()  # one process writes a folder (not a worker of trainer.devices=N)
        if writer and text(cfg.trainer.progress) != "none":  # the header's first line
            given = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.run.dir=")]
            log.info(f"overrides: {' '.join(given) if given else 'none (configs/train.yaml as it is)'}")
        try:
            if writer:
                folder.claim(continuing=continues(cfg, folder.folder))
            try:
                summary = launch(cfg, run_dir)
            except TrainrunError:
                raise
            except Exception as err:  # the last net: whatever no phase caught is still one paragraph
                raise unexpected(err) from err
        except TrainrunError as err:
            _report(err)
            if writer:
                folder.give_back(err.exit_code, config_error=err.config)
            _fail(err, reported=True)
            raise
        finally:
            folder.lock.release()
        if summary["status"] == "explained" and writer:  # a report, nothing trained: no folder left
            folder.discard()
        if summary["status"] == "interrupted" and summary.get("rank", 0) == 0:
            if not ranks.launched_by_train():  # else the train that launched it says so
                log.info(f"stopped by {summary['signal']}; last.pt is saved. Resume with:\n  "
                         f"{resume_command(run_dir)}")
            sys.exit(128 + signal.Signals[summary["signal"]].value)
        return float(summary["objective"]["value"])


def _check_hydra_settings() -> None:
    """Hydra settings trainrun cannot honour: ``hydra.job.chdir=true`` moves the working folder
    into the run folder, where relative data paths and the user's own modules are not."""
    hydra_cfg = HydraConfig.get()
    if not ranks.launched_by_train():  # a worker is one sweep job's process: its train checked
        check_multirun_plugins(hydra_cfg.runtime.choices, multirun=hydra_cfg.mode == RunMode.MULTIRUN)
    if hydra_cfg.job.chdir:
        os.chdir(hydra_cfg.runtime.cwd)  # out of the run folder, which is given back (removed)
        raise TrainrunError(
            "hydra.job.chdir=true would run the task inside the run folder, where relative paths "
            "(data.path, resume=) and your own modules (model._target_=mynet.Net) are not found",
            key="hydra.job.chdir",
            fix="leave hydra.job.chdir=false (trainrun's default): runs start where you start them and "
            "write into hydra.run.dir",
        )


def _check_before_torch(cfg: DictConfig, run_dir: Path) -> None:
    """The value checks, before torch is imported: a wrong value exits in about a second. (A
    sweep's jobs check theirs in commands.train.run, where a failure is recorded as the job's.)"""
    try:
        _check_hydra_settings()
        check_config(cfg)
    except TrainrunError as err:
        err.config = True
        _report(err)
        folder = claimed(run_dir) or RunFolder(run_dir, new=True)
        if ranks.owns_run_folder():
            folder.give_back(err.exit_code, config_error=True)
        _fail(err, reported=True)


def train() -> None:
    """Console script ``train``. Under torchrun/srun every rank runs it: the ranks agree on one
    run folder and leave with a clean exit."""
    start()  # the console guarded, the working folder there
    protect()  # this process and every one started from here: no working folder first
    if cli_help.wants_help(sys.argv):
        try:
            cli_help.print_help("train", sys.argv)
        except TrainrunError as err:
            _fail(err)
        return
    with ranks.exit_as_rank():
        try:
            ranks.pin_run_dir(sys.argv)
        except TrainrunError as err:
            if (ranks.launched_place() or ranks.ALONE).rank != 0:
                # Every rank found it; rank 0 says it, once. Leaving at once would let the
                # launcher stop rank 0 before it printed (torchrun stops all on the first exit).
                time.sleep(RANK_QUIET_EXIT_S)
                sys.exit(err.exit_code)
            _fail(err)
        try:
            run_app(_train_task, lambda: _task_started)
        except Refused as refused:  # the run folder, before Hydra wrote into it (OwnRunFolder)
            if (ranks.launched_place() or ranks.ALONE).rank != 0:
                time.sleep(RANK_QUIET_EXIT_S)
                sys.exit(refused.error.exit_code)
            _fail(refused.error)
        except SystemExit as exit_:
            for folder in [] if _task_started else claimed_folders():  # Hydra failed before the task
                folder.give_back(exit_.code if isinstance(exit_.code, int) else 1, config_error=True)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C (the first one stops after the current step),
            # or one before training started: nothing is saved, the last checkpoint stays valid.
            print("\nStopped at once by Ctrl-C, without saving: checkpoints/last.pt (if any) holds "
                  "the last saved state (resume=auto continues from it).", file=sys.stderr)
            sys.exit(128 + 2)


@hydra.main(config_path=str(config_dir()), config_name="evaluate", version_base=None)
def _evaluate_task(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    with as_user_set():
        from trainrun.commands import evaluate as command  # torch: once the config composed

        try:
            netted(command.run, cfg)
        except TrainrunError as err:
            _fail(err)


def evaluate() -> None:
    """Console script ``evaluate``: score a run's checkpoint on one split (``trainrun.commands.evaluate``,
    primary config ``configs/evaluate.yaml``). Exit statuses as for ``train``: 0 done, 2 a config
    or input error (a missing run folder, checkpoint or split)."""
    protect()  # this process and every one started from here: no working folder first
    if cli_help.wants_help(sys.argv):
        cli_help.print_help("evaluate", sys.argv)
        return
    run_app(_evaluate_task, lambda: _task_started)


@hydra.main(config_path=str(config_dir()), config_name="predict", version_base=None)
def _predict_task(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    with as_user_set():
        from trainrun.commands import predict as command  # torch: once the config composed

        # A predict that fails leaves no folder without predictions (unless the folder existed
        # before: OwnRunFolder claimed it before Hydra made it).
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        folder = claimed(run_dir) or RunFolder(run_dir, new=True, command="predict")
        try:
            folder.claim()
            netted(command.run, cfg)
        except TrainrunError as err:
            _report(err)
            folder.give_back(err.exit_code, config_error=True)
            _fail(err, reported=True)


def predict() -> None:
    """Console script ``predict``: a trained run's model on new data (``trainrun.commands.predict``,
    primary config ``configs/predict.yaml``), ``predictions.csv`` in a run folder of its own.
    Exit statuses: 0 done, 2 a config or input error."""
    protect()  # this process and every one started from here: no working folder first
    if cli_help.wants_help(sys.argv):
        cli_help.print_help("predict", sys.argv)
        return
    try:
        run_app(_predict_task, lambda: _task_started)
    except Refused as refused:  # its folder, before Hydra wrote into it (OwnRunFolder)
        _fail(refused.error)


@hydra.main(config_path=str(config_dir()), config_name="export", version_base=None)
def _export_task(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    with as_user_set():
        from trainrun.commands import export_model as command  # torch: once the config composed

        try:
            netted(command.run, cfg)
        except TrainrunError as err:
            _fail(err)


def export_model() -> None:
    """Console script ``export-model`` (not ``export``: a shell builtin of that name would take the
    command line): a trained run's network as safetensors, TorchScript, a
    ``torch.export`` program or ONNX (``trainrun.commands.export_model``, primary config ``configs/export.yaml``).
    Exit statuses: 0 done, 2 a config or input error, 1 an export that failed or did not
    reproduce the checkpoint's outputs."""
    protect()  # this process and every one started from here: no working folder first
    if cli_help.wants_help(sys.argv):
        cli_help.print_help("export", sys.argv)
        return
    run_app(_export_task, lambda: _task_started)


if __name__ == "__main__":
    train()
