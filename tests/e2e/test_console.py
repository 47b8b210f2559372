"""What the console shows: a short header (overrides, run folder, model size, preflight), one
line per epoch, the summary table; the config tree only when asked; a layer table with
``model_summary=true`` that changes nothing; a sweep prints its overrides once and each job one
line, the rest going to each job's ``train.log``."""

from __future__ import annotations

import json

import torch
from conftest import run_command

# A test split with trainer.test_after_fit=false (the sweep: no test score, no test column).
CNN = ("model=cnn", "model.channels=[4]", "model.hidden=8", "data=synthetic", "data.n_samples=120",
       "data.image_shape=[1,4,5]", "data.test_fraction=0.2", "trainer.test_after_fit=false", "trainer.epochs=2",
       "plot=false")


def test_a_short_header_then_one_line_per_epoch(train, tmp_path):
    """Also the test after fit without checkpoints: the weights in memory are scored."""
    plain = train(*CNN, "trainer.test_after_fit=true", "checkpoint.enabled=false", run_dir=tmp_path / "plain")
    lines = plain.proc.stdout.splitlines()
    assert lines[0] == ("overrides: trainer.progress=epoch " + " ".join(CNN)
                        + " trainer.test_after_fit=true checkpoint.enabled=false")
    assert lines[1] == f"run folder: {plain.run_dir}"
    assert lines[2] == "threads: 1 (OMP_NUM_THREADS=1)"  # the tests' environment sets it
    assert lines[3] == "model: CNN, 203 parameters (all trainable), 0.00081 MB"  # 203 float32
    assert lines[4].startswith("preflight ok: batch [32,1,4,5]")
    assert lines[5].startswith("epoch 1/2") and lines[6].startswith("epoch 2/2")
    assert "├──" not in plain.output  # no config tree
    test = plain.summary["test"]
    assert test["checkpoint"] == "final weights (checkpoint.enabled=false)" and test["epoch"] is None
    assert test["samples"] == 24 and 0 <= test["acc"] <= 1 and "test (final)" in plain.output
    assert not (plain.run_dir / "checkpoints").exists()
    assert len(lines) <= 22, plain.proc.stdout  # header 5, epochs 2, the table and the folder
    log = (plain.run_dir / "train.log").read_text()
    assert "model: CNN" in log and "trainrun: completed" in log  # the table is in the log too


def test_a_sweep_prints_what_its_jobs_share_once(tmp_path):
    """Two jobs that differ only in model_summary: the layer table (in job 0's log) changes
    nothing in training."""
    sweep_dir = tmp_path / "sweep"
    result = run_command("train", "-m", "model_summary=true,false", *CNN, "print_config=true",
                         f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    out = result.proc.stdout
    assert out.count("sweep: model_summary=true,false ") == 1 and out.count("├── optim") == 1  # once
    assert out.count("  completed: val_loss ") == 2  # each job: one line
    assert "epoch 1/2" not in out and "preflight ok" not in out and "run folder:" not in out
    tree = [line for line in out.splitlines() if line.startswith(("config", "├", "│", "└"))]
    assert len(out.splitlines()) - len(tree) < 25, out  # 2 jobs: 2 + 2 x 2 lines, the sweep's table
    logs = [(sweep_dir / job / "train.log").read_text() for job in ("0", "1")]
    for log in logs:
        assert "epoch 2/2" in log and "preflight ok" in log and "trainrun: completed" in log
    table = logs[0][logs[0].index("model summary"):logs[0].index("preflight ok")]
    for row in ("input", "features.0", "Conv2d", "[32, 4, 4, 5]", "classifier.3", "[32, 3]"):
        assert row in table, row
    assert "model summary" not in logs[1]
    assert not any("test" in json.loads((sweep_dir / job / "summary.json").read_text()) for job in "01")
    weights = [torch.load(sweep_dir / job / "checkpoints" / "last.pt", weights_only=True)["model"] for job in "01"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the summary changed nothing
