#!/usr/bin/env python
"""Per-epoch bookkeeping of a long run: what the metrics files and the checkpoints cost each
epoch, at 10 epochs and at 3,000 (issue 18: O(1) per epoch, not O(epochs)).

Four real ``train`` runs per epoch count, on a tiny workload whose epochs take milliseconds
(iris, 120 training rows, batch 32, one thread), so the bookkeeping is what shows:

    bare        logger=[] checkpoint.enabled=false       (the training and validation alone)
    metrics     logger=[csv] checkpoint.enabled=false    (metrics.csv, metrics.jsonl)
    ckpt        logger=[] checkpoint.enabled=true        (last.pt and best.pt each epoch)
    both        logger=[csv] checkpoint.enabled=true     (the defaults)

Reported per run: ``train_seconds / epochs`` from summary.json (ms per epoch), and the excess of
each variant over ``bare`` run in the same round. Rounds interleave the variants, so load from
other processes spreads over all of them; the median over rounds is printed.

    python scripts/bench_bookkeeping.py                     # 10 and 3000 epochs, 3 rounds
    python scripts/bench_bookkeeping.py --epochs 10 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
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


def per_epoch_ms(epochs: int, variant: str, folder: Path) -> float:
    run_dir = folder / f"{variant}-{epochs}"
    train = Path(sys.executable).parent / "train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(train), *COMMON, *VARIANTS[variant], f"trainer.epochs={epochs}",
                    f"hydra.run.dir={run_dir}"], check=True, capture_output=True, env=env, cwd=folder)
    summary = json.loads((run_dir / "summary.json").read_text())
    return 1000 * summary["train_seconds"] / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 3000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for epochs in args.epochs:
            seen: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    seen[variant].append(per_epoch_ms(epochs, variant, folder))
            bare = statistics.median(seen["bare"])
            print(f"{epochs} epochs, ms per epoch (median of {args.rounds} rounds; excess over bare):")
            for variant, values in seen.items():
                excess = statistics.median(v - b for v, b in zip(values, seen["bare"], strict=True))
                print(f"  {variant:<8} {statistics.median(values):8.2f}" + ("" if variant == "bare" else
                                                                         f"   +{excess:.2f}  ({excess / bare:+.0%})"))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
