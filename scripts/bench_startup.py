#!/usr/bin/env python
"""Fixed costs of whole ``train`` processes, each against the plain-Python command it must stay
close to. ``python scripts/benchmark.py --startup`` runs this script too.

Every comparison is a pair of real commands (what a user runs), run in turn, round after round,
in one invocation, so that load from other processes spreads over both; the first round warms up
(the scikit-learn cache, the OS file cache, compiled bytecode) and is dropped. Reported per pair:
the median and the minimum of each side, and the ratios of the medians and of the minima; for
whole commands also their CPU seconds (user + sys, helpers included), which other jobs on the
machine disturb less than wall time.

    fixed       train trainer.epochs=0 trainer.progress=none print_config=false checkpoint.enabled=false
                ÷ python -c "import torch; torch.optim.SGD([...], lr=0.1)"             goal <= 1.10
    digits      train on digits (64-256-256-10, SGD momentum, batch 32, 30 epochs), defaults
                otherwise (validation, checkpoints, metrics files, summary, curves.png)
                ÷ scripts/digits_by_hand.py (the same training, by hand, no files)     goal <= 1.10
    help        train --help ÷ train --cfg job                                         goal <= 1.30
    ckpt-digits train_seconds (summary.json) with a checkpoint every epoch
                ÷ the same with checkpoint.enabled=false                               goal <= 1.02
    ckpt-wide   the same on the wide workload (100k x 128, 128-512-512-10, Adam, 3 epochs)
    csv         trainrun.data.sources.read_csv ÷ numpy.loadtxt on a generated CSV file
                (200,000 rows x 20 columns): seconds (goal <= 1.20) and peak memory over
                the returned arrays' size (goal <= 2.0)

    python scripts/bench_startup.py                         # everything, 5 rounds
    python scripts/bench_startup.py --only fixed help --rounds 9
    python scripts/bench_startup.py --pyc source compiled   # both ways trainrun's modules load
    python scripts/bench_startup.py --csv-readers           # numpy, pyarrow, csv module: why numpy

``--pyc``: ``compiled`` runs with bytecode written and reused (what users see: pip compiles an
installed package's modules, and an editable install writes ``__pycache__`` on its first run);
``source`` sets PYTHONDONTWRITEBYTECODE=1 and removes trainrun's own ``__pycache__`` folders
first, so its modules are compiled from source on every start (machines that set that variable
see this; installed packages such as torch ship their bytecode either way). The pairs whose
figures come from inside the process (checkpoints, CSV) run once, in the first mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TRAIN = str(BIN / "train")
FLOOR = 'import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)'
QUIET = ["trainer.progress=none", "print_config=false"]
DIGITS = ["data=digits", "model.hidden=[256,256]", "loss=cross_entropy", "optim=sgd", "optim.lr=0.05",
          "optim.momentum=0.9", "data.batch_size=32", "trainer.epochs=30"]
WIDE = ["data=synthetic", "data.task=multiclass", "data.num_classes=10", "data.n_samples=100000",
        "data.n_features=128", "data.val_fraction=0", "model.hidden=[512,512]", "loss=cross_entropy",
        "optim=adam", "optim.lr=0.001", "data.batch_size=256", "trainer.epochs=3", "objective=train_loss",
        "checkpoint.monitor=train_loss"]
CKPT_ON = ["checkpoint.enabled=true", "checkpoint.every_n_epochs=1"]
CKPT_OFF = ["checkpoint.enabled=false"]
CSV_ROWS, CSV_FEATURES = 200_000, 19
GOALS = {"fixed": 1.10, "digits": 1.10, "help": 1.30, "ckpt-digits": 1.02, "ckpt-wide": 1.02,
         "csv": 1.20, "csv-memory": 2.0}
IN_PROCESS = ("ckpt-digits", "ckpt-wide", "csv")


@dataclass
class Pair:
    """Two commands timed in turn; ``measure`` says what a run's figure is."""

    name: str
    ours: list[str]
    base: list[str]
    measure: str = "wall"  # wall | train_seconds | csv
    ours_label: str = ""
    base_label: str = ""
    times: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "base": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "base": []})
    memory: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "base": []})
    array_mb: float = 0.0


def pairs(folder: Path, csv_path: Path) -> dict[str, Pair]:
    run = f"hydra.run.dir={folder}/run"  # each run replaces the previous one's folder
    child = [sys.executable, str(Path(__file__).resolve()), "--csv-child"]
    return {
        "fixed": Pair("fixed", [TRAIN, "trainer.epochs=0", *QUIET, *CKPT_OFF, run],
                      [sys.executable, "-c", FLOOR],
                      ours_label="train trainer.epochs=0 trainer.progress=none print_config=false "
                      "checkpoint.enabled=false", base_label="import torch + an optimizer"),
        "digits": Pair("digits", [TRAIN, *DIGITS, run], [sys.executable, str(HERE / "digits_by_hand.py")],
                       ours_label="train " + " ".join(DIGITS), base_label="scripts/digits_by_hand.py"),
        "help": Pair("help", [TRAIN, "--help"], [TRAIN, "--cfg", "job"],
                     ours_label="train --help", base_label="train --cfg job"),
        "ckpt-digits": Pair("ckpt-digits", [TRAIN, *DIGITS, *QUIET, *CKPT_ON, run],
                            [TRAIN, *DIGITS, *QUIET, *CKPT_OFF, run], measure="train_seconds",
                            ours_label="digits, a checkpoint every epoch", base_label="checkpoint.enabled=false"),
        "ckpt-wide": Pair("ckpt-wide", [TRAIN, *WIDE, *QUIET, *CKPT_ON, run],
                          [TRAIN, *WIDE, *QUIET, *CKPT_OFF, run], measure="train_seconds",
                          ours_label="wide, a checkpoint every epoch", base_label="checkpoint.enabled=false"),
        "csv": Pair("csv", [*child, "trainrun", str(csv_path)], [*child, "loadtxt", str(csv_path)],
                    measure="csv", ours_label="trainrun.data.sources.read_csv", base_label="numpy.loadtxt"),
    }


def write_csv(path: Path) -> None:
    """200,000 rows: 19 normal features with 6 decimals and a class label (0, 1 or 2)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(CSV_ROWS, CSV_FEATURES))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    with path.open("w") as f:
        f.write(",".join([f"x{i}" for i in range(CSV_FEATURES)] + ["y"]) + "\n")
        np.savetxt(f, np.column_stack([x, y]), fmt=["%.6f"] * CSV_FEATURES + ["%d"], delimiter=",")


READERS = ("loadtxt", "trainrun", "pyarrow", "pyarrow-stream", "csv-module")


def csv_child(how: str, path: str) -> None:
    """One read in a fresh process: seconds and peak memory above the resident size before it.
    Every reader ends with float32 features (the floor, ``loadtxt``, reads the target as one
    more float32 column)."""
    import numpy as np

    if how == "trainrun":
        from trainrun.data.sources import read_csv
    elif how.startswith("pyarrow"):
        import pyarrow as pa
        import pyarrow.csv as pc
    elif how == "csv-module":
        import csv
    before = _status_mb("VmRSS:")
    started = time.perf_counter()
    if how == "trainrun":
        x, y = read_csv(path, "y")
    elif how == "loadtxt":  # the floor: numbers only, straight into float32
        x = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
        y = x[:, :0]
    elif how.startswith("pyarrow"):  # features typed float32 as they are parsed
        types = {f"x{i}": pa.float32() for i in range(CSV_FEATURES)}
        options = pc.ConvertOptions(column_types=types)
        if how == "pyarrow":
            table = pc.read_csv(path, convert_options=options)
            x = np.column_stack([table.column(i).to_numpy() for i in range(CSV_FEATURES)])
            y = table.column(CSV_FEATURES).to_numpy()
        else:  # 1 MB blocks, stacked as they come
            reader = pc.open_csv(path, read_options=pc.ReadOptions(block_size=1 << 20), convert_options=options)
            blocks = [(np.column_stack([b.column(i).to_numpy() for i in range(CSV_FEATURES)]),
                       b.column(CSV_FEATURES).to_numpy()) for b in reader]
            x, y = np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    else:  # trainrun's reader before: csv.reader into lists, then numpy
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        x = np.asarray([r[:-1] for r in rows], dtype=np.float64).astype(np.float32)
        y = np.asarray([r[-1] for r in rows], dtype=np.int64)
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so it would report the peak of
    # the benchmark process this child was forked from.
    peak = _status_mb("VmHWM:")
    array = (x.nbytes + y.nbytes) / 2**20
    print(json.dumps({"seconds": seconds, "peak_mb": peak - before, "array_mb": array}))


def compare_readers(rounds: int) -> None:
    """``--csv-readers``: every reader on the generated file, in turn, each in its own process."""
    import importlib.util

    readers = [r for r in READERS if not r.startswith("pyarrow") or importlib.util.find_spec("pyarrow")]
    with tempfile.TemporaryDirectory(prefix="trainrun-bench-") as tmp:
        path = Path(tmp) / "big.csv"
        write_csv(path)
        print(f"{path.name}: {CSV_ROWS:,} rows x {CSV_FEATURES + 1} columns, {path.stat().st_size / 1e6:.1f} MB; "
              f"median of {rounds} rounds (one more warms up), each read in a fresh process")
        runs: dict[str, list[dict[str, float]]] = {r: [] for r in readers}
        for round_ in range(rounds + 1):
            for reader in readers:
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--csv-child", reader, str(path)],
                                     capture_output=True, text=True, check=True).stdout
                if round_:
                    runs[reader].append(json.loads(out.strip().splitlines()[-1]))
    floor = statistics.median(r["seconds"] for r in runs["loadtxt"])
    print(f"{'reader':<16} {'seconds':>8} {'÷ loadtxt':>10} {'peak MB':>8} {'÷ arrays':>9}")
    for reader, rows in runs.items():
        seconds = statistics.median(r["seconds"] for r in rows)
        peak = statistics.median(r["peak_mb"] for r in rows)
        print(f"{reader:<16} {seconds:>8.3f} {seconds / floor:>10.2f} {peak:>8.1f} {peak / rows[0]['array_mb']:>9.2f}")


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_once(pair: Pair, side: str, folder: Path, env: dict[str, str]) -> None:
    command = pair.ours if side == "ours" else pair.base
    shutil.rmtree(folder / "run", ignore_errors=True)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and every process it waited for
    pair.cpu[side].append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if pair.measure == "wall":
        pair.times[side].append(wall)
    elif pair.measure == "train_seconds":
        summary = json.loads((folder / "run" / "summary.json").read_text())
        pair.times[side].append(summary["train_seconds"])
        if side == "ours" and "checkpoint_seconds" in summary:  # the training thread's share
            pair.memory[side].append(summary["checkpoint_seconds"] / summary["train_seconds"])
    else:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        pair.times[side].append(out["seconds"])
        pair.memory[side].append(out["peak_mb"])
        if side == "ours":
            pair.array_mb = out["array_mb"]


def environment(mode: str) -> dict[str, str]:
    env = dict(os.environ)
    if mode == "source":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        import trainrun

        for cache in Path(trainrun.__file__).parent.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def report(pair: Pair, rounds: int) -> dict[str, Any]:
    ours, base = pair.times["ours"][1:], pair.times["base"][1:]  # round 0 warmed up
    row: dict[str, Any] = {
        "pair": pair.name, "ours": pair.ours_label, "base": pair.base_label, "rounds": rounds,
        "ours_median": statistics.median(ours), "base_median": statistics.median(base),
        "ours_min": min(ours), "base_min": min(base), "goal": GOALS[pair.name],
        "ours_all": ours, "base_all": base,
    }
    row["ratio_median"] = row["ours_median"] / row["base_median"]
    row["ratio_min"] = row["ours_min"] / row["base_min"]
    unit = "s"
    print(f"\n{pair.name}: {pair.ours_label}\n   ÷ {pair.base_label}")
    print(f"   {'':<10} {'median':>9} {'min':>9}")
    print(f"   {'trainrun':<10} {row['ours_median']:>8.3f}{unit} {row['ours_min']:>8.3f}{unit}")
    print(f"   {'baseline':<10} {row['base_median']:>8.3f}{unit} {row['base_min']:>8.3f}{unit}")
    print(f"   {'ratio':<10} {row['ratio_median']:>9.3f} {row['ratio_min']:>9.3f}   goal <= {GOALS[pair.name]:.2f}")
    if pair.measure == "wall":  # CPU seconds: less disturbed by other jobs than wall time
        ours_cpu, base_cpu = pair.cpu["ours"][1:], pair.cpu["base"][1:]
        row.update(ours_cpu_median=statistics.median(ours_cpu), base_cpu_median=statistics.median(base_cpu),
                   ours_cpu_all=ours_cpu, base_cpu_all=base_cpu)
        row["cpu_ratio_median"] = row["ours_cpu_median"] / row["base_cpu_median"]
        print(f"   {'cpu s':<10} {row['ours_cpu_median']:>8.3f}s {row['base_cpu_median']:>8.3f}s   ratio "
              f"{row['cpu_ratio_median']:.3f} (user+sys of each command and its children, medians)")
    if pair.measure == "train_seconds" and pair.memory["ours"][1:]:
        share = statistics.median(pair.memory["ours"][1:])
        row["checkpoint_share_median"] = share
        print(f"   the training thread's time in checkpoint code (summary.json checkpoint_seconds): "
              f"{100 * share:.2f} % of train_seconds (median)")
    if pair.measure == "csv":
        ours_mb, base_mb = pair.memory["ours"][1:], pair.memory["base"][1:]
        row.update(ours_peak_mb=statistics.median(ours_mb), base_peak_mb=statistics.median(base_mb),
                   array_mb=pair.array_mb)
        row["memory_ratio"] = row["ours_peak_mb"] / pair.array_mb
        print(f"   peak memory above the start: trainrun {row['ours_peak_mb']:.1f} MB, numpy.loadtxt "
              f"{row['base_peak_mb']:.1f} MB; arrays returned {pair.array_mb:.1f} MB; "
              f"trainrun's peak ÷ arrays {row['memory_ratio']:.2f} (goal <= {GOALS['csv-memory']:.1f})")
    return row


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--csv-child":
        csv_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (one more warms up)")
    parser.add_argument("--only", nargs="+", choices=list(GOALS)[:-1], help="these pairs only")
    parser.add_argument("--pyc", nargs="+", choices=("compiled", "source"), default=["compiled"],
                        help="how trainrun's own modules load (see above); several: each in turn")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every command (torch's threads); "
                        "1 keeps a machine that other jobs share from collapsing two-thread runs")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--csv-readers", action="store_true", help="only compare CSV readers: numpy.loadtxt, "
                        "trainrun, pyarrow (whole file and streamed) and the csv module (trainrun's reader before)")
    args = parser.parse_args()
    if args.csv_readers:
        compare_readers(args.rounds)
        return
    names = args.only or list(GOALS)[:-1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainrun-bench-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "big.csv"
        if "csv" in names:
            write_csv(csv_path)
            print(f"{csv_path.name}: {CSV_ROWS:,} rows x {CSV_FEATURES + 1} columns, "
                  f"{csv_path.stat().st_size / 1e6:.1f} MB")
        for index, mode in enumerate(args.pyc):
            env = environment(mode)
            env["TRAINRUN_CACHE_DIR"] = str(folder / "cache")  # filled in the warm-up round
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            chosen = [n for n in names if index == 0 or n not in IN_PROCESS]
            todo = [p for n, p in pairs(folder, csv_path).items() if n in chosen]
            print(f"\n== trainrun's modules {mode} (PYTHONDONTWRITEBYTECODE="
                  f"{env.get('PYTHONDONTWRITEBYTECODE', 'unset')}, OMP_NUM_THREADS="
                  f"{env.get('OMP_NUM_THREADS', 'unset')}); {args.rounds} rounds + 1 warm-up; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            for round_ in range(args.rounds + 1):
                for pair in todo:
                    run_once(pair, "ours", folder, env)
                    run_once(pair, "base", folder, env)
                last = ", ".join(f"{p.name} {p.times['ours'][-1]:.2f}/{p.times['base'][-1]:.2f}" for p in todo)
                print(f"   round {round_} done ({last})", flush=True)
            for pair in todo:
                rows.append({"pyc": mode, **report(pair, args.rounds)})
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
