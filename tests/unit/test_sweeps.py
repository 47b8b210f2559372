"""Sweeps: multirun folders, failed jobs, the joblib and submitit launchers, Optuna searches and
the sweep summary (``summary.csv`` written by the ``SweepSummary`` Hydra callback)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from trainrun.cli.gpus import parallel_jobs
from trainrun.report.sweep import finite_or_none, summarize


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_job(sweep_dir: Path, num: int, overrides: list[str], summary: dict | None) -> Path:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    lines = "\n".join(f"      - {o}" for o in overrides)
    (job / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  job:\n    num: {num}\n  overrides:\n    task:\n{lines}\n")
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def done(value: float, status: str = "completed") -> dict:
    row = {"epoch": 3, "step": 30, "train_loss": value / 2, "val_loss": value, "val_acc": 1 - value,
           "lr": 0.1, "seconds": 0.1}
    return {"status": status, "objective": {"name": "val_loss", "value": value,
                                            "direction": "minimize"},
            "final": row, "best": row, "best_epoch": 3, "epochs_run": 3, "total_seconds": 1.5}


def test_summary_sorts_best_first_and_lists_every_failure(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    write_job(sweep_dir, 0, ["optim.lr=0.1"], done(0.5))
    write_job(sweep_dir, 1, ["optim.lr=0.2"], done(0.2, "stopped early"))
    write_job(sweep_dir, 2, ["optim.lr=0.3"], {"status": "failed", "error": "boom: first line",
                                               "objective": {"name": "val_loss", "value": None}})
    write_job(sweep_dir, 3, ["optim.lr=0.4"], done(float("nan")))  # ran, but no usable objective
    write_job(sweep_dir, 4, ["optim.lr=0.5"], None)  # killed before it wrote anything
    write_job(sweep_dir, 5, ["optim.lr=0.6"], done(0.3))

    rows = summarize(sweep_dir, "val_loss", table=False)

    assert [r["job"] for r in rows] == [1, 5, 0, 2, 3, 4]
    on_disk = read_csv(sweep_dir / "summary.csv")
    assert [r["job"] for r in on_disk] == ["1", "5", "0", "2", "3", "4"]
    assert [r["status"] for r in on_disk] == ["stopped early", "completed", "completed",
                                              "failed", "failed", "failed"]
    assert on_disk[0]["objective"] == "0.2" and on_disk[0]["overrides"] == "optim.lr=0.2"
    assert on_disk[0]["final_val_acc"] == "0.8" and on_disk[0]["best_val_loss"] == "0.2"
    assert on_disk[0]["seconds"] == "1.5" and on_disk[0]["run_dir"] == str(sweep_dir / "1")
    assert on_disk[3]["error"] == "boom: first line"
    assert "not finite" in on_disk[4]["error"]
    assert "no summary.json" in on_disk[5]["error"]
    assert {"final_train_loss", "best_val_acc", "best_epoch", "epochs"} <= set(on_disk[0])

    rows = summarize(sweep_dir, "val_acc", table=False)  # a score's direction: highest first
    assert [r["job"] for r in rows] == [0, 5, 1, 2, 3, 4]


def test_summary_csv_and_table_show_each_jobs_tags(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "sweep"
    write_job(sweep_dir, 0, ["optim.lr=0.1"], {**done(0.5), "tags": ["baseline", "v2"]})
    write_job(sweep_dir, 1, ["optim.lr=0.2"], done(0.2))  # written before tags existed: none

    summarize(sweep_dir, "val_loss", table=True)

    on_disk = {r["job"]: r for r in read_csv(sweep_dir / "summary.csv")}
    assert on_disk["0"]["tags"] == "baseline,v2" and on_disk["1"]["tags"] == ""
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "overrides" in line)
    assert "tags" in header and "baseline,v2" in table


def test_the_table_has_no_tags_column_when_no_job_has_tags(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "sweep"
    write_job(sweep_dir, 0, ["optim.lr=0.1"], {**done(0.5), "tags": []})
    summarize(sweep_dir, "val_loss", table=True)
    header = next(line for line in capsys.readouterr().out.splitlines() if "overrides" in line)
    assert "tags" not in header
    assert read_csv(sweep_dir / "summary.csv")[0]["tags"] == ""


def test_summary_reads_a_failure_recorded_outside_the_job(tmp_path: Path) -> None:
    """The SLURM launcher records a job the cluster killed before Hydra made its folder."""
    sweep_dir = tmp_path / "sweep"
    write_job(sweep_dir, 0, ["optim.lr=0.1"], done(0.5))
    (sweep_dir / "1").mkdir(parents=True)
    (sweep_dir / "1" / "summary.json").write_text(json.dumps(
        {"status": "failed", "error": "SLURM job 7_1 ended without a result (state CANCELLED)",
         "job": 1, "overrides": ["optim.lr=0.2"]}))
    (sweep_dir / ".submitit" / "7_0").mkdir(parents=True)  # never mistaken for a job

    rows = summarize(sweep_dir, "val_loss", table=False)

    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        (0, "completed", ["optim.lr=0.1"]), (1, "failed", ["optim.lr=0.2"])]
    assert "CANCELLED" in rows[1]["error"]


def test_objective_for_the_sweeper_is_finite_or_none() -> None:
    assert finite_or_none(0.25) == 0.25
    assert finite_or_none("0.5") == 0.5
    for bad in (float("nan"), float("inf"), None, "nan", "x"):
        assert finite_or_none(bad) is None


def test_parallel_jobs_follows_joblib_n_jobs_or_the_gpus() -> None:
    assert parallel_jobs(-1, 0, 1, 8) == 8
    assert parallel_jobs(-2, 0, 1, 8) == 7
    assert parallel_jobs(3, 4, 1, 8) == 3  # given: as given, whatever the GPUs
    assert parallel_jobs(-20, 0, 1, 8) == 1
    assert parallel_jobs(None, 0, 1, 8) == 8  # null without GPUs: all cores
    assert parallel_jobs(None, 4, 1, 8) == 4  # null with GPUs: one job per GPU...
    assert parallel_jobs(None, 4, 2, 8) == 2  # ... or per gpus_per_job of them
    assert parallel_jobs(None, 1, 2, 8) == 1


def compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir

    from trainrun.config import config_dir
    from trainrun.config.schemas import register

    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_launcher_presets_compose() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    local = compose_with_hydra("hydra/launcher=local").hydra.launcher
    assert local._target_.endswith("TrainrunLocalLauncher") and local.n_jobs is None
    assert local.gpus_per_job == 1

    slurm = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                               "hydra.launcher.account=lab", "hydra.launcher.qos=high",
                               "+hydra.launcher.additional_parameters.mail-type=END").hydra.launcher
    assert slurm._target_ == "hydra_plugins.trainrun_launcher.slurm.TrainrunSlurmLauncher"
    for key in ("partition", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node", "account",
                "qos", "additional_parameters", "setup", "signal_delay_s", "max_num_timeout"):
        assert key in slurm, key
    assert (slurm.partition, slurm.account, slurm.qos) == ("gpu", "lab", "high")
    assert slurm.additional_parameters["mail-type"] == "END"
    assert any("OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in line for line in slurm.setup)
    assert slurm.max_num_timeout > 0

    # Hydra only instantiates launchers it discovered in the hydra_plugins namespace.
    launchers = Plugins.instance().discover(Launcher)
    assert any(c.__module__ == "hydra_plugins.trainrun_launcher.slurm" for c in launchers)
    assert any(c.__module__ == "hydra_plugins.trainrun_launcher.local" for c in launchers)


def test_optuna_presets_follow_the_objective() -> None:
    cfg = compose_with_hydra("hparams_search=mlp")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"
    assert sweeper.max_failure_rate == 1.0
    assert set(sweeper.params) == {"optim", "optim.lr", "model.hidden"}
    assert "log" in sweeper.params["optim.lr"]
    assert compose_with_hydra("hparams_search=mlp", "objective=val_acc").hydra.sweeper.direction \
        == "maximize"
    assert compose_with_hydra("hparams_search=lr").hydra.sweeper.params["optim.lr"].startswith("tag(log")
