"""What the console shows: a short header (overrides, run folder, model size, preflight), one
line per epoch, the summary table; the config tree only when asked; a layer table with
``model_summary=true`` that changes nothing; a sweep prints its overrides once and each job one
line, the rest going to each job's ``train.log``."""

from __future__ import annotations

import torch
from conftest import run_command

CNN = ("model=cnn", "model.channels=[4]", "model.hidden=8", "data=synthetic", "data.n_samples=120",
       "data.image_shape=[1,4,5]", "trainer.epochs=2", "plot=false")


def test_a_short_header_then_one_line_per_epoch(train, tmp_path):
    plain = train(*CNN, run_dir=tmp_path / "plain")
    lines = plain.proc.stdout.splitlines()
    assert lines[0] == "overrides: trainer.progress=epoch " + " ".join(CNN)
    assert lines[1] == f"run folder: {plain.run_dir}"
    assert lines[2] == "model: CNN, 203 parameters (all trainable), 0.00081 MB"  # 203 float32
    assert lines[3].startswith("preflight ok: batch [32,1,4,5]")
    assert lines[4].startswith("epoch 1/2") and lines[5].startswith("epoch 2/2")
    assert "├──" not in plain.output and "test (" not in plain.output  # no tree; no test split
    assert len(lines) <= 21, plain.proc.stdout  # header 4, epochs 2, the table and the folder
    log = (plain.run_dir / "train.log").read_text()
    assert "model: CNN" in log and "trainrun: completed" in log  # the table is in the log too

    summarized = train(*CNN, "model_summary=true", run_dir=tmp_path / "summarized")
    out = summarized.proc.stdout
    for row in ("input", "features.0", "Conv2d", "[32, 4, 4, 5]", "classifier.3", "[32, 3]"):
        assert row in out, row
    assert out.index("model: CNN") < out.index("features.0") < out.index("preflight ok")
    weights = [torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
               for r in (plain, summarized)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the summary changed nothing


def test_a_sweep_prints_what_its_jobs_share_once(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_command("train", "-m", "optim.lr=0.1,0.01", "data=synthetic", "data.n_samples=120",
                         "trainer.epochs=2", "plot=false", "print_config=true", f"hydra.sweep.dir={sweep_dir}",
                         cwd=tmp_path)
    out = result.proc.stdout
    assert out.count("sweep: optim.lr=0.1,0.01 ") == 1 and out.count("├── optim") == 1  # once, not per job
    assert out.count("  completed: val_loss ") == 2  # each job: one line
    assert "epoch 1/2" not in out and "preflight ok" not in out and "run folder:" not in out
    for job in ("0", "1"):
        log = (sweep_dir / job / "train.log").read_text()
        assert "epoch 2/2" in log and "preflight ok" in log and "trainrun: completed" in log
    tree = [line for line in out.splitlines() if line.startswith(("config", "├", "│", "└"))]
    assert len(out.splitlines()) - len(tree) < 25, out  # 2 jobs: 2 + 2 x 2 lines, the sweep's table
