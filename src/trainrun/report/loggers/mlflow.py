"""``logger=mlflow``: a run in an MLflow tracking store (the ``mlflow`` extra)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainrun.errors import TrainrunError
from trainrun.files import CURVES_PNG, atomic_write_text
from trainrun.report.loggers.base import charted, missing_extra


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
