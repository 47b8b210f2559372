"""Sweeps' mechanisms that need processes of their own: GPU slots held by joblib's worker
processes, and the run record's git state of a real repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainrun.cli import gpus
from trainrun.report.record import commit_text, git_state, run_record


def _claim_in_a_process(sweep: Path, per_job: int, num: int, visible: str, hold: Path) -> subprocess.Popen:
    code = ("import os, sys, time; from pathlib import Path; from trainrun.cli.gpus import claim_devices;"
            f"print(claim_devices(Path({str(sweep)!r}), {per_job}, {num}), os.environ['CUDA_VISIBLE_DEVICES'],"
            " flush=True);"
            f"[time.sleep(0.05) for _ in range(200) if not Path({str(hold)!r}).exists()]")
    env = {**os.environ, gpus.GPUS_ENV: visible}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def test_each_worker_process_holds_its_own_gpu_slot(tmp_path: Path) -> None:
    hold = tmp_path / "release"
    procs = [_claim_in_a_process(tmp_path, 2, n, "0,1,2,3,4", hold) for n in range(3)]
    seen = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
    hold.touch()
    for p in procs:
        p.wait(timeout=30)
    devices = sorted(line[-1] for line in seen)
    # Two slots of two (the fifth GPU is left over); the third worker, finding none free, shares.
    assert len(devices) == 3 and set(devices) == {"0,1", "2,3"}, seen


def test_record_names_the_commit_and_whether_tracked_files_changed(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    assert git_state(tmp_path) is None  # not a repository
    git("init", "-q")
    assert git_state(tmp_path) is None  # no commit yet
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", "model.py")
    git("commit", "-qm", "one")
    state = git_state(tmp_path / ".")
    assert state is not None and len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "outputs").mkdir()  # untracked run folders do not make it dirty
    (tmp_path / "outputs" / "x").write_text("y")
    assert git_state(tmp_path)["dirty"] is False  # type: ignore[index]
    (tmp_path / "model.py").write_text("x = 2\n")
    record = run_record(tmp_path)
    assert record["git"]["dirty"] is True and commit_text(record) == record["git"]["commit"] + "+dirty"
    assert {"python", "torch", "hydra-core", "optuna"} <= set(record["versions"])
    assert record["command"] and commit_text(None) == ""
