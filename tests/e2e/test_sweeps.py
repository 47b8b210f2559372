"""Sweeps: multirun folders, failed jobs, the joblib and submitit launchers, Optuna searches and
the sweep summary (``summary.csv`` written by the ``SweepSummary`` Hydra callback)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import command_path, env_for_tests, run_command

# Small and quick: iris, two epochs.
FAST = ("data=iris", "trainer.epochs=2", "trainer.progress=epoch")
BAD_LR = "1e9"  # SGD with this learning rate makes the loss non-finite in the first epoch


def sweep(tmp_path: Path, *overrides: str, name: str = "sweep", timeout: float = 240):
    sweep_dir = tmp_path / name
    result = run_command("train", "-m", *FAST, *overrides, f"hydra.sweep.dir={sweep_dir}",
                         cwd=tmp_path, check=False, timeout=timeout)
    return result, sweep_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def job_log(job_dir: Path) -> str:
    return "".join(p.read_text() for p in job_dir.glob("*.log"))


def by_lr(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {re.search(r"optim\.lr=(\S+)", r["overrides"]).group(1): r for r in rows}


# --------------------------------------------------------------------------- summary, no runs


def test_info_lists_each_launcher_and_sweeper_once(tmp_path: Path) -> None:
    """``train --info plugins``: trainrun's launchers build on Hydra's own and carry names of
    their own, so no plugin name is listed twice; the old Optuna sweeper is gone."""
    result = run_command("train", "--info", "plugins", cwd=tmp_path)
    listed = re.findall(r"^\t\t(\w+)$", result.output, flags=re.MULTILINE)
    assert "SlurmLauncher" in listed and "TrainrunSlurmLauncher" in listed, result.output
    assert "JoblibLauncher" in listed and "TrainrunLocalLauncher" in listed, result.output
    assert "TrainrunOptunaSweeper" in listed and "OptunaSweeper" not in listed, result.output
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert duplicates == [], result.output


# --------------------------------------------------------------------------- real sweeps


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    result, sweep_dir = sweep(tmp_path, "optim=sgd", f"optim.lr=0.05,{BAD_LR},0.01")

    assert result.returncode == 0, result.output
    rows = read_csv(sweep_dir / "summary.csv")
    assert len(rows) == 3
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert float(rows[0]["objective"]) <= float(rows[1]["objective"])  # best (lowest) first
    failed = by_lr(rows)["1000000000.0"]
    assert failed["job"] == "1" and "non-finite" in failed["error"]
    assert "\n" not in failed["error"]
    job = json.loads((sweep_dir / "1" / "summary.json").read_text())
    assert job["status"] == "failed" and job["error"] == failed["error"]
    for row in rows[:2]:  # the later job ran although an earlier one failed
        assert json.loads((Path(row["run_dir"]) / "summary.json").read_text())["status"] == "completed"
        assert row["final_val_loss"] and row["best_val_acc"]
    assert "sweep: 3 jobs, 2 done, 1 failed" in result.output
    assert (sweep_dir / "sweep.png").stat().st_size > 0  # plot=true (the default)


def test_sweep_exits_nonzero_only_when_every_job_failed(tmp_path: Path) -> None:
    result, sweep_dir = sweep(tmp_path, "optim=sgd", f"optim.lr={BAD_LR},1e10")

    assert result.returncode == 1, result.output
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "every job of the sweep failed" in result.output


def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path: Path) -> None:
    result, sweep_dir = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                              "optim=sgd", f"optim.lr=0.05,{BAD_LR}")

    assert result.returncode == 0, result.output
    rows = by_lr(read_csv(sweep_dir / "summary.csv"))
    assert rows["0.05"]["status"] == "completed"
    assert rows["1000000000.0"]["status"] == "failed"
    # Each job ran in a joblib worker with its share of the cores as torch threads.
    threads = max(1, (os.cpu_count() or 1) // 2)
    log = job_log(sweep_dir / "0")
    assert f"trainer.threads={threads} " in log, log


def test_local_preset_limits_threads_per_job(tmp_path: Path) -> None:
    result, sweep_dir = sweep(tmp_path, "hydra/launcher=local", "optim.lr=0.01,0.02")

    assert result.returncode == 0, result.output
    assert [r["status"] for r in read_csv(sweep_dir / "summary.csv")] == ["completed"] * 2
    for job in ("0", "1"):  # n_jobs=-1: one job per core, one thread each
        summary = json.loads((sweep_dir / job / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert "trainer.threads=1 " in job_log(sweep_dir / job)


def test_submitit_local_launcher_summary(tmp_path: Path) -> None:
    """Jobs in submitit subprocesses: the summary comes from the sweep folder, not from the
    launcher's return values."""
    result, sweep_dir = sweep(tmp_path, "hydra/launcher=submitit_local", "optim=sgd",
                              f"optim.lr=0.05,{BAD_LR}")

    assert result.returncode == 0, result.output
    rows = by_lr(read_csv(sweep_dir / "summary.csv"))
    assert rows["0.05"]["status"] == "completed" and float(rows["0.05"]["objective"]) > 0
    assert rows["1000000000.0"]["status"] == "failed"
    assert (sweep_dir / ".submitit").is_dir()


def test_two_sweeps_started_together_get_their_own_folders(tmp_path: Path) -> None:
    args = [str(command_path("train")), "-m", *FAST, "trainer.epochs=1", "optim.lr=0.01"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    sweeps = sorted(p.parent for p in tmp_path.glob("multirun/*/*/summary.csv"))
    assert len(sweeps) == 2, sweeps
    for sweep_dir in sweeps:  # each holds exactly its own job
        assert [r["job"] for r in read_csv(sweep_dir / "summary.csv")] == ["0"]
        assert (sweep_dir / "multirun.yaml").is_file()
    # Named to the microsecond: HH-MM-SS-ffffff.
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-\d{6}", s.name) for s in sweeps), sweeps


def test_optuna_failed_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    # Random sampling (seed 0) over two learning rates, one of which always fails.
    result, sweep_dir = sweep(tmp_path, "hparams_search=lr", "optim=sgd",
                              f"optim.lr=choice(0.05,{BAD_LR})", "hydra/sweeper/sampler=random",
                              "hydra.sweeper.n_trials=4")

    assert result.returncode == 0, result.output
    rows = read_csv(sweep_dir / "summary.csv")
    assert len(rows) == 4
    statuses = {lr: {r["status"] for r in rows if f"optim.lr={lr}" in r["overrides"]}
                for lr in ("0.05", "1000000000.0")}
    assert statuses == {"0.05": {"completed"}, "1000000000.0": {"failed"}}, rows
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optim.lr": 0.05}
    assert math.isclose(best["best_value"], float(rows[0]["objective"]))
    assert re.search(r"trial \d+ failed: the loss became non-finite", result.output), result.output
    assert sum(best["trials"].values()) == 4 and best["trials"]["running"] == 0


def test_optuna_stored_study_resumes_and_continues_its_search(tmp_path: Path) -> None:
    """Running the same search again against a stored study adds new trials: the preset's fixed
    seed no longer makes the second sweep repeat the first one's points, while a fresh study
    with that seed still draws exactly the first sweep's points (reproducible)."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ("hparams_search=lr", "optim=sgd", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3")
    stored = (f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=resume_me")
    first, first_dir = sweep(tmp_path, *common, *stored, name="first")
    assert first.returncode == 0, first.output
    second, second_dir = sweep(tmp_path, *common, *stored, name="second")
    assert second.returncode == 0, second.output
    assert "study resume_me holds 3 trials: the sampler continues with seed 0+3" in second.output

    study = optuna.load_study(study_name="resume_me", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    lrs = [t.params["optim.lr"] for t in study.trials]
    assert len(set(lrs)) == 6, lrs  # the second sweep drew new points, none of the first's
    # Each sweep folder summarizes its own trials; the stored study holds all of them.
    assert len(read_csv(first_dir / "summary.csv")) == 3
    assert len(read_csv(second_dir / "summary.csv")) == 3
    best = yaml.safe_load((second_dir / "optimization_results.yaml").read_text())
    assert math.isclose(best["best_value"], study.best_value)

    fresh, fresh_dir = sweep(tmp_path, *common, name="fresh")  # in memory, seed 0 again
    assert fresh.returncode == 0, fresh.output
    fresh_lrs = sorted(float(by) for by in by_lr(read_csv(fresh_dir / "summary.csv")))
    assert fresh_lrs == pytest.approx(sorted(lrs[:3]), rel=1e-12)


def test_optuna_study_where_every_trial_fails_exits_nonzero_with_a_summary(tmp_path: Path) -> None:
    # The sweeper itself stops at the end (Optuna: "No trials are completed yet"); the summary is
    # still written, from the exit hook of the callback.
    result, sweep_dir = sweep(tmp_path, "hparams_search=lr", "optim=sgd",
                              f"optim.lr=choice({BAD_LR},1e10)", "hydra/sweeper/sampler=random",
                              "hydra.sweeper.n_trials=2")

    assert result.returncode == 1, result.output
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("non-finite" in r["error"] for r in rows)


COUNT_CONFIGS = '''
import gc
import os

from hydra.experimental.callback import Callback


class CountConfigs(Callback):
    """After each job (before trainrun's own on_job_end): the OmegaConf nodes still alive."""

    def on_job_end(self, config, job_return, **kwargs):
        gc.collect()
        live = sum(1 for o in gc.get_objects() if type(o).__name__ in ("DictConfig", "ListConfig"))
        with open(os.environ["COUNTS"], "a") as f:
            f.write(f"{live}\\n")
'''


def test_the_jobs_of_a_sweep_leave_no_configs_behind(tmp_path):
    """Hydra's basic sweeper keeps every job's return to the end of the sweep, and each held the
    job's configs: 74 more OmegaConf nodes alive after every job (the sweep process grew by about
    0.2 MB a job). A user's Hydra callback counts them after each of 6 jobs: the same every time."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "counter.py").write_text(COUNT_CONFIGS)
    counts = tmp_path / "counts"
    result = run_command("train", "-m", *FAST, "plot=false", "optim.lr=0.1,0.2,0.3,0.4,0.5,0.6",
                         "+hydra.callbacks.count._target_=counter.CountConfigs", f"hydra.sweep.dir={tmp_path / 's'}",
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "mods"), "COUNTS": str(counts)})
    assert "6 jobs, 6 done" in result.output
    live = [int(n) for n in counts.read_text().split()]
    assert len(live) == 6 and max(live[1:]) - min(live[1:]) <= 5, live  # after the first: what every job shares
