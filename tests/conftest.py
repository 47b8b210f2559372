"""Shared test helpers: run ``train`` as a real subprocess into a temporary folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import forkserver
import helpers
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOYS = Path(__file__).resolve().parent / "toys.py"
sys.path.insert(0, str(REPO / "scripts"))  # tutorial_loop.py: the loop the fidelity test holds trainrun to


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under pytest-xdist (-n auto) the SLURM tests share one worker, hence one cluster: the
    # session fixture of another worker would otherwise stop it under their feet.
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("slurm"))
        if "postgres" in item.keywords:  # one server for the session, as for SLURM
            item.add_marker(pytest.mark.xdist_group("postgres"))


@pytest.fixture(autouse=True)
def _user_modules_stay_in_their_test(tmp_path_factory):
    """A test that builds in-process with ``_target_=userdata.X`` appends its folder to
    ``sys.path`` and imports ``userdata`` from it, as ``train`` does in the user's folder. One
    process, one folder for users; here one worker runs many tests, so each test gets back the
    ``sys.path`` it started with and loses the modules it imported from a temporary folder (else
    the next test's ``userdata`` is the previous test's file)."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    temporary = str(tmp_path_factory.getbasetemp())
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(temporary):
            del sys.modules[name]


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


def saved_checkpoint(run_dir: Path, name: str = "last.pt") -> dict:
    """A run's checkpoint as trainrun loads it: ``last.pt`` (one process) or the sharded folder
    ``last/`` (several), whichever was written last; a sharded one's ``model`` read whole."""
    from trainrun.engine.checkpoint import find, load
    from trainrun.engine.sharded import read_whole

    path = find(run_dir / "checkpoints", Path(name).stem)
    saved = load(path, trust=True)
    if saved.get("layout", {}).get("sharded"):
        saved["model"] = {k[len("model/"):]: v for k, v in read_whole(path).items() if k.startswith("model/")}
    return saved


def final_weights(run_dir: Path, name: str = "last.pt") -> dict:
    """The model's state dict in a run's checkpoint (either kind)."""
    return saved_checkpoint(run_dir, name)["model"]


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts."""
    return max((a[k] - b[k]).abs().max().item() for k in a)


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
    real: bool = False,
) -> TrainResult:
    """Run a console script (``train``/``evaluate``) with Hydra overrides in ``cwd``: a child of
    the fork server (tests/forkserver.py), or the installed script itself where ``real`` or where
    the test is marked ``real_process``."""
    run_dir = run_dir or cwd / "run"
    args = [str(command_path(command, real=real)), *overrides]
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


def command_path(command: str, real: bool = False) -> Path:
    """The installed console script, or its fork-server shim (see tests/forkserver.py: the server
    runs the real script by itself where a fork could not honour the command's environment)."""
    if real or not _forked_commands or not forkserver.enabled():
        return BIN / command
    return forkserver.shim(command)


_forked_commands = True


@pytest.fixture(autouse=True)
def _real_process_marker(request: pytest.FixtureRequest):
    """``@pytest.mark.real_process``: every command of the test is the installed script itself."""
    global _forked_commands
    _forked_commands = request.node.get_closest_marker("real_process") is None
    yield
    _forked_commands = True


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


def write_csv(folder: Path, kind: str, n: int = 64, seed: int = 0) -> str:
    """A small CSV (4 features ``a..d``, target column ``y``): ``multiclass`` (3 classes),
    ``binary`` or ``regression``. Returns the overrides that select it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    if kind == "multiclass":
        y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    elif kind == "binary":
        y = (x[:, 0] + x[:, 1] > 0).astype(int)
    else:
        y = x @ np.array([1.5, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=n)
    path = folder / f"{kind}.csv"
    lines = ["a,b,c,d,y"] + [",".join(f"{v:.5f}" for v in row) + f",{t}" for row, t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return f"data=csv data.path={path.name} data.target=y data.batch_size=16"


@pytest.fixture
def usercode(tmp_path: Path) -> Path:
    """``tmp_path`` holding tests/toys.py as ``usercode.py``: the folder runs start in, where
    ``model._target_=usercode.Squeezed`` finds a user's model."""
    shutil.copy(TOYS, tmp_path / "usercode.py")
    return tmp_path


@pytest.fixture
def compose():
    """Compose the train config with overrides, as Hydra would (no run, no folders)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainrun.config import config_dir
    from trainrun.config.schemas import register

    register()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return hydra_compose("train", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM cluster (munge, slurmctld, slurmd, slurmdbd + MariaDB) for the
    whole test session: ``scripts/slurm_up.sh`` before the first test that asks for it,
    ``scripts/slurm_down.sh`` at the end of the session, always, even after a failure (and even
    when bringing it up failed half-way). Yields ``{"partition": ...}``. Skipped where it cannot
    run: not root, or not a Debian-like machine with apt-get."""
    import shutil
    import time

    # In CI (CI=true) these are failures, never silent skips: CI must exercise the cluster.
    cannot = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if os.geteuid() != 0:
        cannot("the SLURM tests start daemons: run them as root (CI does)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        cannot("no SLURM and no apt-get to install it (scripts/slurm_up.sh targets Debian)")
    scripts = REPO / "scripts"
    started = time.perf_counter()
    try:
        up = subprocess.run(["bash", str(scripts / "slurm_up.sh")], capture_output=True,
                            text=True, timeout=900)
        print(f"\nslurm_up.sh: exit {up.returncode} in {time.perf_counter() - started:.1f} s")
        if up.returncode != 0 or "SLURM READY" not in up.stdout:
            pytest.fail(f"scripts/slurm_up.sh failed (exit {up.returncode}):\n"
                        f"{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
        yield {"partition": os.environ.get("TRAINRUN_SLURM_PARTITION", "debug")}
    finally:
        stopping = time.perf_counter()
        down = subprocess.run(["bash", str(scripts / "slurm_down.sh")], capture_output=True,
                              text=True, timeout=300)
        print(f"\nslurm_down.sh: exit {down.returncode} in {time.perf_counter() - stopping:.1f} s; "
              f"cluster held {time.perf_counter() - started:.1f} s")
        if down.returncode != 0:  # a daemon of ours still runs: a leaked cluster
            message = (f"scripts/slurm_down.sh failed (exit {down.returncode}): the cluster this session "
                       f"started is not stopped\n{down.stdout[-3000:]}\n{down.stderr[-3000:]}")
            if os.environ.get("CI") == "true":  # CI must never leave a cluster behind unnoticed
                pytest.fail(message)
            import warnings

            warnings.warn(message, stacklevel=1)


def shadow(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment where importing ``packages`` fails, as if they were not installed."""
    root = tmp_path / "shadow"
    for name in packages:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f'raise ImportError("no module named {name} (hidden by the test)")\n')
    return {"PYTHONPATH": str(root)}


def compose_command(command: str, placeholder: str) -> None:
    """Compose ``train ...`` / ``evaluate ...`` / ``predict ...`` / ``export-model ...`` as Hydra
    would (the first job of a sweep), with ``<...>`` placeholders replaced by ``placeholder``;
    raises if it does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from trainrun.config import config_dir
    from trainrun.config.schemas import register

    register()
    words = shlex.split(re.sub(r"<[^>]+>", placeholder, command))
    name, overrides = words[0], [w for w in words[1:] if not w.startswith("-")]
    name = {"export-model": "export"}.get(name, name)  # the console script's config
    first = []
    for override in OverridesParser.create().parse_overrides(overrides):
        value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() \
            else override.get_value_element_as_str()
        first.append(f"{override.get_key_element()}={value}")  # the key keeps a + prefix
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        compose(name, overrides=first)


@pytest.fixture
def shapes_folder(tmp_path):
    (tmp_path / "shapes.py").write_text(helpers.MODELS)
    (tmp_path / "userdata.py").write_text(helpers.DATASET)
    return tmp_path


@pytest.fixture
def evil(tmp_path, monkeypatch) -> tuple[Path, Path]:
    sentinel = tmp_path / "code-ran"
    monkeypatch.setenv("SENTINEL", str(sentinel))
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {"w": torch.zeros(2)}, "hook": helpers.Evil()}, path)
    return path, sentinel


@pytest.fixture
def torch_gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def launcher_free_env(monkeypatch):
    """A private copy of the environment without any launcher's variables."""
    from trainrun.cli import ranks

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    monkeypatch.setattr(ranks.os, "environ", env)
    return env


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's package) for the whole test session:
    ``scripts/postgres_up.sh`` before the first test that asks for it, ``scripts/postgres_down.sh
    --purge-state`` at the end, always. Yields its SQLAlchemy URL (psycopg 3). Skipped where it
    cannot run (not root, no apt-get); in CI (CI=true) that is a failure, never a silent skip."""
    import shutil

    cannot = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if os.geteuid() != 0:
        cannot("the PostgreSQL tests start a server: run them as root (CI does)")
    if not (shutil.which("apt-get") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        cannot("no PostgreSQL and no apt-get to install it (scripts/postgres_up.sh targets Debian)")
    scripts = REPO / "scripts"
    try:
        up = subprocess.run(["bash", str(scripts / "postgres_up.sh")], capture_output=True, text=True,
                            timeout=600)
        ready = [line for line in up.stdout.splitlines() if line.startswith("POSTGRES READY ")]
        if up.returncode != 0 or not ready:
            pytest.fail(f"scripts/postgres_up.sh failed (exit {up.returncode}):\n{up.stdout[-3000:]}\n"
                        f"{up.stderr[-3000:]}")
        yield ready[-1].split(" ", 2)[2]
    finally:
        subprocess.run(["bash", str(scripts / "postgres_down.sh"), "--purge-state"], capture_output=True,
                       text=True, timeout=300)
