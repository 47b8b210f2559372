"""The ``evaluate`` command: rebuilds a run from the config in its checkpoint, scores a split,
writes eval.json / predictions.csv; its errors are config errors (exit 2, no traceback)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import run_command, run_train

TRAIN = ("data=synthetic", "data.n_samples=300", "data.test_fraction=0.2", "data.batch_size=16",
         "model.hidden=[32]", "model.dropout=0.2", "trainer.epochs=3", "plot=false")


def evaluate(*overrides: str, cwd: Path, check: bool = True):
    return run_command("evaluate", *overrides, cwd=cwd, check=check)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("evaluate")
    run_train(*TRAIN, cwd=cwd, run_dir=cwd / "run")
    return cwd / "run"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_best_on_val_reproduces_the_logged_best(trained):
    summary = json.loads((trained / "summary.json").read_text())
    result = evaluate(f"run={trained}", cwd=trained.parent)
    report = json.loads((trained / "eval" / "best_val" / "eval.json").read_text())
    assert report["epoch"] == summary["best_epoch"]
    assert report["split"] == "val" and report["samples"] == summary["data_sizes"]["val"]
    assert report["loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-6)
    assert report["acc"] == pytest.approx(summary["best"]["val_acc"], abs=1e-6)
    assert report["checkpoint"] == str((trained / "checkpoints" / "best.pt").resolve())
    assert "loss" in result.output and "eval.json" in result.output
    assert not (trained.parent / "outputs").exists()  # evaluate makes no Hydra run folder


def test_test_split_with_predictions(trained):
    out = trained.parent / "scored"
    evaluate(f"run={trained}", "split=test", "predictions=true", f"out={out}", cwd=trained.parent)
    report = json.loads((out / "eval.json").read_text())
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == report["samples"] == 60
    assert list(rows[0]) == ["row", "target", "prediction", "p_0", "p_1", "p_2"]
    for row in rows:
        assert sum(float(row[f"p_{c}"]) for c in range(3)) == pytest.approx(1, abs=1e-5)
        assert row["prediction"] == max("012", key=lambda c: float(row[f"p_{c}"]))
    accuracy = sum(r["target"] == r["prediction"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(report["acc"])
    # "row" is the sample's row in the generated data: distinct, in range.
    positions = [int(r["row"]) for r in rows]
    assert len(set(positions)) == len(positions) and max(positions) < 300


def test_a_checkpoint_file_and_the_train_split(trained):
    file = trained / "checkpoints" / "last.pt"
    evaluate(f"run={file}", "split=train", cwd=trained.parent)
    report = json.loads((trained / "eval" / "last_train" / "eval.json").read_text())
    summary = json.loads((trained / "summary.json").read_text())
    assert report["epoch"] == 3 and report["samples"] == summary["data_sizes"]["train"]
    assert math.isfinite(report["loss"]) and 0 <= report["acc"] <= 1


def test_other_data_and_device(trained):
    """data=<option> replaces the run's data config (same shapes, other samples); device= the
    device."""
    out = trained.parent / "other"
    evaluate(f"run={trained}", "data=synthetic", "data.n_samples=500", "data.seed=7",
             "device=cpu", f"out={out}", cwd=trained.parent)
    report = json.loads((out / "eval.json").read_text())
    assert report["data_changed"] is True and report["data"]["seed"] == 7
    assert report["device"] == "cpu"
    assert report["samples"] == 100  # 20 % of 500: the new data's own split


def test_regression_predictions_are_in_the_targets_units(tmp_path):
    run_train("data=diabetes", "loss=mse", "trainer.epochs=2", "plot=false", cwd=tmp_path)
    evaluate(f"run={tmp_path / 'run'}", "predictions=true", cwd=tmp_path)
    folder = tmp_path / "run" / "eval" / "best_val"
    report = json.loads((folder / "eval.json").read_text())
    rows = read_csv(folder / "predictions.csv")
    from trainrun.data.sources import load_sklearn

    _, y = load_sklearn("diabetes")
    for row in rows:  # the target column is the data set's own value for that row
        assert float(row["target"]) == pytest.approx(float(y[int(row["row"])]), rel=1e-5)
    rmse = math.sqrt(sum((float(r["prediction"]) - float(r["target"])) ** 2 for r in rows) / len(rows))
    assert rmse == pytest.approx(report["rmse"], rel=1e-4)


def test_errors_are_config_errors(trained, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        f"run={tmp_path / 'missing'}": "no such folder or file",
        f"run={empty}": "no checkpoint",
        f"run={trained} checkpoint=nope.pt": "checkpoints/ holds best.pt, last.pt",
        "split=val": "evaluate needs run=",
        # new data the weights do not fit, and an out= that is a file: one paragraph each
        f"run={trained} data=synthetic data.n_features=5": "the model was trained on 20",
        f"run={trained} out={trained / 'summary.json'}": "key: out",
    }
    for args, message in cases.items():
        result = evaluate(*args.split(), cwd=tmp_path, check=False)
        assert result.returncode == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_split_the_run_does_not_have(tmp_path):
    run_train("data=synthetic", "data.n_samples=100", "trainer.epochs=1", "plot=false", cwd=tmp_path)
    result = evaluate(f"run={tmp_path / 'run'}", "split=test", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.output
    assert "has no test split (data.test_fraction=0.0)" in result.output
    assert "Traceback" not in result.output


