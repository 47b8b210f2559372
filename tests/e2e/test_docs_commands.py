"""Every command in README.md and docs/*.md runs as written (the docs' promise, issue 18).

The commands are read from the fenced ``bash`` blocks of each page, in order, and run in one
folder per page, so a page's commands build on each other as a reader's would (README trains
``outputs/2026-11-24/11-00-00-000000``, then evaluates, predicts and exports it). The folder
holds the files the pages assume the reader has: ``my.csv`` (features age, income, score,
visits; a text label), ``eu.csv`` (the same with ``;``), ``my.parquet``, ``my.npz``, the new rows
``new.csv``/``new.npz``/``new.parquet``, and the modules the pages show (``mynet.py`` from the
README, ``mydata.py``, ``mycallbacks.py`` from the user guide). ``<run folder>`` is a run trained
on ``my.csv`` beforehand, and so is a page's named run folder that no earlier command made.

Only length changes, never meaning: ``trainer.epochs=2`` is appended where a command names no
epochs (``debug=`` presets keep theirs), a sweep's jobs get one epoch, an Optuna search 3
trials. A command that cannot run on this machine is listed in :data:`NOT_HERE` with the reason
(several nodes, a GPU, a tracking server), and one whose right outcome here is a refusal in
:data:`REFUSED_HERE` with the words it must print. The SLURM commands run against the real test
cluster (``slurm_cluster``), ``<partition>`` being its partition.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import forkserver
import numpy as np
import pytest
from conftest import BIN, REPO, command_path, env_for_tests

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = ("train", "evaluate", "predict", "export-model", "srun", "python", "pip")
TRAINED = "<run folder>"

# a part of the command -> why it cannot run on this machine
NOT_HERE = {
    "srun --nodes=4 --ntasks-per-node=8": "four nodes of eight GPUs; the test cluster is one node of 2 CPUs",
    "srun torchrun --nnodes=4 --nproc-per-node=8": "four nodes of eight GPUs; the test cluster is one node of 2 CPUs",
    "hydra/launcher=local device=cuda": "one GPU per job: this machine has none",
    "db.lab.org": "the reader's PostgreSQL server",
    "Path('multirun/...')": "'multirun/...' stands for the reader's sweep folder",
}
# a part of the command -> (exit status, words it must print): the right outcome here
REFUSED_HERE = {
    "logger.mlflow.tracking_uri=http://mlflow.example:5000":
        (2, "could not start an MLflow run at http://mlflow.example:5000"),
    "hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1":
        (2, "hydra.launcher.partition=gpu is not a partition of this cluster"),
    "hydra.launcher.nodes=4 hydra.launcher.tasks_per_node=8":
        (2, "hydra.launcher.nodes=4 asks more than partition"),
    "debug=anomaly optim=sgd optim.lr=10":  # the recipe shows what anomaly detection reports
        (1, "returned nan values"),
}


@dataclass
class Command:
    page: str
    line: str  # as written (continuation lines joined)
    env: dict[str, str]
    words: list[str]

    @property
    def slurm(self) -> bool:
        return "slurm" in self.line or self.words[0] == "srun"

    def __str__(self) -> str:
        return f"{self.page}: {self.line}"


def page_commands(page: Path) -> list[Command]:
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if not words or words[0] not in SCRIPTS:
                continue
            if any(re.search(r"\[[^\]]*\|", w) for w in words):
                continue  # a synopsis ([checkpoint=best|last|<file>]), not a command
            found.append(Command(page.name, " ".join(line.split("#")[0].split()), env, words))
    return found


ALL = [c for page in PAGES for c in page_commands(page)]
# A command shown on several pages runs once, on the first (its page's folder holds what it needs).
FIRST = {c.line: c for c in reversed(ALL)}


def shortened(words: list[str]) -> list[str]:
    """Only the length: epochs, a sweep's jobs, an Optuna search's trials."""
    if words[0] == "srun":
        return [*words, "trainer.epochs=2"] if not any(w.startswith("trainer.epochs=") for w in words) else words
    if words[0] != "train" or "--help" in words:
        return words
    extra = []
    sweep = "-m" in words or any(w.startswith("hparams_search=") for w in words)
    if not any(w.startswith(("trainer.epochs=", "debug=")) for w in words):
        extra.append("trainer.epochs=1" if sweep else "trainer.epochs=2")
    if any(w.startswith("hparams_search=") for w in words):
        extra.append("hydra.sweeper.n_trials=3")
    return [*words, *extra]


# --------------------------------------------------------------------------- the reader's files


def write_files(folder: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    x = np.column_stack([rng.integers(18, 80, n), rng.normal(50_000, 15_000, n), rng.normal(size=n),
                         rng.integers(0, 30, n)]).astype(float)
    label = np.where(x[:, 2] + (x[:, 0] - 50) / 20 > 0.5, "dog", np.where(x[:, 3] > 15, "cat", "bird"))
    header = ["age", "income", "score", "visits"]

    def table(rows: np.ndarray, labels: np.ndarray | None, sep: str = ",") -> str:
        head = header + (["label"] if labels is not None else [])
        body = [sep.join([*(f"{v:g}" for v in row), *([str(labels[i])] if labels is not None else [])])
                for i, row in enumerate(rows)]
        return sep.join(head) + "\n" + "\n".join(body) + "\n"

    (folder / "my.csv").write_text(table(x, label))
    (folder / "eu.csv").write_text(table(x, label, ";"))
    (folder / "new.csv").write_text(table(x[:20], None))
    np.savez(folder / "my.npz", X=x.astype(np.float32), y=(label == "dog").astype(np.int64))
    np.savez(folder / "new.npz", X=x[:20].astype(np.float32))
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: x[:, i] for i, name in enumerate(header)}
    pq.write_table(pa.table({**columns, "label": label}), folder / "my.parquet")
    pq.write_table(pa.table({name: x[:20, i] for i, name in enumerate(header)}), folder / "new.parquet")
    for sub in ("shards", "labels", "parquet_shards", "incoming_shards"):
        (folder / sub).mkdir(exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n), 2)):
        pq.write_table(pa.table({**{k: v[part] for k, v in columns.items()}, "label": label[part]}),
                       folder / "parquet_shards" / f"part{i}.parquet")
        pq.write_table(pa.table({k: v[part[:10]] for k, v in columns.items()}),
                       folder / "incoming_shards" / f"part{i}.parquet")
    (folder / "big.csv").write_text(table(x, label))
    (folder / "new_customers.csv").write_text(table(x[:20], None))  # deploy.md: new rows for its run
    ids = [f"c{i:04d}" for i in range(n)]
    city = np.array(["Lyon", "Oslo", "Porto"])[rng.integers(0, 3, n)]
    income = [f"{v:g}" if i % 17 else "" for i, v in enumerate(x[:, 1])]  # empty cells
    (folder / "people.csv").write_text("customer,age,city,income,bought\n" + "".join(
        f"{c},{int(a)},{town},{inc},{'yes' if s > 0 else 'no'}\n"
        for c, a, town, inc, s in zip(ids, x[:, 0], city, income, x[:, 2], strict=True)))
    np.save(folder / "X.npy", x.astype(np.float32))
    np.save(folder / "y.npy", (label == "dog").astype(np.int64))
    for i, part in enumerate(np.array_split(np.arange(n), 2)):
        np.save(folder / "shards" / f"part{i}.npy", x[part].astype(np.float32))
        np.save(folder / "labels" / f"part{i}.npy", (label[part] == "dog").astype(np.int64))
    readme = (REPO / "README.md").read_text()
    (folder / "mynet.py").write_text(re.search(r"```python\n# mynet.py[^\n]*\n(.*?)```", readme, re.S).group(1))
    guide = (REPO / "docs" / "user-guide.md").read_text()
    (folder / "mycallbacks.py").write_text(re.search(r"```python\n# mycallbacks.py\n(.*?)```", guide, re.S).group(1))
    (folder / "mydata.py").write_text(
        "import numpy as np\nimport pyarrow.parquet as pq\n\n\n"
        "def load():\n    rng = np.random.default_rng(0)\n    x = rng.normal(size=(200, 8)).astype(np.float32)\n"
        "    return x, (x[:, 0] > 0).astype(np.int64)\n\n\n"
        "def load_new(path):\n    return np.column_stack([c.to_numpy() for c in pq.read_table(path).columns])"
        ".astype(np.float32)\n")


def run(args: list[str], folder: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = env_for_tests(env)
    # train, evaluate, ... as fork-server children (tests/forkserver.py); python -m, torchrun: real
    path = [str(forkserver.shim("train").parent)] if forkserver.enabled() else []
    environment["PATH"] = os.pathsep.join([*path, str(BIN), environment.get("PATH", "")])
    return subprocess.run(args, cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout)


def trained_run(folder: Path, name: str) -> Path:
    """A run on my.csv (with a test split), trained once per page."""
    run_dir = folder / name
    if not (run_dir / "checkpoints" / "best.pt").is_file():
        done = run([str(command_path("train")), "data=csv", "data.path=my.csv", "data.target=label", "trainer.epochs=3",
                    "data.test_fraction=0.2", f"hydra.run.dir={run_dir}"], folder)
        assert done.returncode == 0, done.stdout + done.stderr
    return run_dir


def named_runs(command: Command) -> list[str]:
    """Run folders the command reads (run=...), other than the trained run (``<run folder>``)."""
    words = shlex.split(command.line.replace(TRAINED, "TRAINED"), comments=True)
    named = [w.split("=", 1)[1].split("/checkpoints/")[0] for w in words if w.startswith("run=")]
    return [name for name in named if name != "TRAINED"]


def page_files(page: str) -> dict[str, str]:
    """The Python files a page shows (a block starting ``# name.py``), to be run as it says."""
    text = next(p for p in PAGES if p.name == page).read_text()
    return {name: body for name, body in re.findall(r"```python\n# (\w+\.py)\b[^\n]*\n(.*?)```", text, re.S)}


def extras_exist(words: list[str]) -> None:
    """``pip install 'trainrun[plot,onnx]'`` / ``-e ".[dev]"``: the extras named are the project's."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for word in words:
        for extras in re.findall(r"(?:trainrun|\.)\[([^\]]+)\]", word):
            missing = [e for e in extras.split(",") if e.strip() not in declared]
            assert not missing, f"pip install names extras pyproject.toml lacks: {missing}"


def check(command: Command, folder: Path, partition: str | None = None) -> None:
    if FIRST[command.line] is not command:
        pytest.skip(f"the same command runs on {FIRST[command.line].page}")
    reason = next((why for part, why in NOT_HERE.items() if part in command.line), None)
    if reason is not None:
        pytest.skip(reason)
    if command.words[0] == "pip":
        return extras_exist(command.words)  # installing is the reader's step, not the test's
    for name, body in page_files(command.page).items():
        if not (folder / name).exists():
            (folder / name).write_text(body)
    line = command.line
    if TRAINED in line:
        line = line.replace(TRAINED, str(trained_run(folder, "trained")))
    for name in named_runs(command):
        if not (folder / name).exists():
            trained_run(folder, name)  # a run folder the page names but made elsewhere
    if partition is not None:
        line = line.replace("<partition>", partition)
    words = shlex.split(line, comments=True)[len(command.env):]  # as the shell passes them: split once
    args = shortened(words)
    if args[0] in forkserver.COMMANDS:  # a fork-server child (tests/forkserver.py), or the script
        args[0] = str(command_path(args[0]))
    elif args[0] != "srun":
        args[0] = str(BIN / args[0])  # python: the venv's
    done = run(args, folder, command.env)
    output = done.stdout + done.stderr
    refused = next((v for k, v in REFUSED_HERE.items() if k in command.line), None)
    if refused is not None:
        assert done.returncode == refused[0] and refused[1] in output, f"{command}\n{output[-4000:]}"
    else:
        assert done.returncode == 0, f"{command} exited {done.returncode}\n{output[-4000:]}"
    # debug=anomaly's warning shows the forward's traceback on purpose (where the NaN was made)
    shown = "Traceback" in output and "debug=anomaly" not in command.line
    assert not shown and "Error executing job" not in output, f"{command}\n{output[-4000:]}"


def run_all(commands: list[Command], folder: Path, partition: str | None = None) -> list[str]:
    """Each command in order, in one folder; the failures, each with its command and output."""
    failures = []
    for command in commands:
        try:
            check(command, folder, partition=partition)
        except pytest.skip.Exception:
            continue
        except AssertionError as err:
            failures.append(str(err))
    return failures


# One test per page: its commands in the page's order, in one folder (they build on each other,
# as a reader's do); every failing command is reported, not only the first.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("page", sorted({c.page for c in ALL if not c.slurm}))
def test_the_commands_of_a_page_run(page, tmp_path_factory):
    folder = tmp_path_factory.mktemp(page.replace(".", "_"))
    write_files(folder)
    if page == "README.md":  # README predicts with its run trained on digits: 64 columns
        from sklearn.datasets import load_digits

        rows = load_digits().data[:10]
        (folder / "new.csv").write_text(",".join(f"x{i}" for i in range(64)) + "\n" + "".join(
            ",".join(f"{v:g}" for v in row) + "\n" for row in rows))
    failures = run_all([c for c in ALL if c.page == page and not c.slurm], folder)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slurm
@pytest.mark.timeout(1800)
def test_the_documented_slurm_commands_run_on_the_test_cluster(tmp_path, slurm_cluster):
    write_files(tmp_path)
    failures = run_all([c for c in ALL if c.slurm], tmp_path, partition=slurm_cluster["partition"])
    assert not failures, "\n\n".join(failures)


def test_the_pages_hold_the_commands_this_test_expects():
    assert len(ALL) >= 90, len(ALL)
    for part in NOT_HERE:
        assert any(part in c.line for c in ALL), f"NOT_HERE names a command no page has: {part}"
    for part in REFUSED_HERE:
        assert any(part in c.line for c in ALL), f"REFUSED_HERE names a command no page has: {part}"
