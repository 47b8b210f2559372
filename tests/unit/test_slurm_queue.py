"""What a sweep on SLURM says and checks before and while it waits (trainrun.cli.slurm_queue):
the preset fitted to the partition's nodes, a request set by hand that no node can hold refused,
and what a queued job waits for. Unit tests with a made-up partition and a made-up job."""

from __future__ import annotations

import pytest

from trainrun.cli import slurm_queue
from trainrun.cli.slurm_queue import Partition, explicit_keys, fit_request, gpus_of, minutes, wait_result
from trainrun.errors import TrainrunError

SMALL = Partition(name="debug", nodes=1, cpus=2, memory_mb=4000, gpus=0, time_limit_min=30)
PRESET = {"partition": None, "cpus_per_task": 4, "mem_gb": 8, "timeout_min": 60, "nodes": 1,
          "tasks_per_node": 1, "gpus_per_node": None}


def test_slurm_time_and_gres_formats():
    assert minutes("infinite") is None and minutes("UNLIMITED") is None
    assert minutes("30:00") == 30 and minutes("1-02:00:00") == 26 * 60 and minutes("90") == 90
    assert minutes("00:00:30") == 1  # a part of a minute is a minute
    assert gpus_of("gpu:a100:4(S:0-1)") == 4 and gpus_of("gpu:2,mps:100") == 2 and gpus_of("(null)") == 0


def test_explicit_keys_are_the_launcher_keys_typed():
    assert explicit_keys(["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=8",
                          "+hydra.launcher.qos=high", "hydra.sweep.dir=x"]) == {"cpus_per_task", "qos"}


def test_the_preset_is_fitted_to_the_partition_and_says_so(monkeypatch):
    monkeypatch.setattr(slurm_queue, "partition_info", lambda name: SMALL)
    said: list[str] = []
    fitted = fit_request(PRESET, explicit=set(), say=said.append)
    assert fitted["cpus_per_task"] == 2 and fitted["mem_gb"] == 3 and fitted["timeout_min"] == 30
    assert fitted["nodes"] == 1 and fitted["gpus_per_node"] is None
    assert len(said) == 1 and "cpus_per_task=2 (the preset's 4)" in said[0] and "partition debug" in said[0]
    two_tasks = fit_request({**PRESET, "tasks_per_node": 2}, explicit={"tasks_per_node"}, say=said.append)
    assert two_tasks["cpus_per_task"] == 1  # 2 CPUs shared by 2 tasks


@pytest.mark.parametrize(("key", "value", "words"), [
    ("cpus_per_task", 8, "2 CPUs per node"), ("mem_gb", 64, "4000 MB of memory"),
    ("gpus_per_node", 1, "0 GPU(s) per node"), ("timeout_min", 600, "time limit of 30 minutes"),
    ("nodes", 2, "1 node(s)"),
])
def test_a_request_typed_by_hand_that_cannot_fit_is_refused(monkeypatch, key, value, words):
    monkeypatch.setattr(slurm_queue, "partition_info", lambda name: SMALL)
    with pytest.raises(TrainrunError) as refused:
        fit_request({**PRESET, key: value}, explicit={key}, say=print)
    assert refused.value.key == f"hydra.launcher.{key}" and words in refused.value.message
    assert "pending for ever" in refused.value.message


def test_a_preset_gpu_the_partition_lacks_cannot_be_fitted_to_zero(monkeypatch):
    monkeypatch.setattr(slurm_queue, "partition_info", lambda name: SMALL)
    with pytest.raises(TrainrunError, match="gpus_per_node=1"):
        fit_request({**PRESET, "gpus_per_node": 1}, explicit=set(), say=print)


def test_without_a_slurm_client_nothing_is_checked(monkeypatch):
    monkeypatch.setattr(slurm_queue, "_run", lambda args: None)
    assert fit_request({**PRESET, "cpus_per_task": 512}, explicit={"cpus_per_task"}, say=print)["cpus_per_task"] == 512


class FakeJob:
    job_id = "12_0"

    def __init__(self, polls: int) -> None:
        self.polls = polls

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def results(self) -> list[str]:
        return ["result"]


def test_waiting_says_what_the_job_waits_for_on_change_and_every_minute():
    now = [0.0]
    states = iter([("PENDING", "Resources", "12 s")] * 40 + [("RUNNING", "None", "0:03")] * 100)
    said: list[str] = []
    result = wait_result(FakeJob(polls=100), "job #0", say=said.append, clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s), state=lambda job_id: next(states))
    assert result == "result"
    assert said[0] == ("waiting for job #0 (SLURM 12_0): PENDING for 12 s, reason Resources "
                       "(squeue shows why; scancel to give up)")
    assert any(line.endswith("RUNNING for 0:03") for line in said)
    # 200 s of waiting: the first line at 10 s, once more after a minute, then the state change,
    # then once a minute while it runs
    assert 3 <= len(said) <= 6


def test_a_job_done_at_once_says_nothing():
    said: list[str] = []
    assert wait_result(FakeJob(polls=0), "job #0", say=said.append, state=lambda job_id: None) == "result"
    assert said == []
