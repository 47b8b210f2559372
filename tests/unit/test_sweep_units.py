"""Sweeps in-process (no subprocess): the Optuna search space from Hydra's sweep syntax, trials
left behind by a dead driver, what a job does with its folder on a rerun, the visible GPUs."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.trainrun_launcher._optuna_space import parse
from trainrun.cli import gpus
from trainrun.cli import study as studies
from trainrun.cli.job_memory import ReleaseJobConfigs
from trainrun.cli.rerun import DIGEST, check_same_sweep, config_digest, decide, move_aside
from trainrun.cli.sweep import run_job
from trainrun.errors import TrainrunError

# --------------------------------------------------------------------------- the search space


def test_hydra_sweep_syntax_becomes_optuna_distributions() -> None:
    space = parse({"optim": "choice(adam, adamw, sgd)", "optim.lr": "tag(log, interval(1e-4, 0.3))",
                   "model.hidden": "choice([64], [128,128])", "data.batch_size": "range(16, 80, 16)",
                   "optim.momentum": "interval(0.8, 0.99)", "trainer.epochs": "tag(int, interval(2, 9))",
                   "x.f": "range(0.1, 0.5, 0.1)", "x.n": "tag(log, int, interval(1, 100))"},
                  ["trainer.seed=3", "+optim.nesterov=choice(true,false)"])
    d = space.distributions
    assert d["optim"] == CategoricalDistribution(["adam", "adamw", "sgd"])
    assert d["optim.lr"] == FloatDistribution(1e-4, 0.3, log=True)
    assert d["model.hidden"] == CategoricalDistribution(["[64]", "[128,128]"])
    assert d["data.batch_size"] == IntDistribution(16, 64, step=16)
    assert d["optim.momentum"] == FloatDistribution(0.8, 0.99)
    assert d["trainer.epochs"] == IntDistribution(2, 9)
    assert d["x.n"] == IntDistribution(1, 100, log=True)
    assert isinstance(d["x.f"], FloatDistribution) and d["x.f"].step == pytest.approx(0.1)
    assert d["optim.nesterov"] == CategoricalDistribution([True, False])
    assert space.fixed == ["trainer.seed=3"]
    overrides = space.overrides({"optim.nesterov": True, "model.hidden": "[128,128]", "optim": "a,b"})
    assert overrides == ["+optim.nesterov=True", "model.hidden=[128,128]", "optim='a,b'", "trainer.seed=3"]


def test_the_command_line_wins_over_the_preset_and_a_fixed_value_stops_a_search() -> None:
    space = parse({"optim.lr": "interval(0.1, 0.2)", "optim": "choice(adam,sgd)"}, ["optim.lr=0.05"])
    assert set(space.distributions) == {"optim"} and space.fixed == ["optim.lr=0.05"]


@pytest.mark.parametrize("params, words", [
    ({"optim.lr": "interval(0.3, 0.1)"}, "is empty"),
    ({"optim.lr": "tag(log, interval(0, 1))"}, "above 0"),
    ({"optim.lr": "interval(0.1"}, "hydra.sweeper.params"),
    ({"optim.lr": "0.1"}, "nothing to search"),
])
def test_a_space_optuna_cannot_sample_is_refused_with_the_key(params: dict, words: str) -> None:
    with pytest.raises(TrainrunError) as caught:
        parse(params, [])
    assert words in str(caught.value) and caught.value.key == "hydra.sweeper.params"


# --------------------------------------------------------------------------- left behind


def _study(tmp_path: Path) -> optuna.Study:
    spec = studies.storage_spec(f"journal:{tmp_path / 's.journal'}", tmp_path)
    return studies.create(spec, study_name="t", direction="minimize")


def _dead_driver() -> str:
    """A driver on this host whose process has ended: this pid, but another start time (the pid
    of a process that ended may be reused)."""
    return f"{studies.Driver.this().host}:{os.getpid()}:0"


def test_trials_of_a_dead_driver_are_collected_or_failed_and_live_ones_left(tmp_path: Path) -> None:
    study = _study(tmp_path)
    finished, lost, live, foreign = (study.ask() for _ in range(4))
    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / "summary.json").write_text(json.dumps(
        {"status": "completed", "objective": {"name": "val_loss", "value": 0.25}}))
    for trial, driver in ((finished, _dead_driver()), (lost, _dead_driver()), (live, studies.Driver.this().text())):
        trial.set_user_attr(studies.DRIVER, driver)
        trial.set_user_attr(studies.JOB_DIR, str(job if trial is finished else tmp_path / "none"))
    foreign.set_user_attr(studies.DRIVER, "elsewhere:1:1")  # another host, its lease renewed just now
    foreign.set_user_attr(studies.LEASE, __import__("time").time())

    lines = studies.clean_left_behind(study, stale_after_s=300)

    states = {t.number: t.state for t in study.get_trials()}
    assert states == {finished.number: TrialState.COMPLETE, lost.number: TrialState.FAIL,
                      live.number: TrialState.RUNNING, foreign.number: TrialState.RUNNING}
    assert study.trials[finished.number].value == 0.25
    assert studies.LEFT in study.trials[lost.number].user_attrs
    assert len(lines) == 2 and "collected as COMPLETE" in lines[0] and "marked FAIL" in lines[1]
    # A lease that was not renewed for longer than stale_after_s: left behind too.
    assert len(studies.clean_left_behind(study, stale_after_s=-1)) == 1
    assert study.trials[foreign.number].state == TrialState.FAIL


@pytest.mark.parametrize("summary, state", [
    (None, TrialState.FAIL),
    ({"status": "completed", "objective": {"value": 0.5}}, TrialState.COMPLETE),
    ({"status": "stopped early", "objective": {"value": 0.5}}, TrialState.COMPLETE),
    ({"status": "completed", "objective": {"value": float("nan")}}, TrialState.FAIL),
    ({"status": "pruned", "objective": {"value": 0.9}}, TrialState.PRUNED),
    ({"status": "failed", "error": "boom"}, TrialState.FAIL),
    ({"status": "interrupted"}, TrialState.FAIL),
])
def test_a_job_folder_says_its_trials_state(tmp_path: Path, summary: dict | None, state: TrialState) -> None:
    if summary is not None:
        (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert studies.outcome(tmp_path)[0] == state


def test_a_database_password_is_not_shown() -> None:
    assert studies.shown("postgresql+psycopg://me:secret@db:5432/x") == "postgresql+psycopg://me:***@db:5432/x"
    assert studies.storage_spec(None, Path("/s")) == "journal:/s/optuna.journal"


# --------------------------------------------------------------------------- a job folder on a rerun


def _cfg(lr: float = 0.1, **extra: object):
    return OmegaConf.create({"optim": {"lr": lr}, "trainer": {"epochs": 2, "progress": "bar"},
                             "resume": None, "print_config": False, **extra})


def test_what_a_job_does_with_the_folder_an_earlier_run_left(tmp_path: Path) -> None:
    cfg = _cfg()
    assert decide(cfg, tmp_path)[0] == "fresh"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert decide(cfg, tmp_path)[0] == "resume"  # killed before its summary: continue it
    for status, decision in (("completed", "skip"), ("stopped early", "skip"), ("pruned", "skip"),
                             ("interrupted", "resume"), ("failed", "resume")):
        (tmp_path / "summary.json").write_text(json.dumps({"status": status, DIGEST: config_digest(cfg)}))
        assert decide(cfg, tmp_path)[0] == decision, status
    # Run-control keys do not change what is computed; a value that does is another config.
    assert config_digest(_cfg(print_config=True)) == config_digest(cfg)
    assert config_digest(OmegaConf.merge(cfg, {"trainer": {"progress": "none"}})) == config_digest(cfg)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", DIGEST: config_digest(cfg)}))
    assert decide(_cfg(lr=0.2), tmp_path)[0] == "replace"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("log")
    moved = move_aside(tmp_path)
    assert moved.name == "previous-1" and (moved / "summary.json").is_file() and (moved / "checkpoints").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "previous-1", "train.log"]


def test_a_sweep_into_a_folder_of_other_overrides_is_refused(tmp_path: Path) -> None:
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["optim.lr=0.1,0.2", "data=iris"]}}}),
                   tmp_path / "multirun.yaml")
    same = OmegaConf.create({"hydra": {"overrides": {"task": ["data=iris", "optim.lr=0.1,0.2"]}}})
    check_same_sweep(same, tmp_path)
    other = OmegaConf.create({"hydra": {"overrides": {"task": ["optim.lr=0.3", "data=iris"]}}})
    with pytest.raises(TrainrunError) as caught:
        check_same_sweep(other, tmp_path)
    assert "optim.lr=0.1,0.2" in str(caught.value) and caught.value.key == "hydra.sweep.dir"


# --------------------------------------------------------------------------- GPU slots


def test_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,7")
    assert gpus.visible_gpus(8) == ["2", "5", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.visible_gpus(8) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.visible_gpus(2) == ["0", "1"] and gpus.visible_gpus(0) == []


def test_no_gpus_handed_out_leaves_the_job_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpus.GPUS_ENV, raising=False)
    assert gpus.claim_devices(tmp_path, 1, 0) is None


@pytest.mark.parametrize("mode", [RunMode.RUN, RunMode.MULTIRUN])
def test_a_finished_jobs_return_gives_back_its_configs_and_a_sweep_freezes_once(mode):
    """A sweep's jobs leave their configs behind no more, and what they share is frozen once,
    after the first job (a single run pays no full collection at its end)."""
    release = ReleaseJobConfigs()
    frozen_before = gc.get_freeze_count()
    try:
        for _ in range(2):
            ret = JobReturn(overrides=["optim.lr=0.1"], cfg=OmegaConf.create({"a": 1}), status=JobStatus.COMPLETED,
                            hydra_cfg=OmegaConf.create({"hydra": {"mode": mode}}), working_dir=".")
            ret.return_value = 0.5
            release.on_job_end(config=ret.cfg, job_return=ret)
            assert ret.cfg is None and ret.hydra_cfg is None and ret.return_value == 0.5
            assert release.frozen == (mode == RunMode.MULTIRUN)
        assert (gc.get_freeze_count() > frozen_before) == (mode == RunMode.MULTIRUN)
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_rank_that_does_not_own_the_job_folder_never_writes_its_summary(tmp_path, monkeypatch, compose, outcome):
    """A job with several tasks (submitit's tasks_per_node, srun): rank 1 ended first and merged
    its digest into a summary.json rank 0 had not written yet; rank 0's whole summary was then
    replaced by that stub in one interleaving (CI: a finished run recorded as failed)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = compose("data=iris")

    def train_job(cfg, run_dir, judges):
        if outcome == "failed":
            raise TrainrunError("boom")
        return {"status": "completed", "objective": {"name": "val_loss", "value": 0.5}}

    run_job(cfg, tmp_path, train_job)
    assert not (tmp_path / "summary.json").exists()
