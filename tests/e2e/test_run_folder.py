"""One owner for every run folder, end to end (real commands): a new run never lands in another
run's folder, predict never writes into a training run (not even while it trains), nothing is
opened through a planted link, an unusable last.pt is refused, never replaced, and the folder is
the one Hydra uses (the documented quoted form ``'hydra.run.dir="my dir"'`` included).
Every refusal leaves every byte of the folder as it was; a marker a link points to stays absent."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, env_for_tests, run_command, run_train

SMALL = ("data=iris", "model.hidden=[8]", "trainer.epochs=2", "print_config=false", "plot=false")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def refused(result, *needles: str) -> None:
    out = result.output
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished training run (copied by each test that changes it)."""
    folder = tmp_path_factory.mktemp("finished")
    run_train(*SMALL, cwd=folder, run_dir=folder / "run")
    return folder / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def test_a_new_run_never_lands_in_a_finished_runs_folder(run, tmp_path):
    before = snapshot(run)
    result = run_train(*SMALL, cwd=tmp_path, run_dir=run, check=False)
    refused(result, f"{run} holds a train run", "key: hydra.run.dir", "resume=auto")
    assert snapshot(run) == before
    assert run_train(*SMALL, "trainer.epochs=3", "resume=auto", cwd=tmp_path, run_dir=run).returncode == 0


def test_predict_never_writes_into_a_training_run(run, tmp_path):
    np.savez(tmp_path / "new.npz", X=np.ones((3, 4), dtype="float32"))
    before = snapshot(run)
    result = run_command("predict", f"run={run}", "data=npz", "data.path=new.npz", f"hydra.run.dir={run}",
                         cwd=tmp_path, check=False)
    refused(result, f"{run} holds a train run", "predict would write over its files")
    assert snapshot(run) == before


def test_predict_never_writes_into_a_run_while_it_trains(finished, tmp_path):
    np.savez(tmp_path / "new.npz", X=np.ones((3, 4), dtype="float32"))
    busy = tmp_path / "busy"
    train = subprocess.Popen([str(BIN / "train"), "data=synthetic", "data.n_samples=20000", "trainer.epochs=50",
                              "trainer.progress=none", "plot=false", f"hydra.run.dir={busy}"],
                             cwd=tmp_path, env=env_for_tests(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (busy / "checkpoints").is_dir():  # training: its results exist, its lock is held
            assert train.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        config = (busy / ".hydra" / "config.yaml").read_bytes()
        result = run_command("predict", f"run={finished}", "data=npz", "data.path=new.npz", f"hydra.run.dir={busy}",
                             cwd=tmp_path, check=False)
        refused(result, str(busy), "key: hydra.run.dir")
        assert (busy / ".hydra" / "config.yaml").read_bytes() == config
        assert train.poll() is None
    finally:
        train.send_signal(signal.SIGKILL)
        train.wait(timeout=60)


PLANTED = {
    ".trainrun.lock": lambda run, marker: (run / ".trainrun.lock").symlink_to(marker),
    "train.log": lambda run, marker: (run / "train.log").symlink_to(marker),
    "metrics.csv": lambda run, marker: (run / "metrics.csv").symlink_to(marker),
    "checkpoints": lambda run, marker: (marker.mkdir(), (run / "checkpoints").symlink_to(marker)),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_nothing_is_opened_through_a_planted_link(run, tmp_path, name):
    """A run folder from elsewhere whose files are links: resuming it writes through none."""
    marker = tmp_path / "marker"
    target = run / name
    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    PLANTED[name](run, marker)
    before = snapshot(marker) if marker.is_dir() else None
    result = run_train(*SMALL, "trainer.epochs=3", "resume=auto", cwd=tmp_path, run_dir=run, check=False)
    refused(result, "holds symbolic links where trainrun writes", name)
    assert (snapshot(marker) == before) if before is not None else not marker.exists()


@pytest.mark.parametrize("spoil", ["cut short", "a link", "a folder"])
def test_resume_auto_refuses_an_unusable_last_pt(run, tmp_path, spoil):
    last = run / "checkpoints" / "last.pt"
    good = last.read_bytes()
    if spoil == "cut short":
        last.write_bytes(good[: len(good) // 2])
    elif spoil == "a link":
        (tmp_path / "other.pt").write_bytes(good)
        last.unlink()
        last.symlink_to(tmp_path / "other.pt")
    else:
        last.unlink()
        last.mkdir()
    before = snapshot(run)
    result = run_train(*SMALL, "trainer.epochs=3", "resume=auto", cwd=tmp_path, run_dir=run, check=False)
    refused(result, "last.pt")
    assert "no checkpoint in this run folder yet" not in result.output
    after = snapshot(run)  # the run's own lock names this attempt; its log says why it stopped
    assert after.pop("train.log").startswith(before.pop("train.log"))
    after.pop(".trainrun.lock"), before.pop(".trainrun.lock")
    assert after == before


def test_the_quoted_form_locks_the_folder_hydra_uses(tmp_path):
    first = run_train(*SMALL, 'hydra.run.dir="my dir"', cwd=tmp_path, run_dir=tmp_path / "my dir")
    assert (tmp_path / "my dir" / "checkpoints" / "last.pt").is_file(), first.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my dir"]  # no stray '"my dir"' folder
    before = snapshot(tmp_path / "my dir")
    second = run_train(*SMALL, 'hydra.run.dir="my dir"', cwd=tmp_path, run_dir=tmp_path / "my dir", check=False)
    refused(second, f"{tmp_path / 'my dir'} holds a train run")
    assert snapshot(tmp_path / "my dir") == before


def test_evaluate_and_export_write_only_their_own_folders(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other, symlinks=True)
    before = snapshot(other)
    refused(run_command("evaluate", f"run={run}", f"out={other}", cwd=tmp_path, check=False),
            f"{other} holds a train run", "key: out")
    refused(run_command("export-model", f"run={run}", "format=exported", f"out={other}", cwd=tmp_path, check=False),
            f"{other} holds a train run", "key: out")
    assert snapshot(other) == before


def test_evaluate_replaces_its_own_results(run, tmp_path):
    for _ in range(2):  # evaluating the same checkpoint again replaces its own results
        run_command("evaluate", f"run={run}", cwd=tmp_path)
    assert (run / "eval" / "best_val" / "eval.json").is_file()


def test_a_sweep_never_lands_in_a_training_runs_folder(run, tmp_path):
    """(Running the same sweep again into its folder finishes it: cli/rerun.py, tested there.)"""
    before = snapshot(run)
    args = [str(BIN / "train"), "-m", *SMALL, "trainer.epochs=1", "optim.lr=0.1,0.01", f"hydra.sweep.dir={run}"]
    again = subprocess.run(args, cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stdout + again.stderr
    assert f"{run} holds a train run" in again.stderr and "hydra.sweep.dir" in again.stderr
    assert snapshot(run) == before


def test_a_sweep_folder_with_a_planted_link(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "marker"
    sweep.mkdir()
    (sweep / "multirun.yaml").symlink_to(marker)
    args = [str(BIN / "train"), "-m", *SMALL, "trainer.epochs=1", "optim.lr=0.1,0.01", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(args, cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "holds symbolic links where trainrun writes (multirun.yaml)" in proc.stderr, \
        proc.stdout + proc.stderr
    assert not marker.exists()


def test_resume_auto_starts_afresh_only_a_train_run_killed_before_its_first_checkpoint(tmp_path):
    """A run killed before its first checkpoint starts afresh under resume=auto (test_resume.py);
    the adversarial pass on that change found what it must not open: a sweep's folder, another
    command's folder (whose refusal told the user to use resume=auto), and a run trained
    without checkpoints, killed (no summary.json), whose rows a fresh start would replace."""
    sweep = tmp_path / "sweep"
    run_command("train", "-m", *SMALL, "trainer.epochs=1", "optim.lr=0.1,0.01", f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    before = snapshot(sweep)
    refused(run_train(*SMALL, "resume=auto", cwd=tmp_path, run_dir=sweep, check=False), f"{sweep} holds")
    assert snapshot(sweep) == before
    run_dir = tmp_path / "run"
    run_train(*SMALL, "trainer.epochs=1", "data.test_fraction=0.2", cwd=tmp_path, run_dir=run_dir)
    evaluated = tmp_path / "evaluated"
    run_command("evaluate", f"run={run_dir}", f"out={evaluated}", cwd=tmp_path)
    other = run_train(*SMALL, "resume=auto", cwd=tmp_path, run_dir=evaluated, check=False)
    refused(other, f"{evaluated} holds an evaluate run", "give this run a new folder")
    assert "continue that run with resume=auto" not in other.output
    unsaved = tmp_path / "unsaved"
    run_train(*SMALL, "checkpoint.enabled=false", cwd=tmp_path, run_dir=unsaved)
    (unsaved / "summary.json").unlink()  # as if killed: no summary, no checkpoint
    before = snapshot(unsaved)
    refused(run_train(*SMALL, "checkpoint.enabled=false", "resume=auto", cwd=tmp_path, run_dir=unsaved, check=False),
            "has none", "checkpoint.enabled=false")
    assert snapshot(unsaved) == before


def test_resume_auto_never_restarts_a_finished_run_that_left_no_last_pt(tmp_path):
    """Attack pass: a run trained with checkpoint.enabled=false holds no last.pt; resume=auto there
    used to say "no checkpoint yet, starting fresh" and replace its metrics and summary, exit 0."""
    folder = tmp_path / "run"
    run_train(*SMALL, "trainer.epochs=1", "checkpoint.enabled=false", cwd=tmp_path, run_dir=folder)
    before = snapshot(folder)
    result = run_train(*SMALL, "resume=auto", cwd=tmp_path, run_dir=folder, check=False)
    refused(result, f"{folder} holds a train run", "has none", "new folder")
    assert snapshot(folder) == before
