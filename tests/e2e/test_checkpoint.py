"""Checkpoint files: atomic writes survive a SIGKILL at the worst moment, only trainrun's own
plain-value checkpoints load (pickled code is refused and never runs), and the resume config
check sorts differences into refused and allowed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import env_for_tests, run_command, run_train

from trainrun.engine import checkpoint, resume

# A child process writes last.pt once, then writes it again and SIGKILLs itself at ``WHERE``:
# "rename" between the fsynced temporary file and the rename, "write" half-way through the bytes.
CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    from trainrun import files
    from trainrun.engine import checkpoint
    path, where = sys.argv[1], sys.argv[2]
    checkpoint.save(path, {"format": 1, "w": torch.zeros(1000)})
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "rename":
        files.os.replace = die
        checkpoint.save(path, {"format": 1, "w": torch.ones(1000)})
    else:
        def half(f):
            f.write(b"x" * 50_000); f.flush(); os.fsync(f.fileno()); die()
        files.atomic_write(path, half)
""")


@pytest.mark.parametrize("where", ["rename", "write"])
def test_a_write_killed_at_the_worst_moment_leaves_the_old_checkpoint(tmp_path, where):
    folder = tmp_path / "run" / "checkpoints"
    path = folder / "last.pt"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), where], env=env_for_tests(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # The old file is whole; the new bytes sit in a temporary file that nothing reads.
    assert torch.equal(checkpoint.read(path)["w"], torch.zeros(1000))
    leftovers = list(folder.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    assert resume.find("auto", tmp_path / "run") == path
    assert sorted(p.name for p in folder.iterdir()) == sorted(["last.pt", leftovers[0].name])
    # The next run's CheckpointWriter tidies them up.
    assert checkpoint.remove_partial_writes(folder) == leftovers
    assert [p.name for p in folder.iterdir()] == ["last.pt"]


def test_train_and_evaluate_refuse_a_malicious_checkpoint(evil, tmp_path):
    path, sentinel = evil
    env = {"SENTINEL": str(sentinel)}
    resumed = run_train("data=synthetic", "data.n_samples=100", "trainer.epochs=1", "plot=false",
                        f"resume={path}", cwd=tmp_path, env=env, check=False)
    evaluated = run_command("evaluate", f"run={path}", cwd=tmp_path, env=env, check=False)
    for result in (resumed, evaluated):
        assert result.returncode == 2, result.output
        assert "refusing to load" in result.output
        assert "Traceback" not in result.output
    assert not sentinel.exists()
