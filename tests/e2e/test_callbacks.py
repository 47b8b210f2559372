"""``callbacks=[...]`` end to end: the three examples of docs/user-guide.md ("Callbacks"), run
as written there (the module from the page, the commands from the page); a callback that fails
during training is reported with its key; mistakes in a callback are refused before training;
a stop asked on one DDP process stops both; on_checkpoint, on_end and on_exception are called."""

from __future__ import annotations

import csv
import json
import re
import shlex
import textwrap

import pytest
from conftest import REPO, run_train

GUIDE = (REPO / "docs" / "user-guide.md").read_text()
SECTION = GUIDE[GUIDE.index("## 12. Callbacks"):GUIDE.index("## 13.")]


def example_module() -> str:
    return re.search(r"```python\n# mycallbacks.py\n(.*?)```", SECTION, re.S).group(1)


def example_commands() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", SECTION, re.S).group(1)
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("train ")]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "mycallbacks.py").write_text(example_module())
    return tmp_path


def test_the_guide_has_three_commands():
    assert len(example_commands()) == 3


def test_log_a_custom_metric(folder):
    done = run_train(*example_commands()[0], "trainer.epochs=3", cwd=folder)
    rows = list(csv.DictReader((done.run_dir / "metrics.csv").open()))
    assert len(rows) == 3 and all(float(r["weight_norm"]) > 0 for r in rows)
    assert "weight_norm" in done.output  # on the epoch lines too
    assert json.loads((done.run_dir / "metrics.jsonl").read_text().splitlines()[0])["weight_norm"] > 0


def test_stop_on_a_condition(folder):
    done = run_train(*example_commands()[1], cwd=folder)
    summary = done.summary
    assert summary["status"] == "stopped early" and "val_acc reached" in summary["stop_reason"]
    assert summary["final"]["val_acc"] >= 0.95 and summary["epochs_run"] < 20
    assert all(row["val_acc"] < 0.95 for row in done.metrics[:-1])  # it stopped at the first one


def test_save_predictions_of_a_fixed_batch_each_epoch(folder):
    done = run_train(*example_commands()[2], "trainer.epochs=3", cwd=folder)
    rows = list(csv.reader((done.run_dir / "batch_predictions.csv").open()))
    assert len(rows) == 3 * 32  # the first validation batch, every epoch
    by_epoch = {e: [(r[1], r[2]) for r in rows if r[0] == e] for e in ("1", "2", "3")}
    assert by_epoch["1"] == by_epoch["2"] == by_epoch["3"]  # the same samples and targets each time
    assert "weight_norm" in (done.run_dir / "metrics.csv").read_text()


CHECKS = textwrap.dedent('''
    import json


    class Record:
        """Every hook, written down in the order called."""

        def __init__(self):
            self.calls = []

        def note(self, run, what):
            self.calls.append(what)
            (run.run_dir / "calls.json").write_text(json.dumps(self.calls))

        def on_start(self, run):
            self.note(run, f"start {run.epoch}")

        def on_epoch_end(self, run, row):
            self.note(run, f"epoch {row['epoch']}")

        def on_checkpoint(self, run, paths):
            self.note(run, "checkpoint " + ",".join(sorted(p.name for p in paths if p.is_file())))

        def on_end(self, run, summary):
            self.note(run, f"end {summary['status']}")

        def on_exception(self, run, error):
            self.note(run, f"exception {type(error).__name__}")


    class Broken:
        def on_epoch_end(self, run, row):
            return row["val_accuracy"] > 0.9


    class Typo:
        def on_epoch_ended(self, run, row):
            pass


    class Takes:
        def on_epoch_end(self, row):
            pass


    class StopOnRankOne:
        def on_epoch_end(self, run, row):
            if run.rank == 1 and row["epoch"] == 2:
                run.stop("rank 1 asked")
    ''')


@pytest.fixture
def checks(tmp_path):
    (tmp_path / "cbchecks.py").write_text(CHECKS)
    return tmp_path


def test_every_hook_is_called_in_order(checks):
    done = run_train("callbacks=[cbchecks.Record]", "trainer.epochs=2", cwd=checks)
    calls = json.loads((done.run_dir / "calls.json").read_text())
    assert calls == ["start 0", "epoch 1", "checkpoint best.pt,last.pt", "epoch 2",
                     "checkpoint best.pt,last.pt", "end completed"]


def test_on_exception_hears_the_error_that_ends_the_run(checks):
    done = run_train("callbacks=[cbchecks.Record]", "optim=sgd", "optim.lr=10", "trainer.epochs=3",
                     cwd=checks, check=False)
    assert done.returncode == 1
    calls = json.loads((done.run_dir / "calls.json").read_text())
    assert calls[0] == "start 0" and calls[-1] == "exception TrainrunError"


def test_a_callback_that_fails_is_named_by_the_boundary(checks):
    done = run_train("callbacks=[cbchecks.Broken]", "trainer.epochs=2",
                     cwd=checks, check=False)
    assert done.returncode == 1
    assert "KeyError: 'val_accuracy' (raised in cbchecks.py:" in done.output and ", in on_epoch_end)" in done.output
    assert "key: callbacks[0]" in done.output and "Traceback" not in done.output
    assert done.summary["status"] == "failed"


@pytest.mark.parametrize(("target", "words"), [
    ("cbchecks.Typo", "has a method on_epoch_ended, which is no hook (did you mean on_epoch_end?)"),
    ("cbchecks.Takes", "Takes.on_epoch_end cannot be called as on_epoch_end(run, row)"),
    ("cbchecks.Missing", "cannot import callbacks[0]._target_='cbchecks.Missing'"),
])
def test_mistakes_in_a_callback_are_refused_before_training(checks, target, words):
    done = run_train(f"callbacks=[{target}]", cwd=checks, check=False)
    assert done.returncode == 2 and words in done.output, done.output
    assert "epoch 1/" not in done.output


def test_a_stop_asked_on_one_ddp_process_stops_both(checks):
    done = run_train("callbacks=[cbchecks.StopOnRankOne]", "trainer.devices=2", "trainer.epochs=5", cwd=checks)
    assert done.summary["status"] == "stopped early" and done.summary["epochs_run"] == 2
    assert "another process asked to stop" in done.summary["stop_reason"]
