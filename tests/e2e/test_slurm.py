"""End to end through a real SLURM cluster on this machine (``slurm_cluster`` in conftest.py
starts it with scripts/slurm_up.sh and stops it with scripts/slurm_down.sh): sweeps submitted by
``hydra/launcher=slurm``, a preempted job requeued and resumed, a killed job reported failed."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, env_for_tests

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

# Each job: one CPU (two run at once on a two-core node), 1 GB, a one-hour limit (long enough
# that submitit reads an early SIGUSR2 as a preemption, not a time-out).
LAUNCHER = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=60")
# Long enough (about 0.5-1 s an epoch) to signal a job in the middle of its training.
def slow_job(epochs: int) -> tuple[str, ...]:
    return ("data=synthetic", "data.n_samples=20000", f"trainer.epochs={epochs}")


class SlurmSweep:
    """``train -m hydra/launcher=slurm ...`` running in the background into ``tmp_path/sweep``."""

    def __init__(self, tmp_path: Path, cluster: dict, *overrides: str) -> None:
        self.dir = tmp_path / "sweep"
        self.name = f"trainrun-test-{tmp_path.name}"[:60]
        self.log_path = tmp_path / "sweep.log"
        args = [str(BIN / "train"), "-m", *LAUNCHER, f"hydra.launcher.partition={cluster['partition']}",
                f"hydra.launcher.name={self.name}", *overrides, f"hydra.sweep.dir={self.dir}"]
        self.started = time.monotonic()
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=log,
                                         stderr=subprocess.STDOUT, text=True)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_epochs(self, job: int, epochs: int, timeout: float = 180) -> None:
        metrics = self.dir / str(job) / "metrics.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= epochs:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the sweep ended before job {job} trained {epochs} epoch(s):\n"
                            f"{self.output[-4000:]}")
            time.sleep(0.05)
        pytest.fail(f"job {job} did not train {epochs} epoch(s) in {timeout} s:\n{self.output[-4000:]}")

    def slurm_id(self, job: int) -> str:
        """The SLURM id (array job _ index) Hydra recorded as the job's hydra.job.id."""
        text = (self.dir / str(job) / ".hydra" / "hydra.yaml").read_text()
        return re.search(r"^    id: '?([0-9_]+)'?$", text, re.MULTILINE).group(1)

    def finish(self, timeout: float = 420) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep hung for {timeout} s:\n{self.output[-4000:]}")

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["scancel", f"--name={self.name}"], capture_output=True, timeout=30)

    def rows(self) -> list[dict[str, str]]:
        with (self.dir / "summary.csv").open(newline="") as f:
            return sorted(csv.DictReader(f), key=lambda r: int(r["job"]))

    def job_log(self, job: int) -> str:
        """submitit's stdout log of the job (the run's console: one line per epoch)."""
        sid = self.slurm_id(job)
        return (self.dir / ".submitit" / sid / f"{sid}_0_log.out").read_text()


@pytest.fixture
def slurm_sweep(tmp_path: Path, slurm_cluster: dict):
    sweeps: list[SlurmSweep] = []

    def start(*overrides: str) -> SlurmSweep:
        sweeps.append(SlurmSweep(tmp_path, slurm_cluster, *overrides))
        return sweeps[-1]

    yield start
    for sweep in sweeps:
        sweep.cleanup()


def model_weights(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)["model"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_job_sweep_completes_and_the_summary_lists_both(slurm_sweep) -> None:
    sweep = slurm_sweep("data=iris", "trainer.epochs=3", "optim.lr=0.1,0.01")
    assert sweep.finish() == 0, sweep.output

    rows = sweep.rows()
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
    assert {r["overrides"].split()[-1] for r in rows} == {"optim.lr=0.1", "optim.lr=0.01"}
    for row in rows:
        assert float(row["objective"]) > 0 and Path(row["run_dir"]).parent == sweep.dir
    assert "sweep: 2 jobs, 2 done, 0 failed" in sweep.output
    # The job's log (submitit's stdout) holds one plain line per epoch, no progress bar.
    log = sweep.job_log(0)
    assert [line.split()[1] for line in log.splitlines() if line.startswith("epoch ")] == [
        "1/3", "2/3", "3/3"]
    assert "\r" not in log and "it/s" not in log
    # OMP_NUM_THREADS follows the CPUs given to the job (the preset's setup line).
    sid = sweep.slurm_id(0)
    script = (sweep.dir / ".submitit" / sid.split("_")[0] / f"{sid.split('_')[0]}_submission.sh")
    text = script.read_text()
    assert "#SBATCH --cpus-per-task=1" in text and "OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in text


def test_preempted_job_is_requeued_and_resumes_to_the_same_weights(slurm_sweep) -> None:
    # Two identical jobs (print_config changes nothing in training): job 0 is preempted with
    # SIGUSR2 after its first epoch, job 1 runs without interruption.
    sweep = slurm_sweep(*slow_job(10), "print_config=true,false")
    sweep.wait_for_epochs(job=0, epochs=1)
    sid = sweep.slurm_id(0)
    subprocess.run(["scancel", "--signal=USR2", sid], check=True, timeout=30)
    assert sweep.finish() == 0, sweep.output

    rows = sweep.rows()
    assert [r["status"] for r in rows] == ["completed", "completed"], rows
    log = sweep.job_log(0)
    # trainrun saved last.pt and stopped; submitit requeued the job; the requeued job resumed.
    assert "stopped by SIGUSR2" in log, log
    assert "this job is preempted" in log and f"Requeued job {sid}" in log, log
    assert "requeued by SLURM (restart 1)" in log, log
    resumed = re.search(r"resumed from \S+ at epoch (\d+)", log)
    assert resumed and 1 < int(resumed.group(1)) <= 10, log
    # ... and ended exactly where the uninterrupted job ended.
    run0, run1 = sweep.dir / "0", sweep.dir / "1"
    w0, w1 = model_weights(run0), model_weights(run1)
    assert w0.keys() == w1.keys()
    for name in w0:
        assert w0[name].equal(w1[name]), name
    m0, m1 = metrics(run0), metrics(run1)
    assert [r["epoch"] for r in m0] == list(range(1, 11))
    assert [(r["train_loss"], r["val_loss"]) for r in m0] == [(r["train_loss"], r["val_loss"]) for r in m1]
    assert rows[0]["objective"] == rows[1]["objective"]
    assert json.loads((run0 / "summary.json").read_text())["status"] == "completed"


def test_killed_job_is_reported_failed_and_the_sweep_ends(slurm_sweep) -> None:
    sweep = slurm_sweep(*slow_job(6), "optim.lr=0.001,0.002")
    sweep.wait_for_epochs(job=1, epochs=1)
    sid = sweep.slurm_id(1)
    subprocess.run(["scancel", "--signal=KILL", sid], check=True, timeout=30)
    # The launcher learns from the accounting database that the job ended without a result.
    assert sweep.finish() == 0, sweep.output  # one job completed: the sweep succeeded

    rows = sweep.rows()
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")], rows
    assert f"SLURM job {sid} ended without a result" in rows[1]["error"]
    assert "CANCELLED" in rows[1]["error"] and rows[1]["objective"] == ""
    assert "sweep: 2 jobs, 1 done, 1 failed" in sweep.output
    summary = json.loads((sweep.dir / "1" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["slurm_job_id"] == sid
    queue = subprocess.run(["squeue", "-h", f"--name={sweep.name}"], capture_output=True,
                           text=True, timeout=30).stdout
    assert queue.strip() == ""


def test_jobs_of_a_dead_driver_are_collected_not_run_again(slurm_sweep) -> None:
    """The driver dies while its SLURM jobs run; the same command again waits for those jobs
    (or reads the finished ones from their folders) instead of submitting them again."""
    first = slurm_sweep(*slow_job(4), "optim.lr=0.001,0.002")
    first.wait_for_epochs(job=0, epochs=1)
    first.wait_for_epochs(job=1, epochs=1)
    ids = {job: first.slurm_id(job) for job in (0, 1)}
    first.proc.kill()  # the driver dies; the cluster's jobs go on
    first.proc.wait()

    second = slurm_sweep(*slow_job(4), "optim.lr=0.001,0.002")
    assert second.finish() == 0, second.output

    rows = second.rows()
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")], rows
    assert {job: second.slurm_id(job) for job in (0, 1)} == ids  # the same SLURM jobs: none re-run
    collected = second.output.count("(submitted by an earlier driver) still runs") + \
        second.output.count("finished before with this config, not submitted again")
    assert collected == 2, second.output
    arrays = {p.name.split("_")[0] for p in (second.dir / ".submitit").iterdir() if p.is_dir()}
    assert arrays == {ids[0].split("_")[0]}, arrays  # no second submission
