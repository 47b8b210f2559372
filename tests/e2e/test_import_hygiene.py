"""Security: a working folder full of stand-ins (``csv.py``, ``random.py``, ``typing.py``,
``pickle.py``, ``signal.py``, ``numpy.py``, ``json.py``, ... one for every standard-library module
and every installed package, :mod:`standins`) is never imported, in any process a command runs
in: the console scripts, the curves helper, ``python -m trainrun.cli``, ``trainer.devices=2``
workers, torchrun ranks, joblib and submitit workers, evaluate/predict/export-model. Each
stand-in leaves a marker when imported; every marker must stay absent. A user module in the same
folder (``usernet.Net``) stays importable for ``_target_``.

The one exception is Python's own: ``python -m`` imports runpy's modules before any package code
runs (asked of Python by :func:`standins.before_any_package`); ``python -P -m`` closes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import standins
from conftest import BIN, TOYS, env_for_tests

RUN = ("data=iris", "trainer.epochs=1", "trainer.progress=none", "print_config=false", "plot=false")
USER_MODEL = "model._target_=usernet.Net"  # tests/toys.py as the user's own module


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The working folder: the stand-ins and the user's own module."""
    work = tmp_path / "work"
    work.mkdir()
    standins.plant(work, tmp_path / "markers")
    shutil.copy(TOYS, work / "usernet.py")
    return work


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = env_for_tests()
    env.pop("PYTHONSAFEPATH", None)  # what trainrun does itself, not what the test runner set
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def shadowed(folder: Path, excused: set[str] = frozenset()) -> list[str]:
    return [n for n in standins.imported(folder.parent / "markers") if n not in excused]


def test_console_script_and_curves_helper(folder: Path) -> None:
    run([str(BIN / "train"), *RUN, "plot=true", USER_MODEL, f"hydra.run.dir={folder.parent / 'run'}"], folder)
    assert (folder.parent / "run" / "curves.png").is_file()  # drawn by the helper process
    assert shadowed(folder) == []


@pytest.mark.parametrize("safe", [False, True], ids=["m", "P-m"])
def test_python_m_trainrun_cli(folder: Path, safe: bool) -> None:
    """Everything from the package's first line on is protected; with -P, everything."""
    run([sys.executable, *(["-P"] if safe else []), "-m", "trainrun.cli", *RUN, USER_MODEL,
         f"hydra.run.dir={folder.parent / 'a'}"], folder)
    assert shadowed(folder, set() if safe else standins.before_any_package()) == []


def test_ddp_workers_of_trainer_devices(folder: Path) -> None:
    run([str(BIN / "train"), *RUN, USER_MODEL, "trainer.devices=2", f"hydra.run.dir={folder.parent / 'run'}"],
        folder)
    assert json.loads((folder.parent / "run" / "summary.json").read_text())["world_size"] == 2
    assert shadowed(folder) == []


def test_torchrun_ranks(folder: Path) -> None:
    run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "trainrun.cli", *RUN, USER_MODEL,
         f"hydra.run.dir={folder.parent / 'run'}"], folder)
    assert json.loads((folder.parent / "run" / "summary.json").read_text())["world_size"] == 2
    assert shadowed(folder, standins.before_any_package()) == []


@pytest.mark.parametrize("launcher", ["local", "submitit_local"])
def test_launcher_workers(folder: Path, launcher: str) -> None:
    """joblib's loky workers and submitit's local workers start Python themselves."""
    sweep = folder.parent / "sweep"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "local" else []
    run([str(BIN / "train"), "-m", *RUN, USER_MODEL, f"hydra/launcher={launcher}", *extra, "optim.lr=0.1,0.01",
         f"hydra.sweep.dir={sweep}"], folder)
    assert len(list(sweep.glob("*/summary.json"))) == 2
    assert shadowed(folder) == []


@pytest.mark.parametrize("command", ["evaluate", "predict", "export-model"])
def test_evaluate_predict_export(folder: Path, command: str) -> None:
    """One command a test (each well under a minute on a loaded machine)."""
    run_dir = folder.parent / "run"
    run([str(BIN / "train"), *RUN, f"hydra.run.dir={run_dir}"], folder)
    standins.clear(folder.parent / "markers")  # train is checked above: this test is the command's
    predict = ["data=npz", f"data.path={_npz(folder)}", f"hydra.run.dir={folder.parent / 'pred'}"]
    args = {"evaluate": [], "predict": predict, "export-model": ["format=exported"]}[command]
    run([str(BIN / command), f"run={run_dir}", *args], folder)
    if command == "predict":
        assert (folder.parent / "pred" / "predictions.csv").is_file()
    assert shadowed(folder) == []


def _npz(folder: Path) -> Path:
    import numpy as np

    path = folder.parent / "new.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(5, 4)).astype("float32"))
    return path


def test_a_user_module_brings_its_own_modules_and_nothing_else(folder: Path) -> None:
    """Attack pass: once usernet made the working folder importable, torch and sympy imported the
    folder's triton.py, gmpy2.py, flint.py, tabulate.py and rich its colorama.py (names they probe
    for when not installed). Now only the named module and what it imports itself (at import or
    later, in a function) come from the working folder."""
    (folder / "usersibling.py").write_text("SCALE = 1.0\n")
    (folder / "userlazy.py").write_text("SHIFT = 0.0\n")
    (folder / "usernet2.py").write_text(
        "import usersibling\nfrom usernet import Net as _Net\n\n\nclass Net(_Net):\n"
        "    def forward(self, x):\n        import userlazy\n"
        "        return super().forward(x * usersibling.SCALE + userlazy.SHIFT)\n")
    run([str(BIN / "train"), *RUN, "model._target_=usernet2.Net", f"hydra.run.dir={folder.parent / 'run'}"],
        folder)
    assert shadowed(folder) == []
