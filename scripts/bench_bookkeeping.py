#!/usr/bin/env python
"""Per-epoch bookkeeping of a long run: what the metrics files and the checkpoints cost each
epoch, at 10 epochs and at 3,000 (issue 18: O(1) per epoch, not O(epochs)).

Four real ``train`` runs per epoch count, on a tiny workload whose epochs take milliseconds
(iris, 120 training rows, batch 32, one thread), so the bookkeeping is what shows:

    bare        logger=[] checkpoint.enabled=false       (the training and validation alone)
    metrics     logger=[csv] checkpoint.enabled=false    (metrics.csv, metrics.jsonl)
    ckpt        logger=[] checkpoint.enabled=true        (last.pt and best.pt each epoch)
    both        logger=[csv] checkpoint.enabled=true     (the defaults)

Reported per variant and length: milliseconds per epoch, as CPU time (user + system, every
thread of the ``train`` process, from ``getrusage``) minus that of the same variant's run of 0
epochs (start-up and teardown), divided by the epochs; and the wall time of the training loop
(``train_seconds`` of summary.json) per epoch. CPU time is what load from other processes on a
shared machine disturbs least; the excess over ``bare`` is the bookkeeping. Rounds interleave
the variants; the median over rounds is printed.

    python scripts/bench_bookkeeping.py                     # 10 and 3000 epochs, 3 rounds
    python scripts/bench_bookkeeping.py --epochs 10 1000 --rounds 5
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
from pathlib import Path

VARIANTS = {
    "bare": ("logger=[]", "checkpoint.enabled=false"),
    "metrics": ("logger=[csv]", "checkpoint.enabled=false"),
    "ckpt": ("logger=[]", "checkpoint.enabled=true"),
    "both": ("logger=[csv]", "checkpoint.enabled=true"),
}
COMMON = ("data=iris", "trainer.progress=none", "plot=false", "trainer.threads=1", "preflight=false")


def run(epochs: int, variant: str, folder: Path) -> tuple[float, float]:
    """One ``train``: (CPU seconds of the process, train_seconds of its summary)."""
    run_dir = folder / f"{variant}-{epochs}"
    shutil.rmtree(run_dir, ignore_errors=True)
    train = Path(sys.executable).parent / "train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(train), *COMMON, *VARIANTS[variant], f"trainer.epochs={epochs}",
                    f"hydra.run.dir={run_dir}"], check=True, capture_output=True, env=env, cwd=folder)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads((run_dir / "summary.json").read_text())
    return cpu, float(summary.get("train_seconds") or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 3000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for epochs in args.epochs:
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    start, _ = run(0, variant, folder)  # start-up and teardown alone
                    used, seconds = run(epochs, variant, folder)
                    cpu[variant].append(1000 * (used - start) / epochs)
                    wall[variant].append(1000 * seconds / epochs)
            bare = statistics.median(cpu["bare"])
            print(f"{epochs} epochs, ms per epoch (median of {args.rounds} rounds): CPU, its excess over bare; "
                  "loop wall time")
            for variant in VARIANTS:
                excess = statistics.median(c - b for c, b in zip(cpu[variant], cpu["bare"], strict=True))
                print(f"  {variant:<8} cpu {statistics.median(cpu[variant]):8.2f}"
                      + ("" if variant == "bare" else f"  +{excess:7.2f} ({excess / bare:+.0%})").ljust(20)
                      + f"  wall {statistics.median(wall[variant]):8.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
