"""Against the real SLURM cluster (``slurm_cluster`` in conftest.py): the slurm preset, which
asks for 4 CPUs, fits the 2-CPU test node and says so; a request typed by hand that no node can
hold is refused before anything is submitted; a job that waits in the queue is reported with
SLURM's reason while ``train -m`` waits for it."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import BIN, env_for_tests

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def sweep(tmp_path, cluster, *overrides: str, name: str) -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "train"), "-m", "hydra/launcher=slurm", f"hydra.launcher.partition={cluster['partition']}",
            f"hydra.launcher.name={name}", "trainer.epochs=1", "data=iris", *overrides,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    try:
        return subprocess.run(args, cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=400)
    finally:
        subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)


def test_the_preset_fits_the_test_cluster_and_says_so(tmp_path, slurm_cluster):
    done = sweep(tmp_path, slurm_cluster, "optim.lr=0.1", name=f"trainrun-fit-{tmp_path.name}"[:60])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "cpus_per_task=2 (the preset's 4) to fit partition" in output
    assert "1 done, 0 failed" in output


def test_a_request_no_node_can_hold_is_refused_before_submitting(tmp_path, slurm_cluster):
    name = f"trainrun-big-{tmp_path.name}"[:60]
    done = sweep(tmp_path, slurm_cluster, "hydra.launcher.cpus_per_task=64", "optim.lr=0.1", name=name)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "hydra.launcher.cpus_per_task=64 asks more than partition" in output
    assert "key: hydra.launcher.cpus_per_task" in output and "Traceback" not in output
    queued = subprocess.run(["sacct", "-n", "-X", f"--name={name}", "-o", "jobid"], capture_output=True,
                            text=True, timeout=30)
    assert queued.stdout.strip() == ""  # nothing was submitted


def test_a_job_waiting_in_the_queue_is_reported_with_its_reason(tmp_path, slurm_cluster):
    blocker = f"trainrun-blocker-{tmp_path.name}"[:60]
    # both CPUs of the node taken for 25 s: the sweep's job waits for Resources meanwhile
    subprocess.run(["sbatch", "-p", slurm_cluster["partition"], "-c", "2", "--mem=500M", f"--job-name={blocker}",
                    f"--output={tmp_path / 'blocker.out'}",
                    "--wrap", "sleep 25"], check=True, capture_output=True, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while "RUNNING" not in subprocess.run(["squeue", "-h", f"--name={blocker}", "-o", "%T"], capture_output=True,
                                              text=True, timeout=30).stdout:
            assert time.monotonic() < deadline, "the blocking job never started"
            time.sleep(0.5)
        done = sweep(tmp_path, slurm_cluster, "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                     "optim.lr=0.1", name=f"trainrun-wait-{tmp_path.name}"[:60])
    finally:
        subprocess.run(["scancel", f"--name={blocker}"], capture_output=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "waiting for job #0 (SLURM " in output and "): PENDING for " in output, output
    assert "reason Resources" in output
