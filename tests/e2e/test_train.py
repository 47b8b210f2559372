"""End-to-end runs of the ``train`` console script into temporary folders."""

from __future__ import annotations

import csv
import textwrap

import numpy as np
import pytest
import torch
from conftest import final_weights

FAST = ("trainer.epochs=5",)


def test_default_run_writes_the_run_folder(train):
    result = train("trainer.epochs=3")
    run = result.run_dir
    for name in ("metrics.csv", "metrics.jsonl", "summary.json", "train.log",
                 ".hydra/config.yaml", ".hydra/overrides.yaml",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_acc", "lr", "seconds", "samples_per_s"} <= set(rows[0])
    with (run / "metrics.csv").open() as f:
        assert [float(r["val_loss"]) for r in csv.DictReader(f)] == [r["val_loss"] for r in rows]
    summary = result.summary
    assert summary["status"] == "completed"
    assert summary["device"] == "cpu"
    assert summary["task"] == "multiclass"
    assert summary["objective"] == {"name": "val_loss", "value": min(r["val_loss"] for r in rows),
                                    "direction": "minimize"}
    assert summary["num_parameters"] == 64 * 128 + 128 + 128 * 10 + 10
    # one readable line per epoch on the console, also in the log
    assert "epoch 3/3" in result.proc.stdout and "val_acc" in result.proc.stdout
    assert "epoch 3/3" in (run / "train.log").read_text()


def test_default_reaches_a_good_accuracy(train):
    rows = train().metrics
    assert rows[-1]["val_acc"] > 0.95
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] / 5


@pytest.mark.parametrize(
    ("loss", "data", "metric"),
    [
        ("cross_entropy", "wine", "val_acc"),
        ("nll", "iris", "val_acc"),
        ("bce", "breast_cancer", "val_acc"),
        ("bce_logits", "breast_cancer", "val_acc"),
        ("mse", "diabetes", "val_rmse"),
        ("cross_entropy", "breast_cancer", "val_acc"),
    ],
)
def test_every_loss_trains(train, loss, data, metric):
    rows = train(f"loss={loss}", f"data={data}", "trainer.epochs=15", "optim.lr=0.005").metrics
    assert min(r["val_loss"] for r in rows[1:]) < rows[0]["val_loss"]
    assert metric in rows[-1]
    if metric == "val_acc":
        assert rows[-1]["val_acc"] > 0.85


@pytest.mark.parametrize("optim", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_trains(train, optim):
    result = train(f"optim={optim}", *FAST)
    rows = result.metrics
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert rows[-1]["val_acc"] > 0.85
    config = (result.run_dir / ".hydra" / "config.yaml").read_text()
    names = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
    assert f"_target_: torch.optim.{names[optim]}\n" in config


@pytest.mark.parametrize("model", ["linear", "cnn", "mlp"])
def test_every_model_trains_on_digits(train, model):
    rows = train(f"model={model}", *FAST).metrics
    assert rows[-1]["val_acc"] > 0.9


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_device_choice(train, device):
    assert train(f"device={device}", "trainer.epochs=1").summary["device"] == "cpu"


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_synthetic_data_for_each_task(train, task):
    loss = {"regression": "mse", "binary": "bce_logits", "multiclass": "cross_entropy"}[task]
    result = train("data=synthetic", f"data.task={task}", f"loss={loss}", *FAST)
    assert result.summary["task"] == task
    assert result.metrics[-1]["val_loss"] < result.metrics[0]["val_loss"]


def test_csv_file_with_text_labels(train, tmp_path):
    rng = np.random.default_rng(0)
    with (tmp_path / "flowers.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["petal", "sepal", "note", "label"])
        for _ in range(150):
            kind = rng.integers(3)
            writer.writerow([kind + rng.normal(0, 0.2), -kind + rng.normal(0, 0.2), "x",
                             ["setosa", "versicolor", "virginica"][kind]])
    result = train("data=csv", "data.path=flowers.csv", "data.target=label",
                   "data.features=[petal,sepal]", "data.task=multiclass", "data.batch_size=16",
                   "trainer.epochs=10")
    assert result.summary["task"] == "multiclass"
    assert result.metrics[-1]["val_acc"] > 0.9


def test_npz_file_regression(train, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = x @ np.arange(1, 6, dtype=np.float32) + 3
    np.savez(tmp_path / "points.npz", X=x, y=y)
    result = train("data=npz", f"data.path={tmp_path / 'points.npz'}", "loss=mse", "model=linear",
                   "optim.lr=0.05", "trainer.epochs=30")
    assert result.summary["task"] == "regression"
    # RMSE is reported in the target's own units; the relation is exactly linear
    assert result.metrics[-1]["val_rmse"] < 0.1 * float(np.std(y))


def test_user_model_from_the_working_folder(train, tmp_path):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, in_features, out_features, width=32):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.Tanh(),
                                          nn.Linear(width, out_features))

            def forward(self, x):
                return self.body(x)
    """))
    result = train("model._target_=mynet.Net", "+model.width=48", *FAST)
    assert result.metrics[-1]["val_acc"] > 0.9
    weights = final_weights(result.run_dir)
    assert weights["body.1.weight"].shape == (48, 64)


def test_user_data_source_and_optimizer(train, tmp_path):
    (tmp_path / "mydata.py").write_text(textwrap.dedent("""
        import numpy as np

        def blobs(n=400, seed=0):
            rng = np.random.default_rng(seed)
            y = rng.integers(0, 2, size=n)
            x = rng.normal(size=(n, 3)) + y[:, None] * 3.0
            return x.astype("float32"), y
    """))
    result = train("data._target_=mydata.blobs", "+data.n=500", "loss=bce_logits",
                   "optim._target_=torch.optim.NAdam", "optim.lr=0.01", *FAST)
    assert result.summary["task"] == "binary"
    assert result.summary["data_sizes"]["train"] == 400
    assert result.metrics[-1]["val_acc"] > 0.9


def test_same_seed_same_weights_and_metrics(tmp_path, train):
    args = ("model.dropout=0.2", "trainer.epochs=3")
    a = train(*args, run_dir=tmp_path / "a")
    b = train(*args, run_dir=tmp_path / "b")
    wa, wb = final_weights(a.run_dir), final_weights(b.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)
    c = train(*args, "trainer.seed=1", run_dir=tmp_path / "c")
    assert not torch.equal(final_weights(c.run_dir)["1.weight"], wa["1.weight"])


def test_objective_is_returned_for_another_metric(train):
    result = train("objective=val_acc", "trainer.epochs=2")
    assert result.summary["objective"]["direction"] == "maximize"
    assert result.summary["objective"]["value"] == max(r["val_acc"] for r in result.metrics)
