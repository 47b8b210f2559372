"""The ``logger`` group: csv (default), tensorboard, mlflow, wandb (offline), several at once,
tags in each, a user's own logger, a logger that breaks, an unreachable tracking server, and a
missing extra."""

from __future__ import annotations

import csv
import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import shadow

FAST = ("trainer.epochs=3", "trainer.limit_train_batches=4", "print_config=false", "plot=false")


def test_csv_is_the_default_and_writes_one_row_per_epoch(train):
    result = train(*FAST)
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_loss", "val_acc"} <= set(header)
    assert not (result.run_dir / "tensorboard").exists()


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


def test_mlflow_local_store_in_the_run_folder(train, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = train(*FAST, "logger=[csv,mlflow]", "plot=true", "optim.lr=0.002")
    client, run = mlflow_run(result.run_dir / "mlruns", result.run_dir)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.002"
    assert run.data.params["model._target_"] == "trainrun.build.models.MLP"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in result.metrics])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "curves.png"} <= artifacts
    assert run.data.tags["trainrun.status"] == "completed"


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


@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"),
                                             ("wandb", "wandb")])
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


# --------------------------------------------------------------------------- mlflow, unreachable


def test_mlflow_with_nothing_listening_fails_in_seconds(train, tmp_path):
    """Connection refused: the start-up check gives up after one retry (MLflow's own defaults
    retry for nearly five minutes), before training, with the documented error."""
    with socket.socket() as probe:  # a free port on this machine, closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    result = train(*FAST, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
                   check=False, timeout=120)
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.output
    assert f"could not start an MLflow run at http://127.0.0.1:{port}" in result.output
    assert "key: logger.mlflow.tracking_uri" in result.output and "Traceback" not in result.output
    assert not (result.run_dir / "metrics.csv").exists()  # stopped before training
    assert seconds < 30, seconds  # (about 5 s here; the old behaviour: 287 s)


def test_mlflow_with_a_server_that_never_answers_fails_within_the_startup_timeout(train, tmp_path):
    """A server that accepts the connection and never replies (a hung proxy): each request
    waits at most half of logger.mlflow.startup_timeout, one retry, then the error."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept_and_hold() -> None:
        server.settimeout(0.2)
        while not done.is_set():  # bounded: ends with the test
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        started = time.perf_counter()
        result = train(*FAST, "logger=mlflow",
                       f"logger.mlflow.tracking_uri=http://127.0.0.1:{server.getsockname()[1]}",
                       "logger.mlflow.startup_timeout=4", check=False, timeout=120)
        seconds = time.perf_counter() - started
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
    assert result.returncode == 2, result.output
    assert "could not start an MLflow run" in result.output and "startup_timeout=4 s" in result.output
    assert held, "the run never reached the server"
    assert seconds < 30, seconds  # 2 requests x 2 s, plus start-up


# --------------------------------------------------------------------------- wandb (offline)


def wandb_records(run_dir: Path) -> list:
    """Every record of the offline W&B run in ``run_dir``, read from its ``run-<id>.wandb`` file
    (a LevelDB-style log of protobuf records: 7-byte W&B header, 32 KiB blocks, each record
    chunk behind a 7-byte header of crc, length and type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    data, block = files[0].read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(run_dir: Path) -> dict:
    """The offline run as plain values: its id, tags, config, history rows and summary."""
    out: dict = {"history": [], "config": {}, "summary": {}, "tags": None, "id": None}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["tags"] = record.run.run_id, list(record.run.tags)
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
    return out


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """Offline, and W&B's own settings and caches inside the test's folder, not the home."""
    return {"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}


def test_wandb_offline_holds_the_values_of_metrics_csv(train, tmp_path):
    pytest.importorskip("wandb")
    result = train(*FAST, "logger=[csv,wandb]", "optim.lr=0.002", env=wandb_env(tmp_path))
    run = wandb_run(result.run_dir)
    assert run["id"] == (result.run_dir / "wandb_run_id").read_text().strip()
    assert run["config"]["optim.lr"] == 0.002
    assert run["config"]["model._target_"] == "trainrun.build.models.MLP"
    metrics = result.metrics
    assert [r["epoch"] for r in run["history"]] == [r["epoch"] for r in metrics] == [1, 2, 3]
    for logged, row in zip(run["history"], metrics, strict=True):
        for key, value in row.items():  # every value of metrics.csv, timings under time/
            name = f"time/{key}" if key in ("seconds", "samples_per_s") else key
            assert logged[name] == pytest.approx(value, rel=1e-9), (key, logged, row)
    assert run["summary"]["status"] == "completed"
    assert run["summary"]["best/val_loss"] == pytest.approx(result.summary["best"]["val_loss"])
    assert run["summary"]["objective"] == pytest.approx(result.summary["objective"]["value"])


def test_wandb_resume_continues_the_same_run(train, tmp_path):
    pytest.importorskip("wandb")
    env = wandb_env(tmp_path)
    first = train("trainer.epochs=2", "trainer.limit_train_batches=4", "print_config=false",
                  "plot=false", "logger=wandb", env=env)
    run_id = (first.run_dir / "wandb_run_id").read_text().strip()
    second = train("trainer.epochs=3", "trainer.limit_train_batches=4", "print_config=false",
                   "plot=false", "logger=wandb", "resume=auto", env=env)
    assert "resumed from" in second.output
    assert (second.run_dir / "wandb_run_id").read_text().strip() == run_id
    offline = sorted((second.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)  # one run, two parts


# --------------------------------------------------------------------------- tags


def test_tags_reach_the_summary_and_every_logger(train, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = train(*FAST, "logger=[csv,tensorboard,mlflow,wandb]", "tags=[baseline,v2]",
                   env=wandb_env(tmp_path))
    assert result.summary["tags"] == ["baseline", "v2"]
    with (result.run_dir / "params.csv").open(newline="") as f:
        params = {row["name"]: row["value"] for row in csv.DictReader(f)}
    assert json.loads(params["tags"]) == ["baseline", "v2"] and params["optim.lr"] == "0.001"

    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    text = events.Tensors("tags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == "baseline, v2"

    _, run = mlflow_run(result.run_dir / "mlruns", result.run_dir)
    assert run.data.tags["baseline"] == "true" and run.data.tags["v2"] == "true"
    assert wandb_run(result.run_dir)["tags"] == ["baseline", "v2"]


def test_a_tag_mlflow_refuses_names_the_tags_key(train, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = train(*FAST, "logger=[csv,mlflow]", "tags=[ok,'a=b']", check=False)
    assert result.returncode == 2, result.output
    assert "MLflow refuses the tag 'a=b'" in result.output and "key: tags" in result.output
    assert not (result.run_dir / "metrics.csv").exists()


def test_no_tags_is_an_empty_list(train):
    result = train(*FAST)
    assert result.summary["tags"] == []
