"""``lr_find=true|apply``: the learning-rate range test, its files, a run it
leaves bit-identical, and a run trained with its suggestion."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import saved_checkpoint

FAST = ("trainer.epochs=2", "print_config=false")


def weights(run_dir):
    return saved_checkpoint(run_dir)["model"]  # last.pt, or the sharded last/ of several processes


def rows(run_dir) -> list[dict[str, str]]:
    with (run_dir / "lr_find.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_lr_find_true_writes_the_test_and_leaves_the_run_bit_identical(train, tmp_path):
    plain = train(*FAST, "model.dropout=0.2", run_dir=tmp_path / "plain")
    found = train(*FAST, "model.dropout=0.2", "lr_find=true", run_dir=tmp_path / "found")

    table = rows(found.run_dir)
    assert 20 < len(table) <= 100 and float(table[0]["lr"]) == 1e-8
    assert [int(r["step"]) for r in table] == list(range(1, len(table) + 1))
    marked = [r for r in table if r["suggested"] == "1"]
    record = found.summary["lr_find"]
    assert len(marked) == 1 and float(marked[0]["lr"]) == record["suggestion"]
    assert record["mode"] == "true" and record["steps"] == len(table) and record["configured_lr"] == 0.001
    assert 1e-5 < record["suggestion"] < 1.0
    assert f"suggested lr {record['suggestion']:.4g}" in found.output
    assert (found.run_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"

    # the model, optimizer, scheduler and random streams were put back: the same training
    a, b = weights(plain.run_dir), weights(found.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), "lr_find=true changed the run"
    assert [r["val_loss"] for r in plain.metrics] == [r["val_loss"] for r in found.metrics]


def test_lr_find_apply_trains_as_if_the_suggestion_had_been_typed(train, tmp_path):
    applied = train(*FAST, "optim=sgd", "lr_find=apply", "scheduler=cosine", run_dir=tmp_path / "applied")
    lr = applied.summary["lr_find"]["suggestion"]
    assert f"lr_find=apply: training with optim.lr={lr:.4g} (configured: 0.1)" in applied.output
    saved = torch.load(applied.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["optim"]["lr"] == lr  # the config the run reports
    with (applied.run_dir / "params.csv").open(newline="") as f:
        assert {r["name"]: r["value"] for r in csv.DictReader(f)}["optim.lr"] == repr(lr)
    assert applied.metrics[0]["lr"] <= lr and applied.metrics[0]["lr"] == pytest.approx(lr, rel=0.1)

    typed = train(*FAST, "optim=sgd", f"optim.lr={lr!r}", "scheduler=cosine", run_dir=tmp_path / "typed")
    a, b = weights(applied.run_dir), weights(typed.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # A resumed run keeps the applied rate from its checkpoint and runs no second test.
    resumed = train("trainer.epochs=3", "print_config=false", "optim=sgd", "lr_find=apply",
                    "scheduler=cosine", "resume=auto", run_dir=tmp_path / "applied")
    assert f"lr_find=apply: skipped, the run resumes from {applied.run_dir}" in resumed.output
    assert f"(optim.lr={lr:g})" in resumed.output
    assert "optim.lr:" not in resumed.output  # no "config changed since the checkpoint" for it
    assert resumed.summary["epochs_run"] == 3


def test_a_range_that_does_not_go_up_is_a_config_error(train):
    result = train("lr_find=true", "lr_finder.min_lr=0.1", "lr_finder.max_lr=0.01", check=False)
    assert result.returncode == 2, result.output
    assert "lr_finder.min_lr=0.1 is not below lr_finder.max_lr=0.01" in result.output


def test_a_misspelt_lr_find_is_a_config_error(train):
    result = train("lr_find=aply", check=False)
    assert result.returncode == 2, result.output
    assert "lr_find=aply is not allowed: it must be one of false, true, apply" in result.output
    assert "did you mean apply?" in result.output and "Traceback" not in result.output


def test_lr_find_under_accumulation_and_with_few_batches(train, tmp_path):
    """iris has 4 batches an epoch: 30 steps of 2 accumulated batches span 15 epochs."""
    result = train("data=iris", "trainer.epochs=1", "print_config=false", "lr_find=true",
                   "lr_finder.steps=30", "lr_finder.early_stop_threshold=null",
                   "trainer.accumulate_grad_batches=2")
    assert len(rows(result.run_dir)) == 30
    assert result.summary["lr_find"]["stopped_early"] is False


def test_lr_find_under_ddp_agrees_across_ranks_and_changes_nothing(train, tmp_path):
    """Two processes: each step's loss is averaged over the ranks, so both take the same
    decisions (no rank waits for another in a collective), rank 0 writes the files, and the
    training after it is bit-identical to one without the test."""
    found = train("trainer.devices=2", "trainer.epochs=1", "print_config=false", "lr_find=true",
                  run_dir=tmp_path / "found")
    plain = train("trainer.devices=2", "trainer.epochs=1", "print_config=false", run_dir=tmp_path / "plain")
    assert found.output.count("lr_find: ") == 1 and len(rows(found.run_dir)) > 20
    a, b = weights(plain.run_dir), weights(found.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


USER_DATA = '''
import torch

class Noisy(torch.utils.data.Dataset):
    def __init__(self, n=300):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 5, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]
'''


def test_lr_find_on_a_user_dataset_changes_nothing(train, tmp_path):
    """The DataLoader path (shuffled, dropout): its sampler and worker seeds are per epoch, the
    global random stream is restored, so the training is the same."""
    (tmp_path / "noisy.py").write_text(USER_DATA)
    common = ("data._target_=noisy.Noisy", "model.dropout=0.3", "trainer.epochs=2", "print_config=false")
    found = train(*common, "lr_find=true", "lr_finder.steps=40", run_dir=tmp_path / "found")
    plain = train(*common, run_dir=tmp_path / "plain")
    assert len(rows(found.run_dir)) <= 40
    a, b = weights(plain.run_dir), weights(found.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau"])
def test_lr_find_with_a_scheduler_leaves_it_as_it_was(train, tmp_path, scheduler):
    """The range test sets the rates itself: a per-step OneCycleLR planned for 45 steps is not
    stepped 100 more times (it would refuse), and the training after it is unchanged."""
    common = (f"scheduler={scheduler}", "trainer.epochs=1", "print_config=false")
    found = train(*common, "lr_find=true", run_dir=tmp_path / "found")
    plain = train(*common, run_dir=tmp_path / "plain")
    a, b = weights(plain.run_dir), weights(found.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in plain.metrics] == [r["lr"] for r in found.metrics]


FAILS_LATER = '''
from torch import nn

class FailsLater(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 12:  # after preflight, inside the range test
            raise RuntimeError("boom at call 12")
        return self.fc(x)
'''


def test_a_failure_inside_the_range_test_is_one_paragraph(train, tmp_path):
    (tmp_path / "later.py").write_text(FAILS_LATER)
    result = train("model._target_=later.FailsLater", "lr_find=true", "print_config=false", check=False)
    assert result.returncode == 1, result.output
    assert "the learning-rate range test (lr_find) failed: RuntimeError: boom at call 12" in result.output
    assert "later.py" in result.output and "Traceback" not in result.output
    assert not (result.run_dir / "lr_find.csv").exists()
