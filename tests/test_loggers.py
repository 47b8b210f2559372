"""The ``logger`` group: csv (default), tensorboard, mlflow, several at once, a user's own
logger, a logger that breaks, and a missing extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAST = ("trainer.epochs=3", "trainer.limit_train_batches=4", "print_config=false", "plot=false")


def shadow(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment where importing ``packages`` fails, as if they were not installed."""
    root = tmp_path / "shadow"
    for name in packages:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f'raise ImportError("no module named {name} (hidden by the test)")\n')
    return {"PYTHONPATH": str(root)}


def test_csv_is_the_default_and_writes_one_row_per_epoch(train):
    result = train(*FAST)
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_loss", "val_acc"} <= set(header)
    assert not (result.run_dir / "tensorboard").exists()


@pytest.mark.slow
def test_tensorboard_and_csv_together(train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(*FAST, "logger=[csv,tensorboard]")
    assert (result.run_dir / "metrics.csv").is_file()
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_acc", "lr"} <= scalars
    # Timings are charted apart from the metrics, under time/.
    assert {"time/seconds", "time/samples_per_s"} <= scalars
    assert not {"seconds", "samples_per_s"} & scalars
    assert [e.value for e in events.Scalars("time/seconds")] == pytest.approx(
        [r["seconds"] for r in result.metrics], rel=1e-6)
    val_loss = events.Scalars("val_loss")
    assert [e.step for e in val_loss] == [1, 2, 3]
    assert [e.value for e in val_loss] == pytest.approx([r["val_loss"] for r in result.metrics], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]  # the config as text
    assert list((result.run_dir / "tensorboard" / "hparams").glob("events.out.tfevents.*"))
    hparams = EventAccumulator(str(result.run_dir / "tensorboard" / "hparams")).Reload()
    results = set(hparams.Tags()["scalars"])
    assert {"best/val_loss", "best/val_acc", "objective"} <= results
    assert not {"best/seconds", "best/samples_per_s"} & results  # timings are not results


@pytest.mark.slow
def test_tensorboard_alone_writes_no_csv(train):
    result = train(*FAST, "logger=tensorboard", "logger.tensorboard.log_dir=tb")
    assert list((result.run_dir / "tb").glob("events.out.tfevents.*"))
    assert not (result.run_dir / "metrics.csv").exists()
    assert result.summary["status"] == "completed"  # summary.json is written whatever the loggers


def mlflow_run(store: Path, run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return client, client.get_run(run_id)


@pytest.mark.slow
def test_mlflow_local_store_in_the_run_folder(train, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = train(*FAST, "logger=[csv,mlflow]", "plot=true", "optim.lr=0.002")
    client, run = mlflow_run(result.run_dir / "mlruns", result.run_dir)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.002"
    assert run.data.params["model._target_"] == "trainrun.models.MLP"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in result.metrics])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "curves.png"} <= artifacts
    assert run.data.tags["trainrun.status"] == "completed"


@pytest.mark.slow
def test_mlflow_tracking_uri_and_resume_continue_the_same_run(train, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "shared-mlruns"
    uri = f"logger.mlflow.tracking_uri={store.as_uri()}"
    first = train("trainer.epochs=2", "trainer.limit_train_batches=4", "print_config=false",
                  "logger=mlflow", uri, "logger.mlflow.experiment_name=exp1")
    assert not (first.run_dir / "mlruns").exists()
    second = train("trainer.epochs=4", "trainer.limit_train_batches=4", "print_config=false",
                   "logger=mlflow", uri, "logger.mlflow.experiment_name=exp1", "resume=auto")
    assert "resumed from" in second.output
    client, run = mlflow_run(store, second.run_dir)
    assert client.get_experiment(run.info.experiment_id).name == "exp1"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # continued, not a second run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_missing_extra_names_the_pip_extra(train, tmp_path, logger, package):
    result = train(*FAST, f"logger=[csv,{logger}]", env=shadow(tmp_path, package), check=False)
    assert result.returncode == 2, result.output
    assert f"logger={logger} needs a package that is not installed" in result.output
    assert f"pip install 'trainrun[{package}]'" in result.output
    assert "Traceback" not in result.output
    assert not (result.run_dir / "metrics.csv").exists()  # stopped before training


USER_LOGGER = '''
import json, pathlib

class Recorder:
    def __init__(self, run_dir, fail_in=None):
        self.file = pathlib.Path(run_dir) / "recorded.jsonl"
        self.fail_in = fail_in

    def _write(self, kind, value):
        if kind == self.fail_in:
            raise OSError("disk on fire")
        with self.file.open("a") as f:
            f.write(json.dumps({"kind": kind, "value": value}) + "\\n")

    def log_params(self, params):
        self._write("params", params)

    def log_epoch(self, row, history):
        self._write("epoch", row)

    def log_summary(self, summary):
        self._write("summary", summary["status"])

    def close(self):
        self._write("close", None)
'''


def test_a_users_own_logger_next_to_csv(train, tmp_path):
    (tmp_path / "mylog.py").write_text(USER_LOGGER)
    result = train(*FAST, "+logger.mine._target_=mylog.Recorder")
    records = [json.loads(line) for line in (result.run_dir / "recorded.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds == ["params", "epoch", "epoch", "epoch", "summary", "close"]
    assert records[0]["value"]["trainer.epochs"] == 3
    assert [r["value"]["epoch"] for r in records[1:4]] == [1, 2, 3]
    assert records[4]["value"] == "completed"
    assert (result.run_dir / "metrics.csv").is_file()


def test_a_failing_logger_is_dropped_and_training_goes_on(train, tmp_path):
    (tmp_path / "mylog.py").write_text(USER_LOGGER)
    result = train(*FAST, "+logger.mine._target_=mylog.Recorder", "+logger.mine.fail_in=epoch")
    assert result.summary["status"] == "completed"
    assert result.output.count("logger Recorder failed in log_epoch and is now off") == 1
    assert len(result.metrics) == 3  # csv carried on


def test_a_misspelt_logger_key_is_a_config_error(train):
    result = train(*FAST, "logger=tensorboard", "logger.tensorboard.log_dirr=x", check=False)
    assert result.returncode == 2
    assert "log_dirr" in result.output
