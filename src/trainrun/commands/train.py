"""One training run from a composed config, in this process (one rank, or alone):
check the values, build, preflight, resume, fit, summarize.

Orchestration only: each step is a call into the room that does it. Knows nothing of Hydra's
entry point (``cli``) and prints only through the reporter.
"""

from __future__ import annotations

import platform
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from trainrun import __version__
from trainrun.build.class_weights import labels_of
from trainrun.build.loggers import make_loggers
from trainrun.build.settings import unused_early_stopping
from trainrun.build.setup import Setup, build, owners
from trainrun.build.threads import Threads
from trainrun.commands.evaluate import test_after_fit
from trainrun.config.choices import direction, text
from trainrun.config.values import check_config
from trainrun.engine.hooks import Callbacks
from trainrun.engine.loop import Reporter as LoopReporter
from trainrun.engine.loop import TrainState, fit
from trainrun.engine.resume import open_resume, resume
from trainrun.engine.signals import AgreedSignals, Signals
from trainrun.engine.stop import Stop
from trainrun.errors import TRAINING_ERROR, TrainrunError, exits_are_errors, phase
from trainrun.files import CHECKPOINTS
from trainrun.preflight import run as preflight
from trainrun.report.console import Reporter
from trainrun.report.echo import in_sweep_job, mark_rank, when_console_closes
from trainrun.report.record import DIGEST, config_digest, run_record
from trainrun.tools import explain, lr_find
from trainrun.tools.model_summary import layer_table, parameter_line
from trainrun.tools.overfit import overfit_verdict
from trainrun.tools.profiler import profiling


def best_row(state: TrainState) -> dict[str, Any] | None:
    """The row of the epoch (with ``trainer.val_every_n_steps``: the validation) ``best.pt`` holds."""
    return next((r for r in state.history if r["epoch"] == state.best_epoch
                 and (state.best_step is None or r.get("step") == state.best_step)), None)


def objective_value(row: dict[str, Any] | None, name: str) -> float:
    """The value of ``name`` in the row ``best.pt`` holds (``checkpoint.monitor``'s best, by
    default the objective's own): the score shown beside a run is the score of the checkpoint
    it deploys, even when ``checkpoint.monitor`` is set to another value."""
    value = row.get(name) if row is not None else None
    return float(value) if isinstance(value, int | float) else float("nan")


class Whereabouts:
    """The reporter ``fit`` talks to, noting what it is doing for the training phase's message:
    a batch of an epoch, the validation after it (and the scheduler's step), or the epoch's end
    (loggers, checkpoints, early stopping). ``state`` alone cannot tell: it moves to the next
    epoch before the end-of-epoch work."""

    def __init__(self, reporter: LoopReporter) -> None:
        self.reporter = reporter
        self.stage, self.epoch = "training", 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reporter, name)

    @contextmanager
    def progress(self, epoch: int, steps: int) -> Iterator[Any]:
        self.stage, self.epoch = "training", epoch
        with self.reporter.progress(epoch, steps) as bar:
            yield bar
        self.stage = "validating"

    def epoch_end(self, row: dict[str, Any], state: TrainState) -> None:
        self.stage = "ending"
        self.reporter.epoch_end(row, state)

    def doing(self, state: TrainState) -> str:
        if self.stage == "validating":
            return f"validating after epoch {self.epoch + 1}"
        if self.stage == "ending":
            return f"ending epoch {self.epoch + 1} (callbacks, loggers, checkpoints, early stopping)"
        return f"training (epoch {state.epoch + 1}, batch {state.batch + 1})"


@exits_are_errors("train")
def run(cfg: DictConfig, run_dir: Path, *, rank: int = 0, world_size: int = 1, threads: Threads | None = None,
        judges: Sequence[Callable[[list[dict[str, Any]]], str | None]] = ()) -> dict[str, Any]:
    """Train as configured; returns the summary (also written to ``summary.json``).
    ``threads``: the torch threads the launch chose, said in the header. ``judges`` may end
    the run after an epoch (a sweep's pruner: status ``pruned``)."""
    started = time.perf_counter()
    try:
        check_config(cfg)  # values that cannot work, before anything is built
    except TrainrunError as err:
        err.config = True
        raise
    reporter = Reporter(run_dir, epochs=cfg.trainer.epochs, progress=text(cfg.trainer.progress), rank=rank,
                        sweep_job=in_sweep_job())
    mark_rank(rank)  # rank > 0: "[rank 1] " before each line it logs
    reporter.show_start(cfg)
    if threads is not None and reporter.mode != "none":  # threads: 1 (2 usable CPUs: ...)
        reporter.info(threads.line())
    resumed = None
    if cfg.resume:  # before building: the checkpoint's global batch decides this run's batches
        with phase(f"resuming from resume={cfg.resume}", "resume",
                   fix="resume from a checkpoint of this run's model and config, or start a new run"):
            resumed = open_resume(cfg, run_dir, world_size)
        if resumed is not None and resumed.note and reporter.mode != "none":
            reporter.info(resumed.note)  # batch: 32 per process x 1 = the checkpoint's global batch
    setup = build(cfg, rank=rank, world_size=world_size, batch_size=resumed.batch_size if resumed else None)
    if reporter.mode != "none":  # model: MLP, 9,610 parameters (all trainable), 0.04 MB
        reporter.info(parameter_line(setup.raw_model))
        if world_size > 1:  # several processes, one console: say so
            how = "FSDP (sharded)" if setup.strategy == "fsdp" else "DDP"
            reporter.info(f"{how}: {world_size} processes, {setup.device.type} each; rank 0 prints and writes "
                          "the run folder, the others' lines start with [rank N]")
    if reporter.mode != "none" and cfg.data.get("standardize") and setup.info.x_mean is None:
        reporter.info("data: the samples as the Dataset returns them: data.standardize applies to arrays and "
                      "files, which trainrun reads; normalize inside the Dataset (torchvision's Normalize)")
    if reporter.mode != "none" and (unused := unused_early_stopping(cfg)):
        reporter.info(f"early stopping: off (trainer.early_stopping.patience=null), so {', '.join(unused)} "
                      "is not used; set a patience to stop early")
    if reporter.mode != "none" and cfg.loss.get("class_weights") is not None:  # the numbers build chose
        reporter.info("loss: class weights " + ", ".join(
            f"{label} {w:.3g}" for label, w in zip(labels_of(setup.info), cfg.loss.class_weights, strict=False)))
    callbacks = Callbacks.from_config(cfg.get("callbacks"))  # built and checked before training
    if cfg.get("model_summary") and rank == 0:  # each layer's output shape on the first batch; changes nothing
        reporter.table(layer_table(setup))
    if cfg.preflight:  # one real batch through the built objects; changes nothing
        with phase("preflight (one batch through the model, the loss and the optimizer)", "model._target_",
                   owners=lambda: owners(setup), fix=lambda key: f"look at {key}: the message says what "
                   "failed (preflight=false would only move the same error into training)"):
            preflight.check(setup, say=reporter.info)
    if cfg.explain:  # the binding report after one step, then stop
        return explain.explain(setup)
    # lr_find=true|apply: a range test that leaves the run as it was (apply: built again with it)
    with phase("the learning-rate range test (lr_find)", "lr_finder", section=cfg.lr_finder,
               exit_code=TRAINING_ERROR, fix="the run's own training fails the same way: fix that first; "
               "or lower lr_finder.max_lr, or leave lr_find=false"):
        setup, lr_found = lr_find.find_if_asked(cfg, setup, run_dir, rank=rank, world_size=world_size,
                                                say=reporter.info)
    state = TrainState()
    if cfg.resume:
        with phase(f"resuming from resume={cfg.resume}", "resume",
                   fix="resume from a checkpoint of this run's model and config, or start a new run"):
            resume(setup, state, resumed, say=reporter.info)
    built: dict[str, list[object]] = {}  # logger.<name>._target_ -> the logger, for the boundary
    if rank == 0:  # after the resume: a refused one leaves the run's params.csv (and MLflow) alone
        loggers = make_loggers(cfg, run_dir)
        chosen = [name for name, node in (cfg.get("logger") or {}).items() if node is not None]
        built = {f"logger.{name}._target_": [logger] for name, logger in zip(chosen, loggers.loggers, strict=False)}
        reporter.use_loggers(loggers, cfg)
    built.update(callbacks.owners())  # an error in a callback's code names callbacks[i]

    with Signals(quiet=rank != 0) as signals, when_console_closes(lambda: signals.request(signal.SIGPIPE)):
        # DDP: the ranks agree on the step at which a signal stops them all
        agreed = AgreedSignals(signals, world_size, setup.device) if world_size > 1 else signals
        stop = Stop.for_setup(setup, run_dir / CHECKPOINTS, agreed)
        stop.judges.extend(judges)
        fit_started = time.perf_counter()
        anomaly = torch.autograd.detect_anomaly() if setup.settings.detect_anomaly else nullcontext()
        where = Whereabouts(callbacks.around(reporter))  # on_epoch_end before each row is logged
        training = phase(lambda: where.doing(state), "model._target_", exit_code=TRAINING_ERROR,
                         owners=lambda: owners(setup) | built,
                         fix="fix the cause (the message says where it was raised); the checkpoints "
                         "written before it are intact and resume=auto continues from the last one "
                         "(HYDRA_FULL_ERROR=1 shows the whole traceback)")
        try:  # debug=profile: torch.profiler over a few steps, hooked in through the reporter
            with training, anomaly, profiling(cfg.profiler, setup, run_dir, rank=rank, say=reporter.info) as watch:
                callbacks.start(setup, state, run_dir, stop)  # on_start; on_checkpoint hears the writer
                fit(setup, state, watch(where), stop)
            stop.writer.close()  # the last checkpoint is on disk before the summary says so
        except BaseException as err:
            stop.writer.close_quietly()
            callbacks.exception(err)
            if isinstance(err, Exception):  # the run whose curve the user most wants to see
                failed = summarize(cfg, setup, state, run_dir, signal=agreed.name, interrupted=False)
                failed.update(status="failed", error=str(err).strip().splitlines()[0] if str(err).strip()
                              else type(err).__name__, train_seconds=time.perf_counter() - fit_started,
                              total_seconds=time.perf_counter() - started, checkpoint_seconds=stop.writer.seconds)
                reporter.failed(failed, state.history, plot=cfg.plot)  # summary.json, curves.png
            reporter.loggers.close()  # an MLflow run is marked failed, event files flushed
            if setup.settings.detect_anomaly and "returned nan values" in str(err):
                raise TrainrunError(
                    f"{err.message if isinstance(err, TrainrunError) else err} (torch.autograd."
                    "detect_anomaly; the forward line that made it is in the warning above)",
                    key="trainer.detect_anomaly", exit_code=TRAINING_ERROR,
                    fix="look at that line; lower optim.lr, clip gradients or check the data") from None
            raise
        train_seconds = time.perf_counter() - fit_started

    if state.stop_reason:
        reporter.info(state.stop_reason)
    summary = summarize(cfg, setup, state, run_dir, signal=agreed.name, interrupted=stop.stopped_by_signal,
                        pruned=stop.judged is not None)
    if cfg.trainer.test_after_fit and setup.test_batches is not None and summary["status"] != "interrupted":
        # best.pt (else last.pt) on the test split, as `evaluate split=test` scores it (rank 0 alone)
        with phase("scoring the test split after training (trainer.test_after_fit)", "trainer.test_after_fit",
                   exit_code=TRAINING_ERROR, fix="the checkpoints are written: evaluate run=<run folder> "
                   "split=test gives the same numbers; trainer.test_after_fit=false skips this step"):
            test = test_after_fit(setup, run_dir)
        if test is not None:
            summary["test"] = test
    summary.update(train_seconds=train_seconds, total_seconds=time.perf_counter() - started,
                   checkpoint_seconds=stop.writer.seconds)  # the training thread's share of checkpoints
    if lr_found is not None:
        summary["lr_find"] = lr_found
    verdict = None
    if cfg.get("overfit_check") is not None and summary["status"] != "interrupted":  # debug=overfit
        verdict = summary["overfit_check"] = overfit_verdict(state.history, float(cfg.overfit_check))
    reporter.summary(summary, state.history, plot=cfg.plot)
    if callbacks:
        with phase("the callbacks' on_end", "callbacks", owners=callbacks.owners, exit_code=TRAINING_ERROR,
                   fix="fix the callback (the message says where it raised); the run's files are written"):
            callbacks.call("on_end", summary)
    if verdict is not None:
        if verdict["passed"]:
            reporter.info(verdict["message"])
        else:  # summary.json, metrics and curves are written; the exit status says it failed
            raise TrainrunError(verdict["message"], key="overfit_check", exit_code=TRAINING_ERROR,
                                fix="train explain=true shows how model, loss and optimizer are bound; "
                                "try another optim.lr, or more trainer.epochs")
    return summary


def summarize(cfg: DictConfig, setup: Setup, state: TrainState, run_dir: Path, *,
              signal: str, interrupted: bool, pruned: bool = False) -> dict[str, Any]:
    """What ``summary.json`` says of the run (timings are added by the caller)."""
    if interrupted:  # a signal stopped it between steps (one after the last step: completed)
        status = "interrupted"
    elif pruned:  # a sweep's pruner stopped it after an epoch (trainrun.cli.trial)
        status = "pruned"
    elif state.stop_reason:
        status = "stopped early"
    else:
        status = "completed"
    best = best_row(state)
    return {
        "status": status,
        "tags": [str(t) for t in cfg.get("tags") or []],
        "signal": signal or None,
        "stop_reason": state.stop_reason,
        "objective": {"name": cfg.objective, "value": objective_value(best, cfg.objective),
                      "direction": direction(cfg.objective)},
        "monitor": setup.settings.monitor,
        "best_epoch": state.best_epoch,
        "final": state.history[-1] if state.history else None,
        "best": best,
        "best_step": state.best_step,
        "epochs_run": state.epoch,
        "steps": state.step,
        "num_parameters": setup.num_parameters,
        "device": str(setup.device),
        "world_size": setup.world_size,
        "rank": setup.rank,
        "task": setup.info.task,
        "data_sizes": setup.info.sizes,
        "data": setup.info.identity.to_dict() if setup.info.identity is not None else None,
        "run_dir": str(run_dir),
        "versions": {"trainrun": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        # git commit + dirty flag, command line, package versions, the data's fingerprint
        "record": run_record(data_fingerprint=setup.info.identity.fingerprint if setup.info.identity else None),
        DIGEST: config_digest(cfg),  # what it computed: a sweep run again skips it (cli/rerun.py)
    }
