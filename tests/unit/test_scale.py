"""In-process checks of what multi-process runs are built on: threads from usable CPUs, the
epoch history kept once, sharded checkpoint folders (published whole, read safely, resharded
losses), and the launch's one paragraph for a failure. The real runs are in test_scale.py."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from trainrun.build.threads import _cgroup_quota
from trainrun.cli.failures import launch_error
from trainrun.engine import publish, sharded
from trainrun.engine.collectives import rank_row
from trainrun.engine.history import HistoryStore, append, rows_of
from trainrun.errors import TrainrunError
from trainrun.files import atomic_write

# --------------------------------------------------------------------------- threads


def cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> float | None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "proc").write_text(lines)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text)
    return _cgroup_quota(tmp_path / "fs", tmp_path / "proc")


def test_the_cgroup_quota_is_the_tightest_up_the_tree(tmp_path):
    # v2: the job's own limit and its parent's; the tighter one counts
    assert cgroup(tmp_path, "0::/job/step\n", {"job/step/cpu.max": "250000 100000\n",
                                                "job/cpu.max": "150000 100000\n"}) == 1.5
    # v1: quota / period, -1 for none
    job = "cpu,cpuacct/slurm/job7"
    assert cgroup(tmp_path / "v1", "4:cpu,cpuacct:/slurm/job7\n", {f"{job}/cpu.cfs_quota_us": "200000",
                                                                    f"{job}/cpu.cfs_period_us": "100000"}) == 2.0
    assert cgroup(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"}) is None
    assert cgroup(tmp_path / "odd", "0::/x\n", {"x/cpu.max": "garbage\n"}) is None
    assert _cgroup_quota(tmp_path / "nowhere", tmp_path / "no-proc") is None


# --------------------------------------------------------------------------- history kept once


ROWS = [{"epoch": i, "train_loss": 1.0 / i, "val_loss": float("nan") if i == 2 else 0.5} for i in (1, 2, 3)]


def test_a_checkpoint_refers_to_the_rows_written_before_it(tmp_path):
    path = tmp_path / "history.jsonl"
    store = HistoryStore(path)
    first, data, whole = store.reference(ROWS[:2])
    assert whole and first["rows"] == 2
    atomic_write(path, lambda f: f.write(data))
    second, more, whole = store.reference(ROWS)
    assert not whole and more.count(b"\n") == 1  # the new row only: O(1) per epoch
    append(path, more)
    append(path, b'{"epoch": 4, "train_lo')  # a kill in the middle of the next append
    checkpoint = tmp_path / "last.pt"
    got = rows_of(checkpoint, first)
    assert [r["epoch"] for r in got] == [1, 2] and got[1]["val_loss"] != got[1]["val_loss"]  # NaN kept
    assert [r["epoch"] for r in rows_of(checkpoint, second)] == [1, 2, 3]
    assert rows_of(checkpoint, ROWS) == ROWS  # an older checkpoint holds its rows itself


def test_a_history_that_changed_or_is_missing_is_refused(tmp_path):
    path = tmp_path / "history.jsonl"
    reference, data, _ = HistoryStore(path).reference(ROWS)
    path.write_bytes(data.replace(b'"epoch": 3', b'"epoch": 4'))
    with pytest.raises(TrainrunError, match="holds other rows"):
        rows_of(tmp_path / "last.pt", reference)
    path.write_bytes(data[:10])
    with pytest.raises(TrainrunError, match="holds fewer") as refused:
        rows_of(tmp_path / "last.pt", reference)
    assert refused.value.key == "resume" and "copy the checkpoints/ folder whole" in refused.value.fix
    path.unlink()
    with pytest.raises(TrainrunError, match="holds fewer"):
        rows_of(tmp_path / "last", reference)


# --------------------------------------------------------------------------- sharded folders


def test_split_keeps_only_tensors_for_dcp():
    state = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {"w": {"step": torch.tensor(3.0), "x": None}},
                                                           "param_groups": [{"lr": 0.1, "params": ["w"]}]}}
    tensors, skeleton = sharded.split(state)
    assert sorted(tensors) == ["model/w", "optimizer/state/w/step"]
    assert skeleton["optimizer"]["param_groups"] == [{"lr": 0.1, "params": ["w"]}]
    assert sharded.join(skeleton, tensors) == state


def make_folder(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / publish.META).write_text(marker)
    (path / "__0_0.distcp").write_text(marker)
    return path


def test_a_folder_is_published_whole_and_a_kill_between_renames_is_recovered(tmp_path, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    publish.publish(make_folder(checkpoints / ".last.1.tmp", "one"), checkpoints / "last")
    assert (checkpoints / "last" / publish.META).read_text() == "one"
    # killed between moving the previous one aside and moving the new one in
    replace = os.replace
    calls = []

    def killed_at_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after it runs
        return replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        publish.publish(make_folder(checkpoints / ".last.2.tmp", "two"), checkpoints / "last")
    monkeypatch.setattr(publish.os, "replace", replace)
    assert not (checkpoints / "last").exists()
    publish.recover(checkpoints)  # the next start (or resume's lookup) puts the previous one back
    assert (checkpoints / "last" / publish.META).read_text() == "one"
    publish.publish(checkpoints / ".last.2.tmp", checkpoints / "last")
    assert (checkpoints / "last" / publish.META).read_text() == "two"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last"]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_dcp_metadata_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system|os\.system"):
        sharded.SafeReader(folder).read_metadata()
    assert not (tmp_path / "pwned").exists()


def test_dcp_metadata_of_a_real_save_reads_and_non_tensors_are_refused(tmp_path):
    import torch.distributed.checkpoint as dcp

    dcp.save({"model/w": torch.arange(4.0)}, checkpoint_id=str(tmp_path / "ok"), no_dist=True)
    assert sharded.read_whole(tmp_path / "ok")["model/w"].tolist() == [0, 1, 2, 3]
    dcp.save({"model/w": torch.arange(4.0), "lr": 0.1}, checkpoint_id=str(tmp_path / "bytes"), no_dist=True)
    with pytest.raises(pickle.UnpicklingError, match="not tensors"):
        sharded.SafeReader(tmp_path / "bytes").read_metadata()


# --------------------------------------------------------------------------- an open epoch, shared out again


def test_the_open_epochs_losses_are_shared_out_on_another_world_size():
    # 2 processes saved batch losses of 3 global batches (sizes 3+3, 3+3, 2+1), 2 done
    saved = torch.tensor([[0.5, 0.7, 0.0], [0.9, 0.1, 0.0]])
    sizes2 = torch.tensor([[3.0, 3.0, 2.0], [3.0, 3.0, 1.0]])
    sums = (saved * sizes2).sum(0)
    assert torch.equal(rank_row(saved, 1, 2, sums, sizes2[1]), saved[1])  # same world: as saved
    one = rank_row(saved, 0, 1, sums, sizes2.sum(0))
    assert torch.allclose(one[:2], torch.tensor([0.7, 0.4]))  # each global batch's mean
    three = [rank_row(saved, r, 3, sums, torch.tensor([2.0, 2.0, 1.0])) for r in range(3)]
    assert torch.allclose(sum(t * torch.tensor([2.0, 2.0, 1.0]) for t in three), sums)
    with pytest.raises(TrainrunError, match="splits the epoch's batches differently"):
        rank_row(saved, 0, 3)  # an older checkpoint without the sums


# --------------------------------------------------------------------------- one paragraph for a launch


def ours(message: str, *, time: float, peer_lost: bool = False, timed_out: str | None = None,
         hung: bool = False, exit_code: int = 1) -> dict:
    return {"exitcode": 1, "signal": "<N/A>", "time": int(time), "data": {"trainrun": {
        "message": message, "key": "model._target_", "fix": "fix it", "exit_code": exit_code, "time": time,
        "what": "training (epoch 1, batch 4)", "hung": hung, "timed_out": timed_out, "peer_lost": peer_lost}}}


def test_the_launch_names_the_cause_not_its_echoes():
    killed = {"exitcode": -9, "signal": "SIGKILL", "time": 5, "data": {}}
    stopped = {"exitcode": -15, "signal": "SIGTERM", "time": 5, "data": {}}
    said = launch_error({0: stopped, 1: killed}, 2, 20.0)
    assert said.message.startswith("process 1 of 2 was killed by SIGKILL")
    said = launch_error({0: ours("lost", time=2.0, peer_lost=True), 1: ours("boom", time=3.0)}, 2, None)
    assert said.message == "(process 1 of 2) boom" and said.key == "model._target_"
    # rank 1 raised; torchrun's SIGTERM ended rank 0 before it wrote anything (seen under load)
    said = launch_error({0: stopped, 1: ours("boom", time=3.0)}, 2, None)
    assert said.message == "(process 1 of 2) boom" and said.key == "model._target_"
    said = launch_error({0: ours("waited", time=20.0, timed_out="Timed out waiting 20000ms"),
                         1: ours("hung", time=25.0, hung=True)}, 2, 20.0)
    assert said.message.startswith("process 1 of 2 stopped responding: process 0 waited 20 s")
    assert said.key == "trainer.ddp_timeout_s"
    config = launch_error({0: ours("bad value", time=1.0, exit_code=2), 1: ours("bad value", time=1.0, exit_code=2)},
                          2, None)
    assert config.message == "bad value" and config.exit_code == 2
    assert json.dumps(launch_error({0: {"exitcode": 3, "signal": "<N/A>", "time": 1, "data": {}}}, 2, None).message)


# --------------------------------------------------------------------------- the launch's small promises


def test_static_rendezvous_runs_with_its_folder_named(launcher_free_env):
    """torchrun --node-rank=<r> --master-addr=... (no --rdzv-id): TORCHELASTIC_RUN_ID is "none".
    A single run whose hydra.run.dir is given needs no id (it was refused, telling the user to
    give the very key already given); a sweep needs its sweep folder named."""
    from trainrun.cli.ranks import pin_run_dir

    launcher_free_env.update(TORCHELASTIC_RUN_ID="none", RANK="1", WORLD_SIZE="2", MASTER_ADDR="h")
    given = ["train", "hydra.run.dir=/shared/exp42"]
    pin_run_dir(given)
    assert given == ["train", "hydra.run.dir=/shared/exp42"]
    with pytest.raises(TrainrunError, match="no unique run id") as refused:
        pin_run_dir(["train", "-m", "hydra.run.dir=/shared/exp42"])
    assert refused.value.key == "hydra.sweep.dir"


def test_a_collective_that_lost_its_peer_says_so_instead_of_blaming_the_model():
    from trainrun.cli.failures import reworded

    try:
        try:
            raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] "
                               "Connection closed by peer [127.0.0.1]:41234")
        except RuntimeError as cause:
            raise TrainrunError("training (epoch 1, batch 4) failed: RuntimeError: ...", key="model._target_",
                                exit_code=1) from cause
    except TrainrunError as err:
        said = reworded(err, None)
    assert said.key is None and said.exit_code == 1
    assert said.message.startswith("training (epoch 1, batch 4) failed: another process of the group ended")
    assert "(Connection closed by peer [127.0.0.1]:41234)" in said.message


def test_shard_ids_a_hostile_trainrun_pt_gives_are_refused_in_one_paragraph(tmp_path):
    """Adversarial pass: trainrun.pt (read with weights_only, so any plain value) could give ids
    that are not numbers: int("x") was a traceback. Anything but the id read back is refused."""
    from torch.distributed.checkpoint import metadata

    meta = metadata.Metadata(state_dict_metadata={})
    loaded = {f"{sharded.SHARD_ID}/0": torch.tensor([7])}
    sharded.check_shard_ids(tmp_path, meta, loaded, [7], "run")  # as written
    for ids in (["x"], [7.5], [None], [8], ["7"]):
        with pytest.raises(TrainrunError, match="mixes checkpoints"):
            sharded.check_shard_ids(tmp_path, meta, loaded, ids, "run")
