"""End to end: Optuna searches through ``train -m``: pruned trials, trials a killed driver left
RUNNING, and two drivers joining one study at once through Optuna's journal file and through a
real PostgreSQL server (``postgres_server`` in conftest.py)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import BIN, command_path, env_for_tests, run_command
from optuna.trial import TrialState

pytestmark = pytest.mark.timeout(900)

SEARCH = ("hparams_search=lr", "optim=sgd", "trainer.progress=epoch")
IRIS = "data=iris"


def journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_pruned_trials_end_pruned_with_exit_0_and_count_as_pruned(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    result = run_command("train", "-m", *SEARCH, IRIS, "trainer.epochs=6", "optim.lr=choice(0.2,0.1,0.00001,0.00002)",
                         "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=8",
                         "hydra.sweeper.n_jobs=1", "hydra/sweeper/pruner=median",
                         "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=1",
                         f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0
    table = rows(sweep_dir)
    pruned = [r for r in table if r["status"] == "pruned"]
    assert pruned, result.output
    study = optuna.load_study(study_name="trainrun_lr", storage=journal(sweep_dir / "optuna.journal"))
    states = {t.number: t.state for t in study.trials}
    for row in pruned:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "pruned" and summary["epochs_run"] < 6
        assert summary["stop_reason"].startswith("pruned by MedianPruner after epoch")
        assert states[summary["trial"]] == TrialState.PRUNED
        assert (Path(row["run_dir"]) / "checkpoints" / "last.pt").is_file()
        assert "1e-05" in row["overrides"] or "2e-05" in row["overrides"]
    assert sum(s == TrialState.PRUNED for s in states.values()) == len(pruned)
    assert sum(s == TrialState.COMPLETE for s in states.values()) == len(table) - len(pruned)
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"pruned: {len(pruned)}" in results
    assert f"{len(pruned)} pruned" in result.output


def test_trials_a_killed_driver_left_running_are_failed_by_the_next_run(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    overrides = (*SEARCH, "data=synthetic", "data.n_samples=20000", "trainer.epochs=6")
    args = [str(BIN / "train"), "-m", *overrides, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
            f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (sweep_dir / "0" / "metrics.csv").is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no handler runs: trial 0 stays RUNNING in the study
    proc.wait(timeout=30)
    storage = journal(sweep_dir / "optuna.journal")
    study = optuna.load_study(study_name="trainrun_lr", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]

    again = run_command("train", "-m", *overrides, "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, check=False, timeout=600)

    assert "trial 0: left RUNNING by a driver that is gone" in again.output, again.output
    study = optuna.load_study(study_name="trainrun_lr", storage=storage)
    assert study.trials[0].state == TrialState.FAIL and "trainrun_left_behind" in study.trials[0].user_attrs
    # The failed trial does not count: the folder's one trial ran anew.
    assert [t.state for t in study.trials[1:]] == [TrialState.COMPLETE], again.output
    assert again.returncode == 0


def test_a_study_whose_data_changed_since_its_trials_is_refused(tmp_path: Path) -> None:
    """Adversarial pass: run again after its CSV changed, an Optuna sweep counted the old trials as
    done (0 to go, exit 0) and, given more trials, ranked values of the new data with the old
    (a grid sweep trains such jobs again; a study cannot take a trial back)."""
    lines = ["a,b,y"] + [f"{i % 7 / 7:.3f},{i % 5 / 5:.3f},{(i % 7 + i % 5) % 2}" for i in range(120)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    sweep_dir = tmp_path / "s"
    command = ("train", "-m", *SEARCH, "data=csv", "data.path=d.csv", "data.target=y", "trainer.epochs=2",
               "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep_dir}")
    run_command(*command, "hydra.sweeper.n_trials=2", cwd=tmp_path, timeout=600)
    again = run_command(*command, "hydra.sweeper.n_trials=3", cwd=tmp_path, timeout=600)  # same data: goes on
    assert "already holds 2 of its 3 trials: 1 to go" in again.output, again.output
    (tmp_path / "d.csv").write_text("\n".join(lines[:80]) + "\n")
    for n in (3, 4):  # 0 to go, and more trials
        refused = run_command(*command, f"hydra.sweeper.n_trials={n}", cwd=tmp_path, check=False, timeout=600)
        assert refused.returncode == 2 and "Traceback" not in refused.output, refused.output
        assert "holds 3 finished trial(s) (0, 1, 2) trained on data files whose content changed" in refused.output
        assert "key: hydra.sweeper.study_name" in refused.output and "new hydra.sweep.dir" in refused.output
    study = optuna.load_study(study_name="trainrun_lr", storage=journal(sweep_dir / "optuna.journal"))
    assert len(study.trials) == 3  # nothing was asked of the study on the new data


def two_drivers(tmp_path: Path, storage: str, study_name: str) -> tuple[list[subprocess.Popen], list[Path]]:
    procs, dirs = [], []
    for name in ("a", "b"):
        dirs.append(tmp_path / name)
        args = [str(command_path("train")), "-m", *SEARCH, IRIS, "trainer.epochs=2", "hydra.sweeper.n_trials=3",
                "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.seed=null", f"hydra.sweeper.storage={storage}",
                f"hydra.sweeper.study_name={study_name}", f"hydra.sweep.dir={dirs[-1]}"]
        procs.append(subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs, dirs


def check_joined(procs: list[subprocess.Popen], dirs: list[Path], load) -> None:
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = load().get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    drivers = {t.user_attrs["trainrun_driver"] for t in trials}
    assert len(drivers) == 2  # both drivers ran trials of the one study
    for sweep_dir in dirs:  # each driver's folder holds its own trials, named by trial number
        numbers = sorted(int(r["job"]) for r in rows(sweep_dir))
        assert len(numbers) == 3
        assert all((sweep_dir / str(n) / "summary.json").is_file() for n in numbers)
        ran_here = {t.number for t in trials if t.user_attrs["trainrun_sweep_dir"] == str(sweep_dir)}
        assert ran_here == set(numbers)


def test_two_drivers_join_one_study_through_a_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "study.journal"
    procs, dirs = two_drivers(tmp_path, f"journal:{path}", "joined")
    try:
        check_joined(procs, dirs, lambda: optuna.load_study(study_name="joined", storage=journal(path)))
    finally:
        for p in procs:
            p.kill()


@pytest.mark.postgres
def test_two_drivers_join_one_study_through_postgresql(tmp_path: Path, postgres_server: str) -> None:
    name = f"joined-{uuid.uuid4().hex[:12]}"  # the server's database may outlive a session (a killed one)
    procs, dirs = two_drivers(tmp_path, postgres_server, name)
    try:
        check_joined(procs, dirs, lambda: optuna.load_study(study_name=name, storage=postgres_server))
    finally:
        for p in procs:
            p.kill()



def _open_at(url: str, start: float, results) -> None:
    from trainrun.cli import study

    while time.time() < start:  # both processes open the storage at the same moment
        pass
    try:
        study.open_storage(url)
        results.put("ok")
    except Exception as err:  # the refusal, for the assertion's message
        results.put(f"{type(err).__name__}: {err}")


@pytest.mark.postgres
def test_two_drivers_opening_a_fresh_database_at_once_both_get_it(postgres_server: str) -> None:
    """Optuna creates its tables when a storage opens; on an empty PostgreSQL database the slower
    of two drivers started together fails that CREATE (a duplicate pg_type row). It happened in
    CI (the second driver refused: "cannot open the Optuna storage"); the open is tried again."""
    import multiprocessing

    import psycopg

    server, _ = postgres_server.rsplit("/", 1)
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = server.replace("postgresql+psycopg://", "postgresql://").replace("trainrun:trainrun@", "postgres:trainrun@")
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER trainrun")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = time.time() + 5
    procs = [context.Process(target=_open_at, args=(f"{server}/{name}", start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [results.get(timeout=5) for _ in procs] == ["ok", "ok"]
