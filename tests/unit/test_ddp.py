"""Distributed data parallel: ``trainer.devices=2`` (torch's elastic launcher), torchrun, srun and
submitit tasks; equivalence with one process; failing ranks; signals, checkpoints and resume.

The process tests start real gloo process groups on this machine's CPU; they are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_alone_nothing_is_pinned(launcher_free_env):
    from trainrun.cli.ranks import launched_place, pin_run_dir

    argv = ["train", "trainer.epochs=2"]
    pin_run_dir(argv)
    assert argv == ["train", "trainer.epochs=2"]
    assert launched_place() is None


def test_torchrun_ranks_agree_on_one_folder(launcher_free_env):
    from trainrun.cli.ranks import Place, launched_place, pin_run_dir

    launcher_free_env.update(TORCHELASTIC_RUN_ID="3f2a", RANK="1", WORLD_SIZE="2", LOCAL_RANK="1",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    argv = ["train", "trainer.epochs=2"]
    pin_run_dir(argv)
    assert argv[2:] == ["hydra.run.dir=outputs/torchrun-3f2a", "hydra.sweep.dir=multirun/torchrun-3f2a"]
    assert launched_place() == Place(1, 2, 1, 2, "torchrun")
    given = ["train", "hydra.run.dir=mine"]
    pin_run_dir(given)
    assert given == ["train", "hydra.run.dir=mine", "hydra.sweep.dir=multirun/torchrun-3f2a"]


def test_torchrun_without_a_unique_run_id_is_refused(launcher_free_env):
    from trainrun.cli.ranks import pin_run_dir
    from trainrun.errors import TrainrunError

    launcher_free_env.update(TORCHELASTIC_RUN_ID="none", RANK="0", WORLD_SIZE="2", MASTER_ADDR="h")
    with pytest.raises(TrainrunError, match="--standalone"):
        pin_run_dir(["train"])
    given = ["train", "hydra.run.dir=x", "hydra.sweep.dir=y"]
    pin_run_dir(given)  # folders given explicitly: fine
    assert given == ["train", "hydra.run.dir=x", "hydra.sweep.dir=y"]


def test_srun_tasks_get_ranks_and_one_folder(launcher_free_env):
    from trainrun.cli.ranks import Place, launched_place, pin_run_dir

    launcher_free_env.update(SLURM_JOB_ID="77", SLURM_STEP_ID="3", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="1",
                   SLURM_LOCALID="1", SLURM_STEP_NUM_NODES="1", SLURM_JOB_NODELIST="node7")
    argv = ["train"]
    pin_run_dir(argv)
    assert argv[1] == "hydra.run.dir=outputs/slurm-77-3"
    assert launched_place() == Place(1, 2, 1, 2, "slurm")
    # exported for init_process_group(env://): the job's first node, a port drawn from the job id
    assert (launcher_free_env["MASTER_ADDR"], launcher_free_env["MASTER_PORT"]) == ("node7", str(20000 + 77))
    assert (launcher_free_env["RANK"], launcher_free_env["WORLD_SIZE"]) == ("1", "2")


def test_one_slurm_task_is_alone(launcher_free_env):
    from trainrun.cli.ranks import launched_place, pin_run_dir

    launcher_free_env.update(SLURM_JOB_ID="77", SLURM_NTASKS="1", SLURM_PROCID="0")
    argv = ["train"]
    pin_run_dir(argv)
    assert argv == ["train"] and launched_place() is None


@pytest.mark.parametrize(("nodelist", "first"), [
    ("gpu-a[01-02]", "gpu-a01"), ("gpu-a[01-02,07],cpu3", "gpu-a01"), ("node7", "node7"),
    ("a,b", "a"), ("node[3-4]-ib", "node3-ib"), ("rack[1-2]-n[01-04]", "rack1-n01"), ("", None),
])
def test_first_host_of_a_slurm_nodelist(nodelist, first):
    from trainrun.cli.ranks import first_host

    assert first_host(nodelist) == first


def test_srun_on_two_nodes_without_the_slurm_extra_finds_the_master(launcher_free_env):
    """The srun path reads the hostlist itself (no submitit, no scontrol)."""
    from trainrun.cli.ranks import Place, launched_place

    launcher_free_env.update(SLURM_JOB_ID="9", SLURM_STEP_NUM_TASKS="16", SLURM_PROCID="9", SLURM_LOCALID="1",
                   SLURM_STEP_NUM_NODES="2", SLURM_JOB_NODELIST="gpu-a[01-02]")
    assert launched_place() == Place(9, 16, 1, 8, "slurm")
    assert launcher_free_env["MASTER_ADDR"] == "gpu-a01"


def test_the_resume_command_starts_the_same_processes():
    from trainrun.cli.main import resume_command
    from trainrun.cli.ranks import Place

    run = Path("/runs/a")
    assert resume_command(run, ["data=csv", "resume=x"], Place(0, 2, 0, 2, "torchrun")) == (
        "torchrun --standalone --nproc_per_node=2 -m trainrun.cli hydra.run.dir=/runs/a resume=auto data=csv")
    two_nodes = resume_command(run, [], Place(0, 16, 0, 8, "torchrun"))
    assert two_nodes.startswith("torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d")
    assert resume_command(run, [], Place(0, 16, 0, 8, "slurm")).startswith("srun --nodes=2 --ntasks-per-node=8 train ")
    assert resume_command(run, ["trainer.devices=2"], Place(0, 1, 0, 1, "none")) == (
        "train hydra.run.dir=/runs/a resume=auto trainer.devices=2")


def test_a_reused_torchrun_run_id_does_not_overwrite_an_earlier_run(launcher_free_env, tmp_path, monkeypatch):
    from trainrun.cli.ranks import pin_run_dir
    from trainrun.errors import TrainrunError

    monkeypatch.chdir(tmp_path)
    launcher_free_env.update(TORCHELASTIC_RUN_ID="job7", RANK="0", WORLD_SIZE="2", MASTER_ADDR="h")
    earlier = tmp_path / "outputs" / "torchrun-job7"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "train.log").touch()
    pin_run_dir(["train"])  # what a run leaves before training: nothing to lose
    (earlier / "summary.json").touch()
    with pytest.raises(TrainrunError, match="holds an earlier run") as refused:
        pin_run_dir(["train"])
    assert refused.value.key == "hydra.run.dir" and "--rdzv-id" in refused.value.fix
    pin_run_dir(["train", "resume=auto"])  # continuing it is what resume=auto is for
    launcher_free_env["TORCHELASTIC_RESTART_COUNT"] = "1"  # torchrun --max-restarts started them again
    restarted = ["train"]
    pin_run_dir(restarted)
    assert restarted[1] == "resume=auto"


def test_a_collective_timeout_names_its_key():
    from trainrun.cli.failures import reworded
    from trainrun.errors import TrainrunError

    try:
        try:
            raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 20000ms for recv")
        except RuntimeError as cause:
            raise TrainrunError("training (epoch 1, batch 4) failed: RuntimeError: ...", key="model._target_",
                                exit_code=1) from cause
    except TrainrunError as err:
        said = reworded(err, 20.0)
    assert said.key == "trainer.ddp_timeout_s" and said.exit_code == 1
    assert said.message.startswith("training (epoch 1, batch 4) failed: a collective waited 20 s")
    assert "(Timed out waiting 20000ms for recv)" in said.message
    other = TrainrunError("data failed: ValueError: no", key="data.path")
    assert reworded(other, 20.0) is other


def test_skip_with_accumulation_is_refused_under_ddp(compose):
    from trainrun.cli.launch import check_supported
    from trainrun.errors import TrainrunError

    check_supported(compose("trainer.on_nonfinite=skip"))
    check_supported(compose("trainer.accumulate_grad_batches=4"))
    with pytest.raises(TrainrunError, match="drift apart"):
        check_supported(compose("trainer.on_nonfinite=skip", "trainer.accumulate_grad_batches=4"))



def _lost(rank_time: float) -> dict:
    info = {"message": "training (epoch 1, batch 5) failed: another process of the group ended", "key": None,
            "fix": "...", "exit_code": 1, "time": rank_time, "what": "training (epoch 1, batch 5)", "hung": False,
            "timed_out": None, "peer_lost": True}
    return {"exitcode": 1, "signal": "<N/A>", "time": rank_time, "data": {"trainrun": info}}


def test_a_rank_that_quit_with_status_0_is_named():
    """Adversarial pass: os._exit(0) in forward on rank 1 gave only rank 0's "another process
    lost its connection": torchrun counts exit 0 as no failure, so rank 1 was in no record."""
    from trainrun.cli.failures import launch_error

    said = launch_error({0: _lost(10.0)}, 2, 30.0)
    assert said.message.startswith("process 1 of 2 exited with status 0 before the run ended")
    both_lost = launch_error({0: _lost(10.0), 1: _lost(11.0)}, 2, 30.0)  # every rank in a record: as before
    assert "status 0" not in both_lost.message


def test_a_completed_run_stands_when_the_signal_came_after_its_end(tmp_path):
    """Adversarial pass: SIGTERM just after the last step ended rank 0 after it wrote the run
    folder's summary.json (completed) but before its summary reached train: exit 143 and
    "stopped by SIGTERM before the workers saved". A summary.json rank 0 wrote in this launch
    that says completed now stands; any other status is still the signal's stop."""
    import json
    import signal

    from trainrun.cli.devices import _outcome
    from trainrun.errors import TrainrunError

    launch = tmp_path / "launch"  # rank 0's summary never came back: the launch folder is empty
    launch.mkdir()
    written = tmp_path / "summary.json"
    written.write_text(json.dumps({"status": "completed", "epochs": 4}))
    assert _outcome(launch, 143, [signal.SIGTERM], 2, None, completed=written)["epochs"] == 4
    with pytest.raises(TrainrunError, match="stopped by SIGTERM"):
        _outcome(launch, 143, [signal.SIGTERM], 2, None)  # none written in this launch
    written.write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(TrainrunError, match="stopped by SIGTERM"):
        _outcome(launch, 143, [signal.SIGTERM], 2, None, completed=written)


def test_a_second_ctrl_c_ends_the_agent_at_once(monkeypatch):
    """Adversarial pass: the second SIGINT raised KeyboardInterrupt inside torch's shutdown,
    whose ``finally`` stopped the workers again with SIGTERM and waited for their save (exit
    143, "stopped by SIGTERM"). It now ends the agent at once (its workers die with it); a
    repeated SIGTERM is ignored, as SLURM signals every process of a step."""
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException

    from trainrun.cli.agent import _handler

    exits: list[int] = []
    monkeypatch.setattr("trainrun.cli.agent.os._exit", exits.append)
    handle = _handler(set())
    with pytest.raises(SignalException):
        handle(signal.SIGINT, None)  # the first: torchrun's own stop (forwarded, then the timeout)
    handle(signal.SIGINT, None)
    assert exits == [130]
    again = _handler(set())
    with pytest.raises(SignalException):
        again(signal.SIGTERM, None)
    again(signal.SIGTERM, None)  # ignored
    assert exits == [130]


def test_a_rank_that_hung_before_training_is_named_from_torchruns_stop():
    """Adversarial pass: rank 1 hung in its preflight, before its signal handling was set up, so
    torchrun's SIGTERM after rank 0's timeout ended it at once, and that was taken for an echo:
    the paragraph was rank 0's "a collective waited 10 s", naming nobody. A timeout whose only
    other record is a rank torchrun stopped names that rank."""
    from trainrun.cli.failures import launch_error

    timed_out = _lost(10.0)
    timed_out["data"]["trainrun"].update(peer_lost=False, timed_out="Timed out waiting 10000ms for recv",
                                         key="trainer.ddp_timeout_s")
    stopped = {"exitcode": -15, "signal": "SIGTERM", "time": 11.0, "data": {"message": "<NONE>"}}  # no error file
    said = launch_error({0: timed_out, 1: stopped}, 2, 10.0)
    assert said.message.startswith("process 1 of 2 stopped responding: process 0 waited 10 s"), said.message
    assert said.message.endswith("process 1 was stopped by torchrun") and said.key == "trainer.ddp_timeout_s"
    raised = _lost(10.0)
    raised["data"]["trainrun"].update(peer_lost=False, message="boom", key="model._target_")
    assert launch_error({0: raised, 1: stopped}, 2, 10.0).message == "(process 0 of 2) boom"  # the echo stays one
