"""Nothing heavy is imported unless the run uses it: matplotlib only when a plot is drawn,
torchmetrics only when metrics=[...] asks, scikit-learn only to build the bundled sets' cache
(or for data=synthetic), pyarrow only for data=parquet. Checked on the module set a real run
imports (``python -X importtime``), not on timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import env_for_tests

HEAVY = {"matplotlib", "sklearn", "torchmetrics", "pyarrow", "pandas", "scipy", "tensorboard", "mlflow",
         "wandb", "optuna", "submitit", "lightning", "PIL"}


def imported(*command: str, cwd: Path, env: dict[str, str]) -> set[str]:
    """The top-level packages a Python command imports, from ``-X importtime``'s report."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=cwd, env=env_for_tests(env),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}


def test_a_plain_run_imports_nothing_heavy(tmp_path: Path, monkeypatch) -> None:
    from trainrun.data.sources import load_sklearn

    monkeypatch.setenv("TRAINRUN_CACHE_DIR", str(tmp_path / "cache"))
    load_sklearn("digits")  # the cache a first run builds; this run reads it
    env = {"TRAINRUN_CACHE_DIR": str(tmp_path / "cache")}
    names = imported("-m", "trainrun.cli", "trainer.epochs=1", "plot=false", "trainer.progress=none",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert {"torch", "hydra", "numpy", "trainrun"} <= names  # the report was read
    assert names.isdisjoint(HEAVY), sorted(names & HEAVY)
    assert (tmp_path / "run" / "summary.json").is_file()


def test_reading_a_csv_imports_no_dataframe_library(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,cat\n3,4,dog\n")
    names = imported("-c", "from trainrun.data.sources import read_csv; read_csv('d.csv', 'y')",
                     cwd=tmp_path, env={})
    assert "numpy" in names and names.isdisjoint(HEAVY | {"torch"}), sorted(names & (HEAVY | {"torch"}))


def test_a_wrong_value_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """The value checks run before torch is imported (a wrong value exits in about a second):
    nothing Hydra builds before the task (its callbacks: the run-folder claim, the sweep's)
    may pull torch in."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "trainrun.cli", "trainer.epochs=-1",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env_for_tests({}),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2 and "trainer.epochs" in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}
    assert {"hydra", "trainrun"} <= names and "torch" not in names
