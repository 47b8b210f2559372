#!/usr/bin/env python
"""Torch threads under a competing process: the collapse, and trainrun's choice of threads.

Each scenario runs its commands in turn, round after round (load from other jobs on the machine
spreads over all of them), and gives each one's training time (``summary.json``'s
``train_seconds``, the median over rounds) as a ratio to trainrun's own choice:

* ``ranks``: two torchrun agents on this machine, one process each (the loopback multi-node
  setup of docs/cluster.md): each rank with every usable CPU as threads (what torch does, and
  what trainrun did: ``LOCAL_WORLD_SIZE=1``) against trainrun's choice (usable CPUs // the ranks
  on the host);
* ``quota``: one ``train`` in a cgroup allowed 1 CPU (root only; cgroup v1 or v2): threads for
  every CPU of the affinity mask (torch's default) against trainrun's (the quota);
* ``hog``: one ``train`` beside a process spinning on a CPU: every CPU as threads against one
  thread (nothing tells a process about such a neighbour: the collapse, for reference).

    python scripts/bench_threads.py [--rounds 3] [--scenarios ranks quota hog]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
WORKLOAD = ["data=synthetic", "data.n_samples=20000", "data.n_features=64", "model.hidden=[256,256]",
            "data.batch_size=64", "trainer.epochs=2", "data.val_fraction=0", "objective=train_loss",
            "checkpoint.monitor=train_loss", "checkpoint.enabled=false", "trainer.progress=none",
            "print_config=false", "plot=false", "logger={}", "device=cpu"]
CPUS = len(os.sched_getaffinity(0))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def seconds(folder: Path) -> float:
    return float(json.loads((folder / "summary.json").read_text())["train_seconds"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_agents(folder: Path, threads: list[str]) -> float:
    command = [str(BIN / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id={folder.name}", "-m", "trainrun.cli",
               *WORKLOAD, "data.batch_size=32", *threads, f"hydra.run.dir={folder}"]
    agents = [subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for _ in range(2)]
    assert [a.wait(timeout=1800) for a in agents] == [0, 0], "the two agents failed"
    return seconds(folder)


@contextlib.contextmanager
def one_cpu_cgroup() -> Iterator[Path]:
    """A cgroup allowed 1 CPU (100 ms per 100 ms), v2 or v1; its cgroup.procs."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/cpu")
    group = base / f"trainrun-bench-{os.getpid()}"
    group.mkdir()
    try:
        if v2:
            (group / "cpu.max").write_text("100000 100000")
        else:
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text("100000")
        yield group / "cgroup.procs"
    finally:
        group.rmdir()


def in_group(procs: Path, folder: Path, threads: list[str]) -> float:
    command = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", str(BIN / "train"), *WORKLOAD, *threads,
               f"hydra.run.dir={folder}"]
    subprocess.run(command, env=env(), check=True, capture_output=True, timeout=1800)
    return seconds(folder)


def beside_a_hog(folder: Path, threads: list[str]) -> float:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        subprocess.run([str(BIN / "train"), *WORKLOAD, *threads, f"hydra.run.dir={folder}"], env=env(),
                       check=True, capture_output=True, timeout=1800)
    finally:
        hog.kill()
        hog.wait()
    return seconds(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["ranks", "quota", "hog"], choices=["ranks", "quota", "hog"])
    args = parser.parse_args()
    every = [f"trainer.threads={CPUS}"]
    print(f"{CPUS} usable CPUs; median train_seconds of {args.rounds} rounds, ratio to trainrun's choice")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            if scenario == "quota" and os.geteuid() != 0:
                print("\nquota: skipped (making a cgroup needs root)")
                continue
            variants = {f"{CPUS} threads (torch's default)": every, "trainrun's choice": []}
            if scenario == "hog":
                variants = {f"{CPUS} threads": every, "1 thread": ["trainer.threads=1"]}
            times: dict[str, list[float]] = {k: [] for k in variants}
            with one_cpu_cgroup() if scenario == "quota" else contextlib.nullcontext() as procs:
                for r in range(args.rounds):
                    for i, (label, threads) in enumerate(variants.items()):
                        folder = Path(tmp, f"{scenario}-{i}-{r}")
                        if scenario == "ranks":
                            times[label].append(two_agents(folder, threads))
                        elif scenario == "quota":
                            times[label].append(in_group(procs, folder, threads))
                        else:
                            times[label].append(beside_a_hog(folder, threads))
            median = {k: statistics.median(v) for k, v in times.items()}
            best = median[list(variants)[-1]]
            print(f"\n{scenario}")
            for label, value in median.items():
                print(f"  {label:<32} {value:>8.2f} s  {value / best:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
