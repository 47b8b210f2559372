"""Past one device, through the real commands: FSDP, sharded asynchronous checkpoints, a resume
on another number of processes, elastic restarts, two torchrun agents per strategy, kills at any
moment. Every run is a real ``train`` (real gloo process groups on this machine's CPU); slow.

Tolerance of a resume on another number of processes (docs/checkpoints.md): the weights equal
the uninterrupted run's within 1e-5 (the reductions add the same numbers in another order), the
epoch losses within a relative 1e-5; on the same number it is bit-identical.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BIN, TOYS, command_path, env_for_tests

from trainrun.engine.checkpoint import find, load
from trainrun.engine.sharded import read_whole

# 240 training rows, a global batch of 6: 40 steps an epoch on 1, 2 or 3 processes.
DATA = ("data=synthetic", "data.n_samples=300", "optim=sgd", "plot=false", "print_config=false",
        "model._target_=killer.KillsItself", "trainer.progress=epoch", "trainer.threads=1")
PER_PROCESS = {1: 6, 2: 3, 3: 2}
TOLERANCE = 1e-5


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model of a run's last checkpoint, whichever kind (last.pt or the sharded last/)."""
    path = find(run_dir / "checkpoints", "last")
    saved = load(path, trust=True)
    if not saved["layout"]["sharded"]:
        return saved["model"]
    return {k[len("model/"):]: v for k, v in read_whole(path).items() if k.startswith("model/")}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(cwd: Path, run_dir: Path, *overrides: str, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(command_path("train")), *DATA, *overrides, f"hydra.run.dir={run_dir}"], cwd=cwd,
                          env=env_for_tests(env), capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def on(devices: int, strategy: str, *more: str) -> tuple[str, ...]:
    return (f"trainer.devices={devices}", f"trainer.strategy={strategy}", *more)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("scale")
    shutil.copy(TOYS, cwd / "killer.py")
    return cwd


@pytest.fixture(scope="module")
def shared(work) -> Callable[[str, int, str], Path]:
    """The runs the resume tests start from, each made once, by the first test that needs it
    (so no test pays for all of them): ``("ref", 2, strategy)`` uninterrupted, two epochs;
    ``("mid", n, strategy)`` stopped by SIGTERM in the middle of an epoch (epoch 2 on one
    process, epoch 1 on two); ``("end", n, strategy)`` ended after epoch 1. Global batch 6; one
    process has no strategy (``""``)."""
    made: dict[tuple[str, int, str], Path] = {}

    def get(when: str, processes: int, strategy: str) -> Path:
        strategy = strategy if processes > 1 else ""
        if (when, processes, strategy) in made:
            return made[when, processes, strategy]
        run = work / f"{when}{processes}-{strategy or 'one'}"
        kill_at = {1: "55", 2: "30"}[processes] if when == "mid" else None
        epochs = "trainer.epochs=1" if when == "end" else "trainer.epochs=2"
        where = on(processes, strategy) if strategy else ()
        proc = train(work, run, *where, f"data.batch_size={PER_PROCESS[processes]}", epochs,
                     env={"KILL_AT": kill_at} if kill_at else None, check=False)
        assert proc.returncode == (143 if kill_at else 0), proc.stdout + proc.stderr
        if strategy:  # several processes write the sharded folder, never a whole last.pt
            assert (run / "checkpoints" / "last" / "trainrun.pt").is_file()
            assert not (run / "checkpoints" / "last.pt").exists()
        made[when, processes, strategy] = run
        return run

    return get


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("when", ["mid", "end"])
def test_a_run_continues_on_another_number_of_processes(work, shared, strategy, before, after, when):
    """2 -> 1, 1 -> 2 and 2 -> 3 processes, from the middle of an epoch and from its end: the
    global batch of 6 is kept (the header says the per-process batch), DCP reshards the model
    and optimizer, and the run ends where the uninterrupted one ends, within the tolerance."""
    reference = shared("ref", 2, strategy)
    run = work / f"{before}to{after}-{when}-{strategy}"
    shutil.copytree(shared(when, before, strategy), run)
    proc = train(work, run, *on(after, strategy, f"data.batch_size={PER_PROCESS[before]}", "trainer.epochs=2",
                                "resume=auto"))
    per = PER_PROCESS[after]
    assert (f"batch: {per} per process x {after} = the checkpoint's global batch of 6 "
            f"(data.batch_size={PER_PROCESS[before]} was per process on {before})") in proc.stdout
    assert "resumed from" in proc.stdout
    a, b = weights(reference), weights(run)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < TOLERANCE
    expected, got = metrics(reference), metrics(run)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [40, 80]
    for x, y in zip(expected, got, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=TOLERANCE)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=TOLERANCE)


def test_a_memory_mapped_source_through_loader_workers_continues_on_another_number_of_processes(work):
    """The same for data read through a DataLoader (a memory-mapped ``.npy``, never in memory):
    two processes stopped in the middle of epoch 1, continued on one process with two loader
    workers; the global batch and the one permutation of the job carry over, and the run ends
    where the uninterrupted two-process run ends, within the tolerance."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=rng)
    np.save(work / "X.npy", x.numpy())
    np.save(work / "y.npy", (x[:, 0] + x[:, 1] > 0).long().numpy())
    source = ["data=npy", "data.path=X.npy", "data.target_path=y.npy", *DATA[2:], "data.batch_size=3",
              "trainer.epochs=2", "trainer.devices=2"]
    reference, run = work / "npy-ref", work / "npy-2to1"
    for folder, env in ((reference, None), (run, {"KILL_AT": "25"})):
        proc = subprocess.run([str(command_path("train")), *source, f"hydra.run.dir={folder}"], cwd=work,
                              env=env_for_tests(env), capture_output=True, text=True, timeout=600)
        assert proc.returncode == (143 if env else 0), proc.stdout + proc.stderr
    proc = train_with(work, run, [*source[:-1], "trainer.devices=1", "data.num_workers=2", "resume=auto"])
    assert "batch: 6 per process x 1 = the checkpoint's global batch of 6" in proc.stdout
    assert "resumed from" in proc.stdout and "epoch 1" in proc.stdout
    a, b = weights(reference), weights(run)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < TOLERANCE
    for x_, y_ in zip(metrics(reference), metrics(run), strict=True):
        assert x_["train_loss"] == pytest.approx(y_["train_loss"], rel=TOLERANCE)


def train_with(cwd: Path, run_dir: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """A ``train`` with ``args`` only (not the synthetic data of :data:`DATA`)."""
    proc = subprocess.run([str(command_path("train")), *args, f"hydra.run.dir={run_dir}"], cwd=cwd,
                          env=env_for_tests(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_global_batch_another_number_cannot_share_is_refused(work, shared):
    run = work / "refused"
    shutil.copytree(shared("end", 1, ""), run)
    proc = train(work, run, "trainer.devices=4", "data.batch_size=6", "trainer.epochs=2", "resume=auto", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the checkpoint's global batch is 6 samples" in proc.stderr
    assert "key: trainer.devices" in proc.stderr and "trainer.devices=1|2|3|6" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_torchrun_agents_on_loopback_train_like_one_launch(work, shared, strategy):
    """The multi-node commands of docs/cluster.md with two "nodes" on this machine: one run
    folder, each rank one thread (the ranks on a host share its CPUs, though each agent has
    LOCAL_WORLD_SIZE=1), the weights of trainer.devices=2."""
    args = [*DATA, "data.batch_size=3", "trainer.epochs=2", f"trainer.strategy={strategy}"]
    args.remove("trainer.threads=1")
    command = [str(command_path("torchrun")), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id=loop-{strategy}", "-m", "trainrun.cli", *args]
    env = env_for_tests()
    env.pop("OMP_NUM_THREADS")  # threads are trainrun's choice here
    agents = [subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [a.communicate(timeout=600)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    folder = work / "outputs" / f"torchrun-loop-{strategy}"
    cpus = len(os.sched_getaffinity(0))
    said = [line for out in outputs for line in out.splitlines() if line.startswith("threads:")]
    assert said == [f"threads: {max(1, cpus // 2)} ({cpus} usable CPUs: {cpus} in its CPU affinity; "
                    "shared by 2 processes)"]
    a, b = weights(folder), weights(shared("ref", 2, strategy))  # trainer.devices=2
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_fsdp_run_with_every_lever_and_the_commands_after_it(work):
    """FSDP with accumulation, clipping of the sharded gradients, a per-step schedule, early
    stopping, bf16 (FSDP's MixedPrecisionPolicy), preflight and lr_find; then evaluate, predict
    and export-model read the sharded checkpoint in one process."""
    run = work / "levers"
    proc = train(work, run, *on(2, "fsdp", "data.batch_size=3", "trainer.epochs=3", "trainer.accumulate_grad_batches=2",
                                "trainer.grad_clip.max_norm=0.5", "scheduler=onecycle", "trainer.precision=bf16",
                                "trainer.early_stopping.patience=5", "lr_find=true", "lr_finder.steps=10"))
    assert "preflight ok" in proc.stdout and "lr_find" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["steps"] == 60
    for command, args in [("evaluate", ["split=val"]), ("export-model", []), ("predict", ["data=synthetic"])]:
        done = subprocess.run([str(command_path(command)), f"run={run}", "trust=[killer]", *args], cwd=work,
                              env=env_for_tests(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(next((run / "eval").glob("*/eval.json")).read_text())
    assert report["loss"] == pytest.approx(report["logged"]["val_loss"], rel=1e-5)
    assert (run / "export" / "best" / "model.safetensors").is_file()


def test_fsdp_meta_init_materializes_only_the_shards(work):
    run = work / "meta"
    proc = train(work, run, *on(2, "fsdp", "data.batch_size=3", "trainer.epochs=1", "trainer.fsdp.init=meta"))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed", proc.stdout


def test_elastic_restart_after_a_killed_rank_continues_by_itself(work, shared):
    """torchrun --max-restarts=1: rank 0 is SIGKILLed in epoch 2; torchrun starts the group again,
    which resumes from the last checkpoint (every 5 steps) with no second command and ends with
    the weights of a run never interrupted (the shared one, which saved only at epoch ends)."""
    args = [*DATA, "data.batch_size=3", "trainer.epochs=2", "checkpoint.every_n_steps=5"]
    reference = shared("ref", 2, "ddp")
    command = [str(command_path("torchrun")), "--standalone", "--nproc-per-node=2", "--max-restarts=1",
               "-m", "trainrun.cli", *args, f"hydra.run.dir={work / 'elastic'}"]
    once = work / "killed-once"
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600,
                          env=env_for_tests({"KILL_AT": "57", "KILL_SIGNAL": "SIGKILL", "KILL_ONCE": str(once)}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert once.exists() and "torchrun restarted the processes (restart 1): resume=auto" in proc.stderr
    assert "resumed from" in proc.stdout
    a, b = weights(reference), weights(work / "elastic")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in metrics(work / "elastic")] == [1, 2]


def test_a_kill_at_any_moment_leaves_a_whole_sharded_checkpoint(work, shared):
    """SIGKILL to `train trainer.devices=2` at two moments of a run that saves its shards every
    step (where a kill lands varies with the machine's load): each time a whole checkpoint is
    found (the previous or the new one), the whole launch is gone, and resume=auto ends where
    an uninterrupted run (saving only at epoch ends) ends, bit for bit."""
    overrides = (*on(2, "ddp", "data.batch_size=3", "trainer.epochs=2", "checkpoint.every_n_steps=1"),)
    reference = shared("ref", 2, "ddp")
    run = work / "kills"
    for i, after in enumerate((12, 16)):
        args = [str(BIN / "train"), *DATA, *overrides, f"hydra.run.dir={run}", *(["resume=auto"] if i else [])]
        proc = subprocess.Popen(args, cwd=work, env=env_for_tests(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        time.sleep(after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.time() + 30  # the agent and the workers die with train (PR_SET_PDEATHSIG)
        while time.time() < deadline and subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout:
            time.sleep(0.2)
        assert not subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout
        found = find(run / "checkpoints", "last")
        if found is not None:  # the first kill may come before the first save
            saved = load(found, trust=True)
            assert saved["layout"]["sharded"] and read_whole(found)
    train(work, run, *overrides, "resume=auto")
    a, b = weights(reference), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_the_cli_main_module_trains_too(work):
    """``torchrun ... -m trainrun.cli.main`` used to exit 0 having trained nothing."""
    run = work / "main-module"
    proc = subprocess.run([str(BIN / "python"), "-m", "trainrun.cli.main", *DATA, "data.batch_size=6",
                           "trainer.epochs=1", f"hydra.run.dir={run}"], cwd=work, env=env_for_tests(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_sharded_checkpoint_whose_metadata_would_run_code_is_one_paragraph_everywhere(work, shared):
    """Adversarial pass: a .metadata that would run code was refused, but inside dcp.load torch
    wrapped the refusal: a traceback and exit 1 from evaluate, predict, export-model and a resume,
    and under trainer.devices=2 "process 0 exited without reporting an error". Now every command
    says the refusal (exit 2, the key that named the checkpoint), and nothing ran."""
    run = work / "hostile-metadata"
    shutil.copytree(shared("end", 2, "ddp"), run)
    for name in ("last", "best"):
        meta = run / "checkpoints" / name / ".metadata"
        real = meta.read_bytes()
        meta.unlink()  # best/ and last/ may share the file (hard links): write a new one each
        meta.write_bytes(pickle.dumps((_Evil(), pickle.loads(real))))
    commands = [("evaluate", f"run={run}"), ("predict", f"run={run}", "data=synthetic"),
                ("export-model", f"run={run}")]
    for command, *args in commands:
        done = subprocess.run([str(command_path(command)), *args, "trust=[killer]"], cwd=work, env=env_for_tests(),
                              capture_output=True, text=True, timeout=300)
        out = done.stdout + done.stderr
        assert done.returncode == 2 and "Traceback" not in out, out
        assert "refusing to load" in out and "key: run" in out and "not part of a checkpoint's metadata" in out, out
    for where in ((), on(2, "ddp")):
        proc = train(work, run, *where, f"data.batch_size={PER_PROCESS[2]}", "trainer.epochs=2",
                     "resume=auto", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out, out
        assert "refusing to load" in out and "key: resume" in out and "without reporting" not in out, out
    assert not (work / "pwned").exists()


def test_fsdp_with_an_uneven_last_batch_trains_and_continues_on_three_processes(work):
    """Adversarial pass: FSDP hung (or gloo aborted on a collective mismatch, 2 -> 3) when the
    epoch's last global batch split unevenly: the preflight's check of the last batch ran a
    forward only on the processes whose share was short, and an FSDP forward gathers from every
    process. 245 training rows in global batches of 6 end on a batch of 5: 3 and 2 on two
    processes, 2, 2 and 1 on three."""
    uneven = ("data.n_samples=306", "trainer.ddp_timeout_s=60", "trainer.epochs=2", "data.batch_size=3")
    reference, run = work / "uneven-ref", work / "uneven-2to3"
    proc = train(work, reference, *on(2, "fsdp", *uneven))
    assert "FSDP (sharded): 2 processes, cpu each" in proc.stdout  # the header said DDP
    assert [r["step"] for r in metrics(reference)] == [41, 82]  # 40 batches of 6, then one of 5
    stopped = train(work, run, *on(2, "fsdp", *uneven), env={"KILL_AT": "30"}, check=False)
    assert stopped.returncode == 143, stopped.stdout + stopped.stderr
    train(work, run, *on(3, "fsdp", *uneven, "resume=auto"))
    a, b = weights(reference), weights(run)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < TOLERANCE
    assert [r["train_loss"] for r in metrics(run)] == pytest.approx([r["train_loss"] for r in metrics(reference)],
                                                                     rel=TOLERANCE)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_sharded_checkpoint_with_a_shard_from_elsewhere_missing_or_cut_short_is_refused(work, shared, strategy):
    """Adversarial pass: nothing tied a shard file to its checkpoint. A ``__1_0.distcp`` copied in
    from another run of the same model was loaded without a word: evaluate scored the mixed
    weights, export-model wrote them, and a resume trained on (train_loss 0.76 -> 15.2), exit 0.
    A missing or cut-short shard was a traceback (evaluate) or "process 1 was killed by
    SIGABRT" (resume). Each process now writes an id with its shards, trainrun.pt records them,
    and every file .metadata names must be there, whole: one paragraph, exit 2."""
    mine, other = shared("end", 2, strategy), shared("ref", 2, strategy)
    said = {"copied": "mixes checkpoints: its shard __1_0.distcp (process 1's) was written by another save",
            "missing": "is not whole: its shard __1_0.distcp is missing",
            "cut short": "is not whole: its shard __1_0.distcp is "}
    for case, message in said.items():
        run = work / f"shard-{case.replace(' ', '-')}-{strategy}"
        shutil.copytree(mine, run)
        for name in ("last", "best"):
            shard = run / "checkpoints" / name / "__1_0.distcp"
            data = shard.read_bytes()
            shard.unlink()  # best/ and last/ may share the file (hard links)
            if case == "copied":
                shutil.copy(other / "checkpoints" / name / "__1_0.distcp", shard)
            elif case == "cut short":
                shard.write_bytes(data[: len(data) // 2])
        commands = [[str(command_path("evaluate")), f"run={run}", "trust=[killer]"],
                    [str(command_path("export-model")), f"run={run}", "trust=[killer]"]]
        for command in commands:
            done = subprocess.run(command, cwd=work, env=env_for_tests(), capture_output=True, text=True, timeout=300)
            out = done.stdout + done.stderr
            assert done.returncode == 2 and "Traceback" not in out and message in out, out
            assert "key: run" in out
        proc = train(work, run, *on(2, strategy), f"data.batch_size={PER_PROCESS[2]}", "trainer.epochs=2",
                     "resume=auto", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out and message in out, out
        assert "key: resume" in out and "SIGABRT" not in out
    untouched = work / f"shard-untouched-{strategy}"  # the checks pass a checkpoint as written
    shutil.copytree(mine, untouched)
    train(work, untouched, *on(2, strategy), f"data.batch_size={PER_PROCESS[2]}", "trainer.epochs=2", "resume=auto")


def test_a_reader_whose_folder_a_running_job_replaced_meanwhile_says_so(work, shared, monkeypatch):
    """Adversarial pass: evaluate or export-model reading checkpoints/last/ while the run saved
    read trainrun.pt of one save and shards of the next; the shard ids refused the mixture, but
    the paragraph accused the user of copying files in. A folder replaced since it was read is
    now said to be that, with a fix that works (run again)."""
    from trainrun.build.setup import build_model
    from trainrun.commands.predictions import fitted_info
    from trainrun.commands.trained import open_trained
    from trainrun.engine.publish import publish
    from trainrun.errors import TrainrunError

    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))  # killer.py, the runs' model
    run = work / "replaced-meanwhile"
    shutil.copytree(shared("end", 2, "ddp"), run)
    last = run / "checkpoints" / "last"
    trained = open_trained(str(last), "last", ["killer"])
    newer = run / "checkpoints" / ".last.99.0.tmp"
    shutil.copytree(shared("ref", 2, "ddp") / "checkpoints" / "last", newer)
    publish(newer, last)  # as the running job publishes its next save
    model = build_model(trained.config, fitted_info(trained))[0]
    with pytest.raises(TrainrunError, match="was replaced by a newer save while this command read it") as caught:
        trained.weights_into(model)
    assert "run the command again" in str(caught.value.fix)
    again = open_trained(str(last), "last", ["killer"])  # the fix: read again, the newest save
    again.weights_into(build_model(again.config, fitted_info(again))[0])
