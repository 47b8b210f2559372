"""Pruning on the hparams_search=mlp space: 30 trials with Optuna's pruners against the same
30-trial search without pruning (same TPE seed): the best value found and the epochs trained in
all (docs/cluster.md, "Pruning"). The searches run at the same time, one process each.

    python scripts/bench_pruning.py [--trials 30] [--epochs 10] [--pruners median,successive_halving] [--data digits]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "train")


def start(work: Path, pruner: str, args: argparse.Namespace) -> subprocess.Popen:
    return subprocess.Popen(
        [TRAIN, "-m", "hparams_search=mlp", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.n_jobs=1",
         f"hydra/sweeper/pruner={pruner}", f"trainer.epochs={args.epochs}", f"data={args.data}", "plot=false",
         "logger=[]", "trainer.progress=none", f"hydra.sweep.dir={work / pruner}"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def result(sweep_dir: Path, seconds: float) -> dict:
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    finished = [s["objective"]["value"] for s in summaries if s["status"] in ("completed", "stopped early")]
    return {"best": min(finished), "epochs": sum(s.get("epochs_run") or 0 for s in summaries),
            "pruned": sum(s["status"] == "pruned" for s in summaries), "trials": len(summaries),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pruners", default="median,successive_halving")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pruning-"))
    names = ["none", *args.pruners.split(",")]
    started = time.perf_counter()
    procs = {name: start(work, name, args) for name in names}
    seconds = {}
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the search with pruner {name} failed (exit {proc.returncode}); see {work / name}")
        seconds[name] = time.perf_counter() - started
    results = {name: result(work / name, seconds[name]) for name in names}
    plain = results["none"]
    print(f"hparams_search=mlp, {args.trials} trials of {args.epochs} epochs (data={args.data}), TPE seed 0, "
          "the searches run at the same time")
    print("| pruner | best val_loss | trials pruned | epochs trained | epochs saved |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['best']:.4f} | {r['pruned']} of {r['trials']} | {r['epochs']} | "
              f"{1 - r['epochs'] / plain['epochs']:.0%} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
