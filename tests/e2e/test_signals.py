"""SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 stop a run after the current step with last.pt saved,
the resume command printed and exit status 128 + the signal number; a second Ctrl-C stops at
once (status 130); the printed command resumes to the uninterrupted run's weights."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from conftest import BIN, command_path, env_for_tests, run_train
from killpoints import launch, metric_rows, same_weights, weights

# 20 batches (= steps) per epoch; no mid-epoch checkpoints, so a last.pt in the middle of an
# epoch can only come from a signal.
SMALL = ("data=synthetic", "data.n_samples=400", "data.batch_size=16", "model.hidden=[32]",
         "model.dropout=0.2", "trainer.epochs=3", "plot=false")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    run_train(*SMALL, cwd=cwd, run_dir=cwd / "run")
    return cwd / "run"


def resume_command(output: str) -> list[str]:
    lines = output.splitlines()
    i = next(i for i, line in enumerate(lines) if line.rstrip().endswith("Resume with:"))
    return shlex.split(lines[i + 1])


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_signal_stops_after_the_step_and_the_printed_command_resumes(name, reference, tmp_path):
    run_dir = tmp_path / "run"
    stopped = launch(f"{name}@27", *SMALL, run_dir=run_dir)  # in the 7th batch of epoch 2
    signum = getattr(signal, name)
    assert stopped.returncode == 128 + signum, stopped.stdout + stopped.stderr
    output = stopped.stdout + stopped.stderr
    assert f"{name}: stopping after this step" in output
    assert f"stopped by {name}; last.pt is saved" in output
    assert "Traceback" not in output
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["state"]["epoch"], saved["state"]["batch"], saved["state"]["step"]) == (1, 7, 27)
    summary = (run_dir / "summary.json").read_text()
    assert '"status": "interrupted"' in summary and f'"signal": "{name}"' in summary

    command = resume_command(output)
    assert command[:3] == ["train", f"hydra.run.dir={run_dir}", "resume=auto"]
    assert all(o in command for o in SMALL)  # the run's own overrides, so the same config
    resumed = subprocess.run([str(command_path("train")), *command[1:]], cwd=tmp_path, env=env_for_tests(),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "at epoch 2, after batch 7 (step 27)" in resumed.stdout
    assert same_weights(weights(run_dir), weights(reference))
    assert metric_rows(run_dir) == metric_rows(reference)


def test_second_ctrl_c_stops_at_once(tmp_path):
    run_dir = tmp_path / "run"
    # Two Ctrl-C in the 5th batch of epoch 2: the second one must not wait for a checkpoint.
    result = launch("SIGINT@25,SIGINT@25", *SMALL, run_dir=run_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 130, output
    assert "(Ctrl-C again to stop at once)" in output
    assert "Stopped at once by Ctrl-C, without saving" in output
    assert "Traceback" not in output
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["state"]["epoch"], saved["state"]["step"]) == (1, 20)  # epoch 1's, untouched


def test_sigterm_to_the_real_command(tmp_path):
    """An outside SIGTERM (what a cluster sends) to the ``train`` console script."""
    run_dir = tmp_path / "run"
    args = [str(BIN / "train"), "data=synthetic", "data.n_samples=2000", "model.hidden=[256,256]",
            "trainer.epochs=50", "trainer.progress=epoch", "plot=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    first_epoch = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("epoch "):
                first_epoch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first_epoch.wait(timeout=240), "".join(lines)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)
    reader.join(timeout=10)
    output = "".join(lines)
    assert "Resume with:" in output and "resume=auto" in output
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 1 <= saved["state"]["epoch"] < 50


