"""``trainer.val_every_n_steps``: validation inside long epochs, end to end. It changes no weight
(the same bits as without it); each validation is a row that best.pt, early stopping and the
curves follow; a run killed between validations resumes to the same weights and rows."""

from __future__ import annotations

import signal

import pytest
import torch
from conftest import run_train
from killpoints import launch, metric_rows, same_weights, weights

SMALL = ("data=synthetic", "data.n_samples=400", "data.batch_size=16", "model.hidden=[32]", "trainer.epochs=3",
         "plot=false")  # 20 steps per epoch


def test_validating_inside_epochs_changes_no_weight(tmp_path):
    plain = run_train(*SMALL, cwd=tmp_path, run_dir=tmp_path / "plain")
    inside = run_train(*SMALL, "trainer.val_every_n_steps=7", cwd=tmp_path, run_dir=tmp_path / "inside")
    assert same_weights(weights(plain.run_dir), weights(inside.run_dir))
    rows = inside.metrics
    assert [r["step"] for r in rows] == [7, 14, 20, 21, 28, 35, 40, 42, 49, 56, 60]
    ends = [r for r in rows if r["step"] % 20 == 0]
    assert [r["val_loss"] for r in ends] == [r["val_loss"] for r in plain.metrics]  # the same validations
    assert "epoch 1/3 step 7  train_loss" in inside.output and "epoch 1/3  train_loss" in inside.output


def test_best_pt_and_early_stopping_follow_the_validations(tmp_path):
    done = run_train(*SMALL, "trainer.epochs=30", "optim.lr=0.05", "trainer.val_every_n_steps=5",
                     "trainer.early_stopping.patience=3", cwd=tmp_path)
    summary, rows = done.summary, done.metrics
    assert summary["status"] == "stopped early" and "for 3 validations" in summary["stop_reason"]
    best = min(rows, key=lambda r: r["val_loss"])
    assert (summary["best_epoch"], summary["best_step"]) == (best["epoch"], best["step"])
    assert summary["objective"]["value"] == best["val_loss"]
    saved = torch.load(done.run_dir / "checkpoints" / "best.pt", weights_only=True)["state"]
    assert saved["step"] == best["step"]  # best.pt was written at that validation, in its epoch
    assert rows[-1]["step"] - best["step"] == 3 * 5  # three validations without improvement


@pytest.mark.timeout(1200)  # four runs, two of them killed and resumed
def test_a_run_killed_between_validations_resumes_exactly(tmp_path):
    overrides = (*SMALL, "trainer.val_every_n_steps=7", "checkpoint.every_n_steps=5", "model.dropout=0.3")
    reference = run_train(*overrides, cwd=tmp_path, run_dir=tmp_path / "reference")
    run_dir = tmp_path / "killed"
    for i, point in enumerate(["step:13", "step:31"]):  # after a mid-epoch validation; in epoch 2
        proc = launch(point, *overrides, *(("resume=auto",) if i else ()), run_dir=run_dir)
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    run_train(*overrides, "resume=auto", cwd=tmp_path, run_dir=run_dir)
    assert same_weights(weights(run_dir), weights(reference.run_dir))
    assert metric_rows(run_dir) == metric_rows(reference.run_dir)


@pytest.mark.timeout(1200)
def test_a_run_stopped_at_a_validation_step_validates_there_when_resumed(tmp_path):
    """Adversarial pass: a checkpoint written at a validation step (checkpoint.every_n_steps, or a
    signal's) is saved before that validation's row; resumed from it, the run went on training,
    and its metrics lost the row (the next one averaged both windows), exit 0. Now a run resumed
    there validates first: the same rows as the run never stopped."""
    overrides = (*SMALL, "trainer.val_every_n_steps=7", "checkpoint.every_n_steps=7", "model.dropout=0.3")
    reference = run_train(*overrides, cwd=tmp_path, run_dir=tmp_path / "reference")
    run_dir = tmp_path / "stopped"
    killed = launch("step:7", *overrides, run_dir=run_dir)  # right after step 7's checkpoint, before its row
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    stopped = launch("SIGTERM@21", *overrides, "resume=auto", run_dir=run_dir)  # epoch 2's first validation step
    assert stopped.returncode == 143, stopped.stdout + stopped.stderr
    run_train(*overrides, "resume=auto", cwd=tmp_path, run_dir=run_dir)
    assert same_weights(weights(run_dir), weights(reference.run_dir))
    assert metric_rows(run_dir) == metric_rows(reference.run_dir)


def test_a_run_stopped_early_inside_an_epoch_stops_again_when_resumed(tmp_path):
    """Adversarial pass: early stopping at a validation inside an epoch ended the run; resumed,
    it trained on (a new row, exit 0) instead of stopping at once as at an epoch's end."""
    overrides = (*SMALL, "trainer.val_every_n_steps=3", "trainer.early_stopping.patience=1",
                 "trainer.early_stopping.min_delta=10")
    first = run_train(*overrides, cwd=tmp_path, run_dir=tmp_path / "run")
    assert first.summary["status"] == "stopped early" and first.metrics[-1]["step"] == 6
    again = run_train(*overrides, "resume=auto", cwd=tmp_path, run_dir=tmp_path / "run")
    assert again.summary["status"] == "stopped early" and again.metrics == first.metrics, again.output
