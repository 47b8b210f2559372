"""Kill-and-resume exactness: a run killed with SIGKILL at any moment and then resumed with
``resume=auto`` in the same run folder ends with bit-identical weights and the same metrics.csv
rows (all columns but the timings) as the uninterrupted run; and the resume config checks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import BIN, env_for_tests, run_train
from killpoints import launch, metric_rows, same_weights, weights

# ~20 steps per epoch, every step saved in the middle of an epoch every 5 steps.
SMALL = ("data=synthetic", "data.n_samples=400", "data.batch_size=16", "model.hidden=[32]",
         "trainer.epochs=4", "checkpoint.every_n_steps=5", "plot=false")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per override tuple, shared by the tests of this module."""
    done: dict[tuple[str, ...], Path] = {}

    def _reference(*overrides: str) -> Path:
        if overrides not in done:
            cwd = tmp_path_factory.mktemp("reference")
            run_train(*overrides, cwd=cwd, run_dir=cwd / "run")
            done[overrides] = cwd / "run"
        return done[overrides]

    return _reference


def assert_same_run(resumed: Path, reference: Path) -> None:
    assert same_weights(weights(resumed), weights(reference)), "final weights differ"
    assert metric_rows(resumed) == metric_rows(reference)
    epochs = [int(r["epoch"]) for r in metric_rows(resumed)]
    assert epochs == list(range(1, len(epochs) + 1)), f"duplicated or missing epochs: {epochs}"


def kill_then_resume(points: list[str], overrides: tuple[str, ...], run_dir: Path) -> list[str]:
    """Start, kill at each point in turn (resuming in between), then resume to the end.
    Returns what each resume reported."""
    resumed: list[str] = []
    for i, point in enumerate(points):
        extra = ("resume=auto",) if i else ()
        proc = launch(point, *overrides, *extra, run_dir=run_dir)
        assert proc.returncode == -signal.SIGKILL, (
            f"kill point {point} was not reached (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        resumed += [line for line in proc.stdout.splitlines() if line.startswith("resumed from")]
    final = run_train(*overrides, "resume=auto", cwd=run_dir.parent, run_dir=run_dir)
    resumed += [line for line in final.output.splitlines() if line.startswith("resumed from")]
    return resumed


CASES = {
    # Every kind of kill in one run: after an epoch-end checkpoint, in the atomic write's window
    # (temporary file complete, not renamed), half-way through writing, right after a step
    # (the last mid-epoch checkpoint is older), with dropout so the RNG restore matters.
    "dropout": (
        ["saved:2", "rename:3", "write:2", "step:13", "step:21"],
        (*SMALL, "model.dropout=0.3"),
    ),
    # Step-wise scheduler, momentum, accumulation windows and clipping.
    "onecycle-accumulate": (
        ["step:4", "saved:5", "rename:2", "step:9"],
        (*SMALL, "optim=sgd", "scheduler=onecycle", "trainer.accumulate_grad_batches=3",
         "trainer.grad_clip.max_norm=0.5", "checkpoint.every_n_steps=2"),
    ),
    # Epoch-wise plateau scheduler (its state holds the best value and a patience counter),
    # AdamW, last.pt only every 2 epochs (a kill loses up to 2 epochs, redone identically).
    "plateau-every-2": (
        ["saved:3", "step:30", "write:3"],
        (*SMALL, "optim=adamw", "optim.lr=0.05", "scheduler=plateau", "scheduler.patience=0",
         "trainer.epochs=6", "checkpoint.every_n_epochs=2", "checkpoint.every_n_steps=null"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_runs_resume_bit_identical(case, reference, tmp_path):
    points, overrides = CASES[case]
    run_dir = tmp_path / "run"
    reports = kill_then_resume(points, overrides, run_dir)
    assert_same_run(run_dir, reference(*overrides))
    assert len(reports) == len(points)  # every restart found a checkpoint to continue from
    if case == "dropout":  # the mid-epoch checkpoints were used
        assert any("after batch" in line for line in reports), reports
    # Killed writes leave temporary files; a resumed run removes them and never reads them.
    assert not list((run_dir / "checkpoints").glob("*.tmp")), list((run_dir / "checkpoints").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_kill_after_the_epoch_that_stops_early(reference, tmp_path):
    """Early stopping is decided from the history: a run killed right after saving the epoch
    that triggered it stops again on resume instead of training one more epoch."""
    overrides = (*SMALL, "optim=adamw", "optim.lr=0.05", "trainer.epochs=15",
                 "checkpoint.every_n_steps=null", "trainer.early_stopping.patience=2")
    ref = reference(*overrides)
    ref_summary = json.loads((ref / "summary.json").read_text())
    assert ref_summary["status"] == "stopped early"
    stop_epoch = ref_summary["epochs_run"]
    assert stop_epoch < 15
    # Checkpoint files written up to and including the stopping epoch: last.pt every epoch,
    # best.pt at each improving one. Kill right after the last of them.
    saves = stop_epoch + len(_improving_epochs(ref))
    run_dir = tmp_path / "run"
    kill_then_resume([f"saved:{saves}"], overrides, run_dir)
    assert_same_run(run_dir, ref)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped early"
    assert summary["stop_reason"] == ref_summary["stop_reason"]
    assert summary["epochs_run"] == stop_epoch


USER_DATASET = """
import torch
from torch.utils.data import TensorDataset


def make():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    return TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long())
"""


def test_dataloader_path_resumes_bit_identical(tmp_path):
    """A user Dataset goes through a DataLoader, whose iterators draw a seed from a generator:
    not from torch's global stream (dropout's), or a mid-epoch resume would shift it."""
    (tmp_path / "userdata.py").write_text(USER_DATASET)
    overrides = (*SMALL, "data._target_=userdata.make", "model.dropout=0.3", "trainer.epochs=3")
    run_train(*overrides, cwd=tmp_path, run_dir=tmp_path / "reference")
    # Steps count per process: the 2nd one starts at step 10 and dies after global step 27.
    reports = kill_then_resume(["step:13", "step:17"], overrides, tmp_path / "run")
    assert [line.split(" at ")[1] for line in reports] == [
        "epoch 1, after batch 10 (step 10)", "epoch 2, after batch 5 (step 25)"]
    assert_same_run(tmp_path / "run", tmp_path / "reference")


def _improving_epochs(run_dir: Path) -> list[int]:
    best, out = None, []
    for row in metric_rows(run_dir):
        value = float(row["val_loss"])
        if best is None or value < best:
            best = value
            out.append(int(row["epoch"]))
    return out


# --------------------------------------------------------------------------- random moments

# ~75 steps and ~19 checkpoint writes per epoch (~0.6 s here): random moments often fall inside
# a write. 8 epochs leave room: each start is killed within its first ~3.2 epochs.
RANDOM = ("data=synthetic", "data.n_samples=3000", "data.batch_size=32", "model.hidden=[128,128]",
          "trainer.epochs=8", "checkpoint.every_n_steps=4", "model.dropout=0.2", "plot=false",
          "trainer.progress=epoch")


def run_and_kill(args: list[str], cwd: Path, after_lines: int, delay: float) -> tuple[int, str]:
    """Start ``train``; once it has printed ``after_lines`` epoch lines after its resume line
    (0: right at that line, just before training starts), wait ``delay`` seconds and SIGKILL it
    (unless it finished first). Returns (exit status, output)."""
    proc = subprocess.Popen(args, cwd=cwd, env=env_for_tests(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        started, epochs = False, 0
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            started = started or line.startswith(("resumed from", "resume=auto: no checkpoint"))
            epochs += started and line.startswith("epoch ")
            if started and epochs >= after_lines:
                ready.set()
        ready.set()  # it ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(timeout=240)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines)


def test_sigkill_at_random_moments(reference, tmp_path):
    """The real ``train`` command, SIGKILLed at random moments (seeded; the seed is in the
    failure message), resumed with ``resume=auto`` until it completes."""
    seed = int(os.environ.get("TRAINRUN_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    ref = reference(*RANDOM)
    epoch_seconds = max(float(row["seconds"]) for row in _timed_rows(ref))
    run_dir = tmp_path / "run"
    # resume=auto from the first start: "no checkpoint yet" marks where training begins.
    args = [str(BIN / "train"), *RANDOM, "resume=auto", f"hydra.run.dir={run_dir}"]
    history = []
    # Six kills at most, then a run left to finish: an attempt always keeps what it checkpointed,
    # but seeds that draw only early, short kills need not reach the end in any fixed number of
    # tries (CI drew one: seed 57997 had not finished after 12 kills).
    for _ in range(6):
        after = rng.randrange(0, 3)  # in the 1st to 3rd epoch this process trains
        delay = rng.uniform(0, 1.2 * epoch_seconds)
        code, output = run_and_kill(args, tmp_path, after, delay)
        history.append((after, round(delay, 3), code))
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"seed {seed}: exit {code}\n{output}"
    else:
        code, output = run_and_kill(args, tmp_path, 10**6, 0)
        history.append(("to the end", 0, code))
        assert code == 0, f"seed {seed}: the last run, never killed, exit {code}\n{output}"
    assert len(history) > 1, f"seed {seed}: the first run finished before its kill: {history}"
    assert same_weights(weights(run_dir), weights(ref)), f"seed {seed}, kills {history}"
    assert metric_rows(run_dir) == metric_rows(ref), f"seed {seed}, kills {history}"


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_under_resume_auto(reference, tmp_path):
    """Adversarial pass: SIGKILLed after params.csv (here after its second epoch) but before
    its first checkpoint, a run's folder was refused by every later resume=auto ("holds a train
    run ... has none"): a requeued job failed on every retry. It has no summary.json, so it starts
    afresh, and ends as the uninterrupted run."""
    common = ("data=synthetic", "data.n_samples=300", "model.hidden=[16]", "trainer.epochs=3", "plot=false",
              "trainer.progress=epoch", "checkpoint.every_n_epochs=3")
    ref = reference(*common)
    run_dir = tmp_path / "run"
    args = [str(BIN / "train"), *common, "resume=auto", f"hydra.run.dir={run_dir}"]
    code, output = run_and_kill(args, tmp_path, 2, 0)  # after epoch 2's row; the first checkpoint is epoch 3's
    assert code == -signal.SIGKILL, output  # (params.csv and the rows are written in the background: maybe there)
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    code, output = run_and_kill(args, tmp_path, 10**6, 0)
    assert code == 0 and "resume=auto: no checkpoint in this run folder yet, starting fresh" in output, output
    assert same_weights(weights(run_dir), weights(ref))
    assert metric_rows(run_dir) == metric_rows(ref)


def _timed_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- resume= and checks

ONE_EPOCH = ("data=synthetic", "data.n_samples=200", "data.batch_size=32", "model.hidden=[16]",
             "trainer.epochs=1", "plot=false")


@pytest.fixture
def trained(tmp_path) -> Path:
    run_train(*ONE_EPOCH, cwd=tmp_path, run_dir=tmp_path / "first")
    return tmp_path / "first"


def test_resume_config_checks(trained, tmp_path):
    def again(*overrides: str, check: bool = False):
        return run_train(*ONE_EPOCH, *overrides, f"resume={trained}", cwd=tmp_path,
                         run_dir=tmp_path / f"again{len(list(tmp_path.iterdir()))}", check=check)

    # Shapes and the loss: refused (exit 2, no traceback) with the keys named.
    refused = again("model.hidden=[64]", "loss=nll")
    assert refused.returncode == 2, refused.output
    assert "Traceback" not in refused.output
    assert "model.hidden: [16] -> [64]" in refused.output
    assert "loss._target_: 'torch.nn.CrossEntropyLoss' -> 'torch.nn.NLLLoss'" in refused.output
    assert "different config" in refused.output

    # The same refused in the run's own folder (resume=auto): its record stays as it was
    # (params.csv used to be rewritten with the refused config before the resume was checked).
    record = {name: (trained / name).read_bytes() for name in (".hydra/config.yaml", "params.csv")}
    here = run_train(*ONE_EPOCH, "model.hidden=[64]", "resume=auto", cwd=tmp_path, run_dir=trained, check=False)
    assert here.returncode == 2 and "different config" in here.output, here.output
    assert {name: (trained / name).read_bytes() for name in record} == record

    # More epochs: allowed and reported; an optimizer value the saved state overrides: reported
    # as not applied.
    more = again("trainer.epochs=2", "optim.lr=0.01", check=True)
    assert "resumed from" in more.output
    assert "config changed since the checkpoint: trainer.epochs: 1 -> 2" in more.output
    assert "NOT applied" in more.output and "optim.lr: 0.001 -> 0.01" in more.output
    assert [r["epoch"] for r in more.metrics] == [1, 2]


def test_resume_auto_starts_fresh_without_a_checkpoint(tmp_path):
    result = run_train(*ONE_EPOCH, "resume=auto", cwd=tmp_path)
    assert "no checkpoint in this run folder yet, starting fresh" in result.output
    assert result.summary["status"] == "completed"


def test_resume_from_a_missing_path_is_a_config_error(tmp_path):
    result = run_train(*ONE_EPOCH, f"resume={tmp_path / 'nowhere'}", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    assert "no checkpoint at" in result.output
