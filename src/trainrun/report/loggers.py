"""Loggers: where each epoch's values, the config (as parameters) and the final summary go.

The ``logger`` config group chooses them, several at once with ``logger=[csv,tensorboard]``;
each chosen option adds one entry ``logger.<name>`` whose ``_target_`` is built here with the
run folder. Every logger has the same four methods, called by the reporter on rank 0 only:

``log_params(params)``    once at the start, the flattened config (``optim.lr`` -> 0.1)
``log_epoch(row, history)`` after every epoch: that epoch's values (and the whole history)
``log_summary(summary)``  once at the end (``summary.json``'s content)
``close()``

``csv`` (the default) writes ``metrics.csv``, ``metrics.jsonl`` and ``params.csv``;
``tensorboard``, ``mlflow`` and ``wandb`` need their pip extras, and say which one when it is
missing. A user's own logger is any class with these methods:
``+logger.mine._target_=mypkg.MyLogger``. Each logger is built with the run folder, and with
``resume`` and ``tags`` (``tags=[a,b]``) when its constructor takes them.

Long because it holds every built-in logger (csv, tensorboard, mlflow, wandb), each small, side
by side with the rules they share (what is charted, under which name).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainrun.errors import TRAINING_ERROR, TrainrunError
from trainrun.files import CURVES_PNG, METRICS_CSV, METRICS_JSONL, PARAMS_CSV, BackgroundWrites, atomic_write_text
from trainrun.instantiate import build_from_config

log = logging.getLogger("trainrun")

# What the reporter calls on every logger.
LOGGER_METHODS = ("log_params", "log_epoch", "log_summary", "close")
# Row keys that are bookkeeping, not values to chart.
NOT_METRICS = ("epoch", "step")
# Row keys that time the epoch: charted by the trackers (a slow epoch, a data stall shows) but
# under ``time/``, apart from the metrics, and never among the hparams results.
TIMINGS = ("seconds", "samples_per_s")


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def chart_name(key: str) -> str:
    """A row key as the trackers (tensorboard, mlflow, wandb) chart it: ``time/seconds``."""
    return f"time/{key}" if key in TIMINGS else key


def charted(row: dict[str, Any]) -> dict[str, float]:
    """The values of an epoch row that the trackers chart, by :func:`chart_name`."""
    return {chart_name(k): float(v) for k, v in row.items() if k not in NOT_METRICS and _scalar(v)}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists stay whole values."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def test_values(summary: dict[str, Any]) -> dict[str, float]:
    """``test/loss``, ``test/acc``, ...: what ``trainer.test_after_fit`` scored (none without)."""
    test = summary.get("test") or {}
    return {f"test/{k}": v for k, v in test.items() if k not in ("epoch", "samples") and _scalar(v)}


def config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain dicts and lists, resolved where it can be."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation that needs Hydra's runtime (no HydraConfig here)
        tree = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    assert isinstance(tree, dict)
    return tree  # type: ignore[return-value]


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as flat parameters (``optim.lr`` -> 0.1)."""
    return flatten(config_dict(cfg))


def missing_extra(logger: str, extra: str, err: Exception) -> TrainrunError:
    return TrainrunError(
        f"logger={logger} needs a package that is not installed ({err})",
        key="logger",
        fix=f"pip install 'trainrun[{extra}]', or leave {logger} out of logger=[...]",
    )


# --------------------------------------------------------------------------- csv


def metrics_csv(history: list[dict[str, Any]]) -> str:
    """The history as CSV text; the columns are every key seen, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


class CsvLogger:
    """``metrics.csv`` and ``metrics.jsonl``: one line appended per row (O(1) an epoch, however
    long the run), each line one fsynced ``write``. The first row a process logs rewrites both
    files whole from the history, atomically: a resumed run's files may hold rows written after
    its checkpoint, which go, so a resumed run never duplicates or loses a row. A row with a
    column the header lacks (a value a callback adds later) rewrites them whole once more.
    Essential: the run folder is the record of the run, so a failed write ends the run (the
    checkpoints stay intact) instead of dropping the logger like a remote one."""

    essential = True

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        # Written on a background thread: two fsynced files per epoch cost the training thread
        # ~0.3-0.7 s over the 30 short epochs of the digits workload. A failed write is raised by
        # the next log_epoch or close (the file keeps its previous content).
        self._background = BackgroundWrites("trainrun-metrics")
        self._columns: list[str] | None = None  # metrics.csv's header, once this process wrote it

    def log_params(self, params: dict[str, Any]) -> None:
        """``params.csv``: the flat config, one ``name,value`` row each (lists such as ``tags``
        as JSON), for grepping or joining runs without a YAML reader."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "value"])
        for name, value in params.items():
            writer.writerow([name, value if isinstance(value, str | int | float) and not isinstance(value, bool)
                             else json.dumps(value)])
        self._background.put(self.run_dir / PARAMS_CSV, out.getvalue().encode())

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._background.wait()  # the last epoch's files are written (or their failure raised)
        if self._columns is None or any(key not in self._columns for key in row):  # whole, atomically
            text = metrics_csv(history)
            self._columns = next(csv.reader([text.partition("\n")[0]]))
            self._background.put(self.run_dir / METRICS_CSV, text.encode())
            self._background.put(self.run_dir / METRICS_JSONL,
                                 "".join(json.dumps(r) + "\n" for r in history).encode())
            return
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self._columns, lineterminator="\n").writerow(row)
        self._background.put(self.run_dir / METRICS_CSV, line.getvalue().encode(), append=True)
        self._background.put(self.run_dir / METRICS_JSONL, (json.dumps(row) + "\n").encode(), append=True)

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass  # summary.json is written by the reporter for every run

    def close(self) -> None:
        self._background.close()


# --------------------------------------------------------------------------- tensorboard


class TensorBoardLogger:
    """Scalars per epoch (x = epoch; the timings under ``time/``), the config as text, and an
    hparams entry at the end (the config's scalar values against the summary's best metrics).
    View with ``tensorboard --logdir outputs``."""

    def __init__(self, run_dir: str | Path, log_dir: str = "tensorboard",
                 tags: list[str] | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise missing_extra("tensorboard", "tensorboard", err) from None
        path = Path(log_dir)
        self.log_dir = path if path.is_absolute() else Path(run_dir) / path
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.params: dict[str, Any] = {}
        self.tags = [str(t) for t in tags or []]

    def log_params(self, params: dict[str, Any]) -> None:
        self.params = params
        lines = [f"    {k}: {v}" for k, v in params.items()]  # indented: markdown code block
        self.writer.add_text("config", "\n".join(lines), 0)
        if self.tags:  # also in the hparams entry, as the ``tags`` column
            self.writer.add_text("tags", ", ".join(self.tags), 0)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        epoch = int(row["epoch"])
        for name, value in charted(row).items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def log_summary(self, summary: dict[str, Any]) -> None:
        hparams = {
            k: (v if _scalar(v) or isinstance(v, str | bool) else str(v))
            for k, v in self.params.items()
            if not k.startswith("hydra.")
        }
        if "tags" in hparams:
            hparams["tags"] = ",".join(self.tags)
        best = summary.get("best") or summary.get("final") or {}
        results = {f"best/{k}": v for k, v in best.items()
                   if k not in (*NOT_METRICS, *TIMINGS) and _scalar(v)}
        results.update(test_values(summary))
        objective = summary.get("objective") or {}
        if _scalar(objective.get("value")):
            results["objective"] = objective["value"]
        if hparams and results:
            self.writer.add_hparams(hparams, results, run_name="hparams")

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- mlflow


@contextlib.contextmanager
def quick_http(seconds: float) -> Iterator[None]:
    """MLflow's HTTP client, for the start-up check only, gives up within about ``seconds``:
    one retry, each request at most ``seconds / 2``. Its defaults (7 retries, backoff factor 2,
    120 s per request) spend nearly five minutes on an unreachable server before any error.
    Values the user set in the environment are kept; after the check MLflow's own (or the
    user's) retry settings apply again, for the logging calls of a long run."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(seconds // 2)))}
    added = [name for name in quick if name not in os.environ]
    os.environ.update({name: quick[name] for name in added})
    # urllib3 logs each retry as a warning ("Retrying (Retry(total=0...") before MLflow raises:
    # the refusal below says it once, in our words
    pool = logging.getLogger("urllib3.connectionpool")
    level, pool.level = pool.level, logging.ERROR
    try:
        yield
    finally:
        pool.setLevel(level)
        for name in added:
            os.environ.pop(name, None)


def short_reason(err: BaseException, most: int = 200) -> str:
    """An exception as one short line: its type and first line, cut at a word (``…``) when long,
    with the operating system's reason (``[Errno 111] Connection refused``) when the cut or
    the wrapping hid it."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > most:
        line = line[:most].rsplit(" ", 1)[0].rstrip(",:;(") + "…"
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    reason = found.group(0).strip() if found else ""
    shown = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return f"{shown} ({reason})" if reason and reason not in line else shown


class MLflowLogger:
    """One MLflow run per trainrun run: params (the flat config), one metric step per epoch,
    ``summary.json`` (and ``curves.png`` when there is one) as artifacts.

    With ``tracking_uri`` null the store is a local folder, ``<run>/mlruns`` (view it with
    ``mlflow ui --backend-store-uri <run>/mlruns``). MLflow 3 keeps file stores in maintenance
    mode behind ``MLFLOW_ALLOW_FILE_STORE``; trainrun sets it for local folders only. A resumed
    run (``resume=...``) continues the same MLflow run (its id is kept in ``<run>/mlflow_run_id``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        tracking_uri: str | None = None,
        experiment_name: str = "trainrun",
        run_name: str | None = None,
        resume: bool = False,
        startup_timeout: float = 10.0,
        tags: list[str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        uri = tracking_uri or (self.run_dir / "mlruns").resolve().as_uri()
        if "://" not in uri or uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise missing_extra("mlflow", "mlflow", err) from None
        self._metric, self._param, self._client_type = Metric, Param, MlflowClient
        self.uri = uri
        self.tags = [str(t) for t in tags or []]
        try:
            with quick_http(startup_timeout):  # an unreachable server fails in seconds, not minutes
                self._start(resume, experiment_name, run_name)
        except TrainrunError:
            raise
        except Exception as err:
            raise TrainrunError(
                f"could not start an MLflow run at {uri} (within logger.mlflow.startup_timeout="
                f"{startup_timeout:g} s): {short_reason(err)}",
                key="logger.mlflow.tracking_uri",
                fix="check the tracking server is reachable, or leave tracking_uri null for a "
                "local store in the run folder",
            ) from None

    def _start(self, resume: bool, experiment_name: str, run_name: str | None) -> None:
        """Continue this run folder's MLflow run (``resume``) or create one; tag it."""
        id_file = self.run_dir / "mlflow_run_id"
        self.client = self._client_type(tracking_uri=self.uri)
        self.resumed = resume and id_file.is_file()
        if self.resumed:
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(experiment_name)
            experiment = found.experiment_id if found else self.client.create_experiment(experiment_name)
            run = self.client.create_run(experiment, run_name=run_name or self.run_dir.name)
            self.run_id = run.info.run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(id_file, self.run_id + "\n")
        for tag in self.tags:  # tags=[a,b]: one MLflow tag each, searchable as tags.a = 'true'
            try:
                self.client.set_tag(self.run_id, tag, "true")
            except Exception as err:
                if "invalid" not in str(err).lower():
                    raise  # the server, not the name
                self.client.set_terminated(self.run_id, status="FAILED")
                raise TrainrunError(
                    f"MLflow refuses the tag {tag!r}: {str(err).strip().splitlines()[0][:200]}",
                    key="tags", fix="use letters, digits, _ - . : / and spaces in tags") from None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.resumed:
            return  # MLflow refuses to change a logged param; the first attempt's stay
        items = [self._param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        now, epoch = int(time.time() * 1000), int(row["epoch"])
        metrics = [self._metric(name, value, now, epoch) for name, value in charted(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, summary, "summary.json")
        curves = self.run_dir / CURVES_PNG
        if curves.is_file():
            self.client.log_artifact(self.run_id, str(curves))
        self.client.set_tag(self.run_id, "trainrun.status", str(summary.get("status")))
        self.status = "FINISHED" if summary.get("status") == "completed" else "KILLED"

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status=getattr(self, "status", "FAILED"))


# --------------------------------------------------------------------------- wandb


class WandbLogger:
    """One Weights & Biases run per trainrun run: the flat config, one history row per epoch
    (the values of ``metrics.csv``; x axis ``epoch``, timings under ``time/``), the summary's
    status, objective and best values, and ``tags``.

    Its files live under ``<run>/wandb``. ``WANDB_MODE=offline`` (or ``logger.wandb.mode=offline``)
    needs no account and no network; ``wandb sync <run>/wandb/offline-run-*`` uploads it later. A
    resumed run (``resume=...``) continues the same W&B run (its id is kept in ``<run>/wandb_run_id``).
    """

    def __init__(self, run_dir: str | Path, project: str = "trainrun", entity: str | None = None,
                 name: str | None = None, mode: str | None = None, resume: bool = False,
                 tags: list[str] | None = None) -> None:
        try:
            import wandb
        except ImportError as err:
            raise missing_extra("wandb", "wandb", err) from None
        self.run_dir = Path(run_dir)
        id_file = self.run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=project, entity=entity, name=name or self.run_dir.name, dir=str(self.run_dir),
                id=run_id, resume="allow" if run_id else None, mode=mode, tags=[str(t) for t in tags or []],
                # trainrun prints its own progress; wandb's console capture would wrap its streams
                settings=wandb.Settings(console="off"),
            )
        except Exception as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise TrainrunError(
                f"could not start a W&B run: {type(err).__name__}: {lines[0][:300] if lines else ''}",
                key="logger.wandb",
                fix="log in (wandb login, or WANDB_API_KEY), or keep the run on disk with WANDB_MODE=offline "
                "(or logger.wandb.mode=offline) and `wandb sync` it later",
            ) from None
        atomic_write_text(id_file, self.run.id + "\n")
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.exit_code = 1  # until a summary says the run completed

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.run.log({**charted(row), "epoch": int(row["epoch"]), "step": int(row["step"])})

    def log_summary(self, summary: dict[str, Any]) -> None:
        best = summary.get("best") or {}
        objective = summary.get("objective") or {}
        values: dict[str, Any] = {f"best/{k}": v for k, v in best.items()
                                  if k not in (*NOT_METRICS, *TIMINGS) and _scalar(v)}
        values.update(test_values(summary))
        values.update(status=summary.get("status"), best_epoch=summary.get("best_epoch"))
        if _scalar(objective.get("value")):
            values["objective"] = objective["value"]
        self.run.summary.update(values)
        self.exit_code = 0 if summary.get("status") in ("completed", "stopped early") else 1

    def close(self) -> None:
        self.run.finish(exit_code=self.exit_code)


# --------------------------------------------------------------------------- the set


class Loggers:
    """The chosen loggers, called together. A logger that fails after the start (a tracking
    server gone away, a full disk) is reported once and dropped: the training goes on."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = list(loggers)

    def _each(self, method: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as err:
                if getattr(logger, "essential", False):
                    raise TrainrunError(
                        f"{type(logger).__name__} could not write into the run folder: "
                        f"{type(err).__name__}: {err}; the checkpoints written before are intact",
                        key="hydra.run.dir", exit_code=TRAINING_ERROR,
                        fix="free disk space or make the run folder writable, then resume=auto",
                    ) from err
                log.warning(f"logger {type(logger).__name__} failed in {method} and is now off: "
                            f"{type(err).__name__}: {err}")
                self.loggers.remove(logger)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._each("log_epoch", row, history)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._each("log_summary", summary)

    def close(self) -> None:
        self._each("close")

    def __len__(self) -> int:
        return len(self.loggers)


def make_loggers(cfg: DictConfig, run_dir: Path) -> Loggers:
    """Build every logger chosen under ``cfg.logger`` (rank 0 only)."""
    chosen = cfg.get("logger") or {}
    built = []
    for name, node in chosen.items():
        if node is None:
            continue
        logger = build_from_config(node, f"logger.{name}", what=f"starting the {name} logger",
                                   run_dir=run_dir, resume=bool(cfg.get("resume")),
                                   tags=[str(t) for t in cfg.get("tags") or []])
        missing = [m for m in LOGGER_METHODS if not callable(getattr(logger, m, None))]
        if missing:
            raise TrainrunError(
                f"logger.{name}._target_={node._target_} built {type(logger).__name__}, which has no "
                f"{', '.join(missing)} method(s); a logger needs {', '.join(LOGGER_METHODS)}",
                key=f"logger.{name}._target_",
                fix="give the class those four methods (see trainrun.report.loggers.CsvLogger)",
            )
        built.append(logger)
    return Loggers(built)
