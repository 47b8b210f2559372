"""Distributed data parallel: ``trainer.devices=2`` (torch's elastic launcher), torchrun, srun and
submitit tasks; equivalence with one process; failing ranks; signals, checkpoints and resume.

The process tests start real gloo process groups on this machine's CPU; they are marked slow.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    BIN,
    TOYS,
    TrainResult,
    command_path,
    env_for_tests,
    final_weights,
    max_difference,
    run_train,
    saved_checkpoint,
)

# 803 training rows: a global batch of 32 leaves 3 rows at the end, split 1 + 2 over two ranks,
# so the equivalence below includes a short, unevenly split last batch.
DATA = ("data=synthetic", "data.n_samples=1004", "print_config=false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- where a process stands


# --------------------------------------------------------------------------- equivalence and output


def test_two_processes_equal_one_process_with_the_global_batch(train, tmp_path):
    common = (*DATA, "optim=sgd", "trainer.epochs=3")
    one = train(*common, "data.batch_size=32", run_dir=tmp_path / "one")
    two = train(*common, "data.batch_size=16", "trainer.devices=2", run_dir=tmp_path / "two")

    assert two.summary["world_size"] == 2 and two.summary["status"] == "completed"
    assert [r["step"] for r in two.metrics] == [r["step"] for r in one.metrics] == [26, 52, 78]
    assert max_difference(final_weights(one.run_dir), final_weights(two.run_dir)) < 1e-5
    for a, b in zip(one.metrics, two.metrics, strict=True):
        # epoch losses are means over the whole epoch (every rank's batches), not rank 0's
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # one run folder, written and printed by rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert two.output.count("epoch 1/3") == 1
    assert (two.run_dir / "train.log").read_text().count("epoch 3/3") == 1


def test_validation_scores_every_sample_when_its_last_global_batch_is_smaller_than_the_processes(train, tmp_path):
    """Adversarial pass: 121 validation samples in global batches of 12 leave 1 at the end, fewer
    than the 2 processes; it was dropped as a training batch is, so every val_loss (best.pt, the
    sweep objective, early stopping) was over 120 samples, unlike one process and `evaluate`."""
    common = ("data=synthetic", "data.n_samples=605", "optim=sgd", "trainer.epochs=2", "plot=false",
              "model.hidden=[16]")
    one = train(*common, "data.batch_size=12", run_dir=tmp_path / "one")
    two = train(*common, "data.batch_size=6", "trainer.devices=2", run_dir=tmp_path / "two")
    assert max_difference(final_weights(one.run_dir), final_weights(two.run_dir)) < 1e-5
    for a, b in zip(one.metrics, two.metrics, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["val_acc"] == pytest.approx(b["val_acc"], rel=1e-9)
    assert two.summary["objective"]["value"] == pytest.approx(one.summary["objective"]["value"], rel=1e-5)


def test_a_resume_whose_epochs_would_differ_names_the_process_counts_that_fit(train, tmp_path):
    """Adversarial pass: 481 training samples in global batches of 12 leave 1 sample, dropped on 2
    processes and kept on 1; resuming on 1 was refused with "trainer.devices=2 or fewer", which
    1 is. The fix now lists the counts that give the checkpoint's 40 batches, and one of them resumes."""
    common = ("data=synthetic", "data.n_samples=601", "optim=sgd", "plot=false", "model.hidden=[16]",
              f"hydra.run.dir={tmp_path / 'run'}")
    train(*common, "data.batch_size=6", "trainer.devices=2", "trainer.epochs=1")
    refused = train(*common, "data.batch_size=6", "trainer.epochs=2", "resume=auto", check=False)
    assert refused.returncode == 2 and "key: trainer.devices" in refused.output, refused.output
    assert "fix: resume with a number of processes that gives 40 global batches of 12: " \
        "trainer.devices=2|3|4|6|12" in refused.output, refused.output
    done = train(*common, "data.batch_size=6", "trainer.devices=3", "trainer.epochs=2", "resume=auto")
    assert "batch: 4 per process x 3 = the checkpoint's global batch of 12" in done.output
    assert done.summary["status"] == "completed" and [r["step"] for r in done.metrics] == [40, 80]


def test_torchrun_ranks_write_one_run_folder_and_resume_with_the_printed_command(tmp_path):
    """torchrun stopped by SIGTERM: its ranks save in one folder, and the printed resume command
    (torchrun again) continues it there. (torchrun's weights equal trainer.devices=2's: below.)"""
    cwd = tmp_path / "work"
    cwd.mkdir()
    shutil.copy(TOYS, cwd / "killer.py")
    args = [*DATA, "model._target_=killer.KillsItself", "optim=sgd", "trainer.epochs=2", "trainer.progress=epoch"]
    env = env_for_tests({"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    cut = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "trainrun.cli", *args, "data.batch_size=16"],
        cwd=cwd, env={**env, "KILL_AT": "33", "KILL_PARENT": "1"}, capture_output=True, text=True, timeout=240,
    )
    folders = list((cwd / "outputs").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("torchrun-"), cut.stdout + cut.stderr
    assert json.loads((folders[0] / "summary.json").read_text())["status"] == "interrupted"
    command = cut.stdout.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    assert command.startswith("torchrun --standalone --nproc_per_node=2 -m trainrun.cli hydra.run.dir=")
    resumed = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and resumed.stdout.count("epoch 2/2") == 1
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert [p.name for p in (cwd / "outputs").iterdir()] == [folders[0].name]


def test_two_torchrun_nodes_train_like_one_node_with_two_processes(train, tmp_path):
    """Two torchrun agents (two "nodes" of one process each, c10d rendezvous on localhost):
    one run folder, bit-identical to trainer.devices=2; the same --rdzv-id again is refused."""
    args = [*DATA, "optim=sgd", "trainer.epochs=2", "trainer.progress=epoch", "trainer.threads=1",
            "data.batch_size=16"]

    def two_nodes() -> list[subprocess.CompletedProcess]:
        command = [str(command_path("torchrun")), "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                   f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=twonodes", "-m", "trainrun.cli", *args]
        agents = [subprocess.Popen(command, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        return [(a.communicate(timeout=240)[0], a.returncode) for a in agents]

    first = two_nodes()
    assert [code for _, code in first] == [0, 0], first
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["torchrun-twonodes"]
    folder = tmp_path / "outputs" / "torchrun-twonodes"
    assert json.loads((folder / "summary.json").read_text())["world_size"] == 2
    assert sum(out.count("epoch 2/2") for out, _ in first) == 1  # rank 0 reports, on one node
    one_node = train(*args, "trainer.devices=2", run_dir=tmp_path / "one")
    a, b = final_weights(folder), final_weights(one_node.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # The same run id again (two processes of one agent: refused before they join, so cheaper)
    weights = {p.name: p.read_bytes() for p in (folder / "checkpoints" / "last").iterdir()}  # shards
    again = subprocess.run(
        [str(command_path("torchrun")), "--nnodes=1", "--nproc_per_node=2", "--rdzv-backend=c10d",
         f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=twonodes", "-m", "trainrun.cli", *args],
        cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=240)
    assert again.returncode != 0
    assert again.stdout.count("which holds an earlier run") + again.stderr.count("which holds an earlier run") == 1
    assert "key: hydra.run.dir" in again.stderr
    assert {p.name: p.read_bytes() for p in (folder / "checkpoints" / "last").iterdir()} == weights


def test_srun_style_tasks_train_together(tmp_path):
    """Two `train` processes with the variables srun gives its tasks (no SLURM daemons needed)."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = env_for_tests({
            "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_STEP_NUM_NODES": "1", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
            "SLURM_JOB_NODELIST": "localhost", "MASTER_PORT": str(port),
        })
        procs.append(subprocess.Popen(
            [str(BIN / "train"), *DATA, "trainer.epochs=2", "trainer.progress=epoch"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["slurm-4242-0"]
    summary = json.loads((tmp_path / "outputs" / "slurm-4242-0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert "epoch 2/2" in outputs[0] and "epoch 2/2" not in outputs[1]  # rank 0 reports


def test_submitit_job_with_two_tasks_trains_as_two_ranks(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [str(command_path("train")), "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
         "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep}", *DATA, "trainer.epochs=2"],
        cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"


def test_devices_inside_a_submitit_job_and_its_requeue(tmp_path):
    """trainer.devices=2 inside a submitit job; a preemption signal (SIGUSR2 to the job) saves
    last.pt, submitit requeues the job, and the requeued job resumes from it."""
    shutil.copy(TOYS, tmp_path / "killer.py")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [str(command_path("train")), "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         f"hydra.sweep.dir={sweep}", *DATA, "model._target_=killer.KillsItself", "trainer.devices=2",
         "trainer.epochs=3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        # at step 8 of 39: the ranks agree on a stop every 10 steps, so the run cannot end first
        # (at step 30, a signal that reached them after step 30's agreement waited for a step 40
        # that never came: the run completed instead, and its summary was then refused for the
        # agent's exit status 140; devices._outcome takes rank 0's summary now)
        env=env_for_tests({"KILL_AT": "8", "KILL_PARENT": "1", "KILL_SIGNAL": "SIGUSR2",
                           "KILL_ONCE": str(tmp_path / "preempted")}),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert "stopped by SIGUSR2; last.pt is saved, handing over to submitit to requeue" in log
    assert "Requeued job" in log and "requeued by submitit: resuming from this job's" in log
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert [r["epoch"] for r in map(json.loads, (sweep / "0" / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]


def test_joblib_job_starts_its_own_ddp_workers(tmp_path):
    """Inside joblib's worker processes the workers are forked (spawn cannot bootstrap there)."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [str(command_path("train")), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
         f"hydra.sweep.dir={sweep}", *DATA, "trainer.devices=2", "trainer.epochs=1"],
        cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"


def test_an_optuna_preset_sweeps_jobs_of_two_processes_into_any_folder_name(tmp_path):
    """Adversarial pass: with trainer.devices=2, ``hparams_search=lr`` failed every trial (each
    worker took the preset's ``hydra.mode: MULTIRUN`` and started a sweep of its own), a run
    folder with a comma or an accent could not be passed to the workers (unquoted), and the
    workers wrote the job's ``.hydra/`` again, losing the sweep's job numbers."""
    sweep = tmp_path / "sweep, é"
    proc = subprocess.run(
        [str(command_path("train")), "-m", "hparams_search=lr", "optim=sgd", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir='{sweep}'", "data=iris", "trainer.devices=2",
         "trainer.epochs=1", "plot=false"],
        cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 jobs, 2 done, 0 failed" in proc.stdout, proc.stdout
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["world_size"] == 2
        assert f"num: {job}\n" in (sweep / job / ".hydra" / "hydra.yaml").read_text()
    rows = (sweep / "summary.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[1] for row in rows) == ["0", "1"]  # the job column


# --------------------------------------------------------------------------- failures


FAULTY = textwrap.dedent("""
    import os
    import signal
    import time

    import torch
    from torch import nn


    class Net(nn.Module):
        \"\"\"On rank 1 at its 5th training call, as FAIL says: raise, nan (return NaN), exit
        (os._exit(3)), kill (SIGKILL itself) or hang; writes the moment into ./fault-time first.\"\"\"

        def __init__(self, in_features, out_features, **unused):
            super().__init__()
            self.lin = nn.Linear(in_features, out_features)
            self.calls = 0

        def forward(self, x):
            out = self.lin(x)
            if self.training and os.environ.get("RANK") == "1":
                self.calls += 1
                how = os.environ["FAIL"]
                if self.calls == 5:
                    with open("fault-time", "w") as f:
                        f.write(repr(time.time()))
                if self.calls == 5 and how == "raise":
                    raise RuntimeError("boom on rank 1")
                if self.calls == 5 and how == "nan":
                    out = out * float("nan")
                if self.calls == 5 and how == "exit":
                    os._exit(3)
                if self.calls == 5 and how == "exit0":
                    os._exit(0)
                if self.calls == 5 and how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.calls == 5 and how == "hang":
                    time.sleep(3600)
            return out
""")


def processes_in(folder) -> list[str]:
    """The processes (besides this one) working in ``folder`` or below: every process a test's
    ``train`` starts inherits its working folder, whatever session or group it moved to."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone, a zombie, or not ours
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(f"{entry}: {cmdline}")
    return found


# How the job reports each fault of rank 1, and the timeout the hang runs with. The 5th training
# call is batch 3: the preflight makes two (a step, and the epoch's short last batch).
FAULTS = {
    "raise": "(process 1 of 2) training (epoch 1, batch 3) failed: RuntimeError: boom on rank 1",
    "exit": "process 1 of 2 exited with status 3 without reporting an error",
    # torchrun counts status 0 as no failure: named from the ranks its records leave out
    "exit0": "process 1 of 2 exited with status 0 before the run ended",
    "kill": "process 1 of 2 was killed by SIGKILL",
    "hang": "process 1 of 2 stopped responding: process 0 waited 20 s (trainer.ddp_timeout_s=20) for it "
            "in a collective during training (epoch 1, batch 3) and gave up (Timed out waiting 20000ms",
}
DDP_TIMEOUT_S = 20


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_rank_that_fails_ends_the_job_naming_it(train, tmp_path, fault):
    """Raises, exits, is killed or hangs: the job ends soon after (a hang: the timeout plus the
    5 s the others get to end), names the rank in one paragraph, and leaves no process and no
    temporary folder behind."""
    (tmp_path / "faulty.py").write_text(FAULTY)
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = train(*DATA, "model._target_=faulty.Net", "trainer.devices=2", "trainer.epochs=3",
                   f"trainer.ddp_timeout_s={DDP_TIMEOUT_S}", env={"FAIL": fault, "TMPDIR": str(temp)},
                   check=False, timeout=150)
    ended = time.time()
    assert result.returncode == 1, result.output
    assert FAULTS[fault] in result.output
    assert result.output.count("\nError: ") == 1 and "Traceback" not in result.output
    if fault == "raise":
        assert "raised in faulty.py" in result.output and "key: model._target_" in result.output
    if fault == "hang":
        assert "process 1 was still running 5 s later and was killed" in result.output
        assert "key: trainer.ddp_timeout_s" in result.output
    # Bounds generous for a loaded machine, yet below what the job took without the watchdog
    # (the elastic agent waits 30 s for a stopped worker): measured from the fault itself.
    took = ended - float((tmp_path / "fault-time").read_text())
    assert took < (DDP_TIMEOUT_S + 20 if fault == "hang" else 20), took
    assert processes_in(tmp_path) == []
    # the control folder, torch's error files and logs (torch's compiler cache may stay)
    assert [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_a_config_error_in_the_workers_keeps_its_status_and_fix(train):
    result = train(*DATA, "trainer.devices=2", "trainer.precision=fp16", "device=cpu", check=False)
    assert result.returncode == 2, result.output
    assert "trainer.precision=fp16 needs a CUDA device" in result.output
    assert "fix: use trainer.precision=bf16" in result.output


def test_skipping_a_nonfinite_batch_is_agreed_by_all_ranks(train, tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    result = train(*DATA, "model._target_=faulty.Net", "trainer.devices=2", "trainer.epochs=2",
                   "trainer.on_nonfinite=skip", env={"FAIL": "nan"}, timeout=120)
    assert result.summary["status"] == "completed"
    assert all(r["val_loss"] == r["val_loss"] for r in result.metrics)  # no NaN reached the weights


# --------------------------------------------------------------------------- signals, checkpoints, resume


# A two-process run with a per-step schedule, uninterrupted and stopped by a SIGTERM to rank 0.
SIGNALLED = (*DATA, "model._target_=killer.KillsItself", "optim=sgd", "scheduler=onecycle",
             "trainer.devices=2", "data.batch_size=16", "trainer.epochs=3")


@pytest.fixture(scope="module")
def signalled(tmp_path_factory) -> dict[str, TrainResult]:
    """``whole`` and ``cut`` (SIGTERM to rank 0 at its 33rd step), made once for the tests below."""
    cwd = tmp_path_factory.mktemp("signalled")
    shutil.copy(TOYS, cwd / "killer.py")
    whole = run_train(*SIGNALLED, cwd=cwd, run_dir=cwd / "whole")
    cut = run_train(*SIGNALLED, cwd=cwd, run_dir=cwd / "cut", env={"KILL_AT": "33"}, check=False, timeout=120)
    return {"whole": whole, "cut": cut}


def test_a_signal_on_one_rank_stops_all_at_one_step_and_resume_is_exact(signalled, tmp_path):
    whole, cut = signalled["whole"], signalled["cut"]
    assert cut.returncode == 143, cut.output
    assert cut.output.count("SIGTERM: stopping after this step") == 1
    saved = saved_checkpoint(cut.run_dir)  # a sharded checkpoint: every rank wrote its part
    # 26 steps an epoch; the ranks compared notes every 10 steps and stopped together at step 40
    assert (saved["state"]["epoch"], saved["state"]["step"], saved["state"]["batch"]) == (1, 40, 14)
    assert tuple(saved["step_losses"].shape) == (2, 26)  # both ranks' losses of the open epoch

    run = tmp_path / "resumed"
    shutil.copytree(cut.run_dir, run)
    resumed = run_train(*SIGNALLED, "resume=auto", cwd=cut.run_dir.parent, run_dir=run)
    assert max_difference(final_weights(whole.run_dir), final_weights(resumed.run_dir)) < 1e-6
    for a, b in zip(whole.metrics, resumed.metrics, strict=True):
        assert (a["lr"], a["step"]) == (b["lr"], b["step"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_a_two_process_run_stopped_mid_epoch_continues_on_one(signalled, tmp_path):
    """trainer.devices=1 now: the checkpoint's global batch (32) is kept, and the run ends where
    the uninterrupted one ends within float rounding (it was refused, naming trainer.devices)."""
    whole, cut = signalled["whole"], signalled["cut"]
    assert cut.returncode == 143, cut.output
    run = tmp_path / "on-one"
    shutil.copytree(cut.run_dir, run)
    other = run_train(*SIGNALLED[:-3], "data.batch_size=16", "trainer.epochs=3", "resume=auto",
                      cwd=cut.run_dir.parent, run_dir=run)
    assert "batch: 32 per process x 1 = the checkpoint's global batch of 32" in other.output
    assert max_difference(final_weights(whole.run_dir), final_weights(other.run_dir)) < 1e-5
    assert [r["step"] for r in other.metrics] == [r["step"] for r in whole.metrics]


def test_sigterm_to_the_launching_process_saves_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [str(BIN / "train"), "data=synthetic", "data.n_samples=60000", "trainer.devices=2",
         "trainer.epochs=20", "trainer.progress=epoch", "print_config=false", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch  1/20"):
            proc.send_signal(15)
            break
    rest = proc.communicate(timeout=150)[0]
    output = "".join(lines) + rest
    assert proc.returncode == 143, output
    assert "last.pt is saved. Resume with:" in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert summary["epochs_run"] < 20
    assert (run_dir / "checkpoints" / "last" / "trainrun.pt").is_file()  # several processes: sharded

