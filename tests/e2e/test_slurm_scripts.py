"""``scripts/slurm_down.sh`` stops what ``scripts/slurm_up.sh`` started and nothing else: a
daemon of the same name that it did not start is left alone, one it did start is stopped (with
SIGKILL when it ignores SIGTERM). Fake daemons
(a copy of ``sleep`` named ``slurmd``) and a private record folder: no real cluster is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [
    pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="the SLURM scripts run as root"),
]


def start_fake(tmp_path: Path, name: str, *, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    """A process whose command name is ``name`` (a copy of sleep, or of bash ignoring SIGTERM)."""
    if ignore_term:
        binary = tmp_path / name
        shutil.copy(shutil.which("bash") or "/bin/bash", binary)
        return subprocess.Popen([str(binary), "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    return subprocess.Popen([str(binary), "300"])


def record(own: Path, name: str, pid: int) -> None:
    stat = Path(f"/proc/{pid}/stat").read_text()
    start = stat.rsplit(")", 1)[1].split()[19]
    own.mkdir(exist_ok=True)
    with (own / "started").open("a") as f:
        f.write(f"{name} {pid} {start}\n")


def down(own: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAINRUN_SLURM_OWN_DIR": str(own)}
    return subprocess.run(["bash", str(REPO / "scripts" / "slurm_down.sh"), "--keep-jobs"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_daemon_it_did_not_start_is_left_alone_and_its_own_is_stopped(tmp_path):
    theirs = start_fake(tmp_path, "slurmd")
    try:
        time.sleep(0.2)
        result = down(tmp_path / "own")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "slurmd: none of ours runs" in result.stdout
        assert theirs.poll() is None, "slurm_down.sh stopped a slurmd it had not started"
        record(tmp_path / "own", "slurmd", theirs.pid)  # now it is ours
        result = down(tmp_path / "own")
        assert result.returncode == 0, result.stdout + result.stderr
        assert theirs.wait(timeout=20) is not None
        assert f"stopping slurmd (pid {theirs.pid})" in result.stdout
        assert not (tmp_path / "own").exists()  # nothing of ours left to remember
    finally:
        theirs.kill()


def test_a_reused_pid_is_not_ours(tmp_path):
    theirs = start_fake(tmp_path, "slurmctld")
    try:
        time.sleep(0.2)
        (tmp_path / "own").mkdir()
        (tmp_path / "own" / "started").write_text(f"slurmctld {theirs.pid} 1\n")  # another start time
        result = down(tmp_path / "own")
        assert result.returncode == 0 and theirs.poll() is None, result.stdout + result.stderr
    finally:
        theirs.kill()


def test_a_daemon_of_ours_that_ignores_sigterm_is_killed(tmp_path):
    stuck = start_fake(tmp_path, "munged", ignore_term=True)
    try:
        time.sleep(0.3)
        record(tmp_path / "own", "munged", stuck.pid)
        result = down(tmp_path / "own")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "did not exit after 10s: SIGKILL" in result.stdout
        assert stuck.wait(timeout=5) is not None
    finally:
        stuck.kill()
