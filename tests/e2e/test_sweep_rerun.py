"""End to end: a sweep stopped and run again into the same folder (basic and joblib launchers),
SIGTERM outside a job's loop, one GPU per local job (a fake device list), the run record."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import command_path, env_for_tests, run_command

pytestmark = pytest.mark.timeout(900)

GRID = ("data=iris", "trainer.epochs=3", "optim.lr=0.1,0.05,0.02,0.01,0.005")
ROWS = ("job", "status", "objective", "overrides", "best_epoch", "epochs")


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["job"]))


def start(tmp_path: Path, sweep_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    args = [str(command_path("train")), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    log = (tmp_path / f"{sweep_dir.name}.log").open("a")
    return subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(env), stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the sweep ended before the moment the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def statuses(sweep_dir: Path) -> dict[str, str]:
    found = {}
    for summary in sweep_dir.glob("*/summary.json"):
        found[summary.parent.name] = json.loads(summary.read_text())["status"]
    return found


@pytest.mark.parametrize("launcher", [(), ("hydra/launcher=local", "hydra.launcher.n_jobs=2")],
                         ids=["basic", "joblib"])
def test_a_stopped_sweep_run_again_trains_only_what_is_left(tmp_path: Path, launcher: tuple) -> None:
    whole = run_command("train", "-m", *GRID, *launcher, f"hydra.sweep.dir={tmp_path / 'whole'}",
                        cwd=tmp_path, timeout=400)
    assert whole.returncode == 0
    stopped = tmp_path / "stopped"
    proc = start(tmp_path, stopped, *GRID, *launcher)
    wait_for(lambda: sum(s == "completed" for s in statuses(stopped).values()) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    first = rows(stopped)  # written although the sweep was stopped
    done_before = {r["job"] for r in first if r["status"] == "completed"}
    assert 2 <= len(done_before) < 5
    kept = {job: (stopped / job / "metrics.csv").stat().st_mtime_ns for job in done_before}

    again = run_command("train", "-m", *GRID, *launcher, f"hydra.sweep.dir={stopped}", cwd=tmp_path, timeout=400)

    skipped = again.output.count("not trained again")
    assert skipped == len(done_before), again.output
    # The finished jobs were not trained again; every other one trained (or resumed) now.
    assert {job: (stopped / job / "metrics.csv").stat().st_mtime_ns for job in done_before} == kept
    trained = [job for job in map(str, range(5)) if job not in done_before
               and (stopped / job / "metrics.csv").stat().st_mtime_ns > max(kept.values())]
    assert len(trained) == 5 - len(done_before)
    final, reference = rows(stopped), rows(tmp_path / "whole")
    assert [{k: r[k] for k in ROWS} for r in final] == [{k: r[k] for k in ROWS} for r in reference]
    assert all(r["status"] == "completed" for r in final)


def test_a_sweep_into_a_folder_of_another_sweep_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    first = run_command("train", "-m", "data=iris", "trainer.epochs=1", "optim.lr=0.1", f"hydra.sweep.dir={sweep_dir}",
                        cwd=tmp_path)
    assert first.returncode == 0
    before = (sweep_dir / "0" / "summary.json").read_text()
    other = run_command("train", "-m", "data=iris", "trainer.epochs=1", "optim.lr=0.2", f"hydra.sweep.dir={sweep_dir}",
                        cwd=tmp_path, check=False)
    assert other.returncode == 2 and "holds a sweep of other overrides" in other.output, other.output
    assert (sweep_dir / "0" / "summary.json").read_text() == before
    # Adversarial pass: a key that changes nothing computed (left out of the config digest too) is
    # no other sweep: the finished job is not trained again; swept, it would be another sweep.
    quiet = run_command("train", "-m", "data=iris", "trainer.epochs=1", "optim.lr=0.1", "trainer.progress=none",
                        "plot=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert "not trained again" in quiet.output and (sweep_dir / "0" / "summary.json").read_text() == before
    tagged = run_command("train", "-m", "data=iris", "trainer.epochs=1", "optim.lr=0.1", "tags=[a,b]",
                         f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # a list is one value, not a sweep
    assert "not trained again" in tagged.output
    swept = run_command("train", "-m", "data=iris", "trainer.epochs=1", "optim.lr=0.1", "trainer.progress=none,epoch",
                        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, check=False)
    assert swept.returncode == 2 and "holds a sweep of other overrides" in swept.output, swept.output


SLOW_MODEL = '''
import os, time
from pathlib import Path
import torch

class Slow(torch.nn.Module):
    """Signals the test, then takes its time being built (outside the training loop)."""
    def __init__(self, in_features, out_features):
        super().__init__()
        Path("building").write_text(str(os.getpid()))
        time.sleep(3)
        self.net = torch.nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.net(x)
'''


def test_sigterm_outside_a_jobs_loop_still_leaves_the_summary(tmp_path: Path) -> None:
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    sweep_dir = tmp_path / "s"
    overrides = ("data=iris", "trainer.epochs=2", "model._target_=slowmodel.Slow", "optim.lr=0.1,0.2")
    proc = start(tmp_path, sweep_dir, *overrides)
    wait_for((tmp_path / "building").exists, proc)
    proc.send_signal(signal.SIGTERM)  # while job 0 builds its model
    assert proc.wait(timeout=120) == 143
    table = rows(sweep_dir)
    assert [r["status"] for r in table] == ["interrupted"], table  # the job saved last.pt after a step
    assert (sweep_dir / "0" / "checkpoints" / "last.pt").is_file()

    (tmp_path / "building").unlink()
    again = run_command("train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert [r["status"] for r in rows(sweep_dir)] == ["completed", "completed"], again.output
    assert "resumed from" in (sweep_dir / "0" / "train.log").read_text()


def test_each_local_job_gets_its_own_gpu(tmp_path: Path) -> None:
    """A fake list of visible devices: the jobs train on the CPU, but each one saw its own
    CUDA_VISIBLE_DEVICES, and n_jobs followed the number of GPUs."""
    sweep_dir = tmp_path / "s"
    result = run_command("train", "-m", "hydra/launcher=local", "device=cpu", "data=iris", "trainer.epochs=1",
                         "optim.lr=0.1,0.2,0.3,0.4", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
                         env={"CUDA_VISIBLE_DEVICES": "3,5,7"}, timeout=400)
    assert "3 jobs at once, 1 of the GPUs 3,5,7 each" in result.output, result.output
    seen = [json.loads((sweep_dir / str(j) / "summary.json").read_text())["cuda_visible_devices"] for j in range(4)]
    assert set(seen) <= {"3", "5", "7"} and len(set(seen)) >= 2, seen
    pairs = run_command("train", "-m", "hydra/launcher=local", "hydra.launcher.gpus_per_job=2", "device=cpu",
                        "data=iris", "trainer.epochs=1", "optim.lr=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'p'}",
                        cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, timeout=400)
    assert "2 jobs at once, 2 of the GPUs 0,1,2,3 each" in pairs.output, pairs.output
    seen = {json.loads((tmp_path / "p" / str(j) / "summary.json").read_text())["cuda_visible_devices"]
            for j in range(2)}
    assert seen <= {"0,1", "2,3"}, seen


def test_a_run_records_its_code_command_and_versions_and_evaluate_copies_it(tmp_path: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, env={**os.environ, **env})
    trained = run_command("train", "data=iris", "trainer.epochs=1", cwd=tmp_path)
    record = trained.summary["record"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert record["git"] == {"repository": str(tmp_path), "commit": head, "dirty": False}
    assert record["command"].startswith("train data=iris trainer.epochs=1 hydra.run.dir=")
    assert {"torch", "hydra-core", "python", "trainrun"} <= set(record["versions"])
    # the data's fingerprint: the one the data identity computes (what resume and evaluate compare)
    fingerprint = record["data_fingerprint"]
    assert fingerprint == trained.summary["data"]["fingerprint"] and len(fingerprint) >= 16
    evaluated = run_command("evaluate", f"run={trained.run_dir}", "split=val", cwd=tmp_path)
    assert evaluated.returncode == 0
    report = json.loads(next((trained.run_dir / "eval").glob("*/eval.json")).read_text())
    assert report["record"]["training"] == record and report["record"]["command"].startswith("evaluate run=")


def test_a_sweep_run_again_on_data_files_that_changed_trains_again(tmp_path):
    """Finished jobs are skipped only if their data files hold what they trained on: with the
    labels of the CSV flipped, the same command skipped both jobs and kept the old results, exit 0.
    Now each job sets its old run aside and trains on the new data; unchanged data still skips."""
    lines = ["a,b,label"] + [f"{i / 50:.3f},{(i * 7 % 13) / 13:.3f},{int(i % 3 == 0)}" for i in range(120)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    sweep = ("data=csv", "data.path=d.csv", "data.target=label", "trainer.epochs=1", "plot=false",
             "optim.lr=0.1,0.2", f"hydra.sweep.dir={tmp_path / 's'}")
    run_command("train", "-m", *sweep, cwd=tmp_path)
    before = {r["job"]: r["objective"] for r in rows(tmp_path / "s")}
    assert run_command("train", "-m", *sweep, cwd=tmp_path).output.count("not trained again") == 2
    flipped = ["a,b,label"] + [f"{line.rsplit(',', 1)[0]},{1 - int(line[-1])}" for line in lines[1:]]
    (tmp_path / "d.csv").write_text("\n".join(flipped) + "\n")
    again = run_command("train", "-m", *sweep, cwd=tmp_path)
    assert "not trained again" not in again.output
    assert again.output.count("on data files that changed since: moved to") == 2
    after = {r["job"]: r["objective"] for r in rows(tmp_path / "s")}
    assert after.keys() == before.keys() and all(after[j] != before[j] for j in after), (before, after)
    assert (tmp_path / "s" / "0" / "previous-1" / "summary.json").is_file()
