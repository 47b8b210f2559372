#!/usr/bin/env python
"""Wall time of one process against ``trainer.devices=2`` (DDP, gloo) on the wide workload.

Each variant is a real ``train`` command (what a user runs); variants run interleaved, round after
round, so that load from other processes on the machine spreads over all of them. Reported per
variant: the median wall time of the whole command (start-up, workers, Hydra included), the
median training time (``summary.json``'s ``train_seconds``: rank 0's fit loop), and both as
ratios to the single process with 2 threads.

    python scripts/time_ddp.py                 # 3 rounds, 3 epochs
    python scripts/time_ddp.py --rounds 5 --json ddp.json

Every variant computes the same math: a global batch of 256 (two processes take 128 each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "train")
WIDE = [
    "data=synthetic", "data.task=multiclass", "data.num_classes=10", "data.n_samples=100000",
    "data.n_features=128", "data.val_fraction=0", "model.hidden=[512,512]", "loss=cross_entropy",
    "optim=adam", "optim.lr=0.001", "objective=train_loss", "checkpoint.monitor=train_loss",
    "trainer.progress=none", "print_config=false", "preflight=false", "device=cpu",
]
VARIANTS = {
    "1 process, 2 threads": ["data.batch_size=256", "trainer.threads=2"],
    "1 process, 1 thread": ["data.batch_size=256", "trainer.threads=1"],
    "2 processes, 1 thread each": ["data.batch_size=128", "trainer.devices=2", "trainer.threads=1"],
}


def run_once(args: list[str], folder: Path) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.run([TRAIN, *WIDE, *args, f"hydra.run.dir={folder}"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"train {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    summary = json.loads((folder / "summary.json").read_text())
    return {"wall": wall, "train": summary["train_seconds"], "steps": summary["steps"],
            "loss": summary["final"]["train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                out = run_once([*extra, f"trainer.epochs={args.epochs}"], Path(tmp) / f"{round_}-{i}")
                results[name].append(out)
                print(f"round {round_ + 1}: {name:<28} wall {out['wall']:6.2f} s  train {out['train']:6.2f} s  "
                      f"final loss {out['loss']:.6f}", flush=True)
    base = results["1 process, 2 threads"]
    base_wall = statistics.median(r["wall"] for r in base)
    base_train = statistics.median(r["train"] for r in base)
    print(f"\nmedian of {args.rounds} rounds, {args.epochs} epochs, {base[0]['steps']:.0f} optimizer steps")
    print(f"{'variant':<28} {'wall s':>8} {'x 1p2t':>7} {'train s':>8} {'x 1p2t':>7} {'ms/step':>8}")
    table = []
    for name, rows in results.items():
        wall = statistics.median(r["wall"] for r in rows)
        train = statistics.median(r["train"] for r in rows)
        per_step = train / rows[0]["steps"] * 1e3
        table.append({"variant": name, "wall_s": wall, "train_s": train, "ms_per_step": per_step,
                      "wall_ratio": wall / base_wall, "train_ratio": train / base_train,
                      "walls": [r["wall"] for r in rows], "trains": [r["train"] for r in rows]})
        print(f"{name:<28} {wall:8.2f} {wall / base_wall:7.2f} {train:8.2f} {train / base_train:7.2f} "
              f"{per_step:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
