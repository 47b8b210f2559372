"""Early stopping: ``trainer.early_stopping.{patience,min_delta,monitor,mode}``; the reason is
printed and recorded in summary.json (and in last.pt, whose history decides a resumed run)."""

from __future__ import annotations

import re

import torch
from conftest import run_train


def test_a_run_stops_early_and_says_why(tmp_path):
    result = run_train("data=synthetic", "data.n_samples=400", "data.batch_size=16",
                       "model.hidden=[32]", "optim=adamw", "optim.lr=0.05", "trainer.epochs=30",
                       "trainer.early_stopping.patience=2", "plot=false", cwd=tmp_path)
    summary = result.summary
    assert summary["status"] == "stopped early"
    reason = summary["stop_reason"]
    assert reason.startswith(f"early stopping after epoch {summary['epochs_run']}: val_loss")
    assert reason in result.output
    assert summary["epochs_run"] < 30 and len(result.metrics) == summary["epochs_run"]
    # The two last epochs did not beat the best before them.
    values = [row["val_loss"] for row in result.metrics]
    assert min(values[-2:]) >= min(values[:-2])
    # last.pt holds the stopping epoch (resume=auto of a stopped run stops again at once).
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == summary["epochs_run"]
    assert saved["state"]["stop_reason"] == reason


def test_resuming_a_stopped_run_with_more_patience_continues(tmp_path):
    common = ("data=synthetic", "data.n_samples=400", "data.batch_size=16", "model.hidden=[32]",
              "optim=adamw", "optim.lr=0.05", "trainer.epochs=30", "plot=false")
    first = run_train(*common, "trainer.early_stopping.patience=1", cwd=tmp_path)
    stopped_at = first.summary["epochs_run"]
    again = run_train(*common, "trainer.early_stopping.patience=1", "resume=auto", cwd=tmp_path)
    assert again.summary["status"] == "stopped early"
    assert again.summary["epochs_run"] == stopped_at  # decided again from the history
    assert not re.search(r"^epoch\s+\d+/", again.output, re.MULTILINE), again.output  # no epoch trained
    more = run_train(*common, "trainer.early_stopping.patience=100", "trainer.epochs=" +
                     str(stopped_at + 2), "resume=auto", cwd=tmp_path)
    assert "config changed since the checkpoint: trainer.early_stopping.patience: 1 -> 100" in more.output
    assert more.summary["status"] == "completed"
    assert more.summary["epochs_run"] == stopped_at + 2


def test_monitoring_a_value_the_run_does_not_log(tmp_path):
    monitor = "val_f1"
    result = run_train("data=synthetic", "data.n_samples=100", "trainer.epochs=1", "plot=false",
                       "trainer.early_stopping.patience=1", f"trainer.early_stopping.monitor={monitor}",
                       cwd=tmp_path, check=False)
    assert result.returncode == 2, result.output
    assert f"trainer.early_stopping.monitor={monitor} is not a value this run logs" in result.output


def test_settings_of_early_stopping_while_it_is_off_are_said_not_silently_dropped(tmp_path):
    """Adversarial pass: trainer.early_stopping.monitor=val_accc (a typo) trained with exit 0 and
    no word, early stopping being off without a patience. The header says so; a sweep may still
    turn it on and off with the other settings kept, so it is no refusal."""
    result = run_train("data=synthetic", "data.n_samples=100", "trainer.epochs=1", "plot=false",
                       "trainer.early_stopping.monitor=val_accc", "trainer.early_stopping.min_delta=0.1", cwd=tmp_path)
    assert ("early stopping: off (trainer.early_stopping.patience=null), so trainer.early_stopping.monitor=val_accc, "
            "trainer.early_stopping.min_delta=0.1 is not used") in result.output
