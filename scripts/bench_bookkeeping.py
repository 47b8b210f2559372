#!/usr/bin/env python
"""What checkpoints cost per epoch at 10 and at 3,000 epochs: constant since the epoch rows are
kept once (``checkpoints/history.jsonl``), where a checkpoint holding the whole history made
each save slower with every epoch (the run's time grew with the square of the epochs).

Each variant is a real ``train`` command on a tiny workload (one step an epoch, so the
bookkeeping is what is measured), run in turn, round after round; the table gives, per epoch,
the training thread's share of the checkpoints (``summary.json``'s ``checkpoint_seconds``) and
the whole epoch with checkpoints on and off (no loggers, no plot).

    python scripts/bench_bookkeeping.py                          # this checkout
    python scripts/bench_bookkeeping.py --src /path/to/other/src # and another version, interleaved
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

WORKLOAD = ["data=synthetic", "data.n_samples=40", "data.val_fraction=0", "data.batch_size=64",
            "model.hidden=[16]", "objective=train_loss", "checkpoint.monitor=train_loss",
            "trainer.progress=none", "print_config=false", "preflight=false", "plot=false", "logger={}",
            "trainer.threads=1", "device=cpu"]


def run(src: Path | None, epochs: int, checkpoints: bool, folder: Path) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    args = [sys.executable, "-m", "trainrun.cli", *WORKLOAD, f"trainer.epochs={epochs}",
            f"checkpoint.enabled={str(checkpoints).lower()}", f"hydra.run.dir={folder}"]
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=3600)
    summary = json.loads((folder / "summary.json").read_text())
    return {"epoch_ms": summary["train_seconds"] / epochs * 1e3,
            "checkpoint_ms": summary["checkpoint_seconds"] / epochs * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", nargs="+", type=int, default=[10, 3000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--src", type=Path, help="also run another version's source tree, interleaved")
    args = parser.parse_args()
    versions: dict[str, Path | None] = {"this": None, **({"--src": args.src} if args.src else {})}
    results: dict[tuple[str, int, bool], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for epochs in args.epochs:
                for version, src in versions.items():
                    for checkpoints in (True, False):
                        folder = Path(tmp, f"{version[-4:]}-{epochs}-{checkpoints}-{r}")
                        results.setdefault((version, epochs, checkpoints), []).append(
                            run(src, epochs, checkpoints, folder))
    median = statistics.median
    print(f"{'version':>8} {'epochs':>7} {'checkpoints ms/epoch':>21} {'epoch ms (ckpt on)':>19} "
          f"{'epoch ms (off)':>15}")
    for version in versions:
        for epochs in args.epochs:
            on, off = results[version, epochs, True], results[version, epochs, False]
            print(f"{version:>8} {epochs:>7} {median(r['checkpoint_ms'] for r in on):>21.2f} "
                  f"{median(r['epoch_ms'] for r in on):>19.2f} {median(r['epoch_ms'] for r in off):>15.2f}", flush=True)


if __name__ == "__main__":
    main()
