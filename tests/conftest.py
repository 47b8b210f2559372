"""Shared test helpers: run ``train`` as a real subprocess into a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False,
        help="also run tests marked slow (end-to-end runs, DDP, SLURM); CI runs with this",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass
class TrainResult:
    proc: subprocess.CompletedProcess[str]
    run_dir: Path

    @property
    def returncode(self) -> int:
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    @property
    def metrics(self) -> list[dict]:
        lines = (self.run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def env_for_tests(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"})
    env.update(extra or {})
    return env


def run_command(
    command: str,
    *overrides: str,
    cwd: Path,
    run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 240,
) -> TrainResult:
    """Run a console script (``train``/``evaluate``) with Hydra overrides in ``cwd``."""
    run_dir = run_dir or cwd / "run"
    args = [str(BIN / command), *overrides]
    if command == "train" and not any(o.startswith("hydra.run.dir=") for o in overrides):
        args.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(
        args, cwd=cwd, env=env_for_tests(env), capture_output=True, text=True, timeout=timeout
    )
    result = TrainResult(proc, run_dir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return result


def run_train(*overrides: str, cwd: Path, **kwargs) -> TrainResult:
    """``train <overrides>`` into ``cwd/run`` (or ``run_dir``), one epoch line per epoch."""
    return run_command("train", "trainer.progress=epoch", *overrides, cwd=cwd, **kwargs)


@pytest.fixture
def train(tmp_path: Path):
    """``train(*overrides, check=True)`` runs in ``tmp_path`` and returns a TrainResult."""

    def _train(*overrides: str, **kwargs) -> TrainResult:
        kwargs.setdefault("cwd", tmp_path)
        return run_train(*overrides, **kwargs)

    return _train


@pytest.fixture
def compose():
    """Compose the train config with overrides, as Hydra would (no run, no folders)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainrun.cli import config_dir

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=config_dir(), version_base=None):
            return hydra_compose("train", overrides=list(overrides))

    return _compose
