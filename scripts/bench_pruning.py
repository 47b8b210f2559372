"""Pruning on the hparams_search=mlp space: 30 trials with Optuna's median pruner against the
same 30-trial search without pruning (same sampler seed): the best value found and the epochs
trained in all (docs/cluster.md, "Pruning").

    python scripts/bench_pruning.py [--trials 30] [--epochs 10] [--pruner median] [--data digits]
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


def search(work: Path, name: str, trials: int, epochs: int, pruner: str, data: str) -> dict:
    sweep_dir = work / name
    started = time.perf_counter()
    subprocess.run([TRAIN, "-m", "hparams_search=mlp", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=1",
                    f"hydra/sweeper/pruner={pruner}", f"trainer.epochs={epochs}", f"data={data}", "plot=false",
                    "logger=[]", "trainer.progress=none", f"hydra.sweep.dir={sweep_dir}"], cwd=work, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - started
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    finished = [s["objective"]["value"] for s in summaries if s["status"] in ("completed", "stopped early")]
    return {"best": min(finished), "epochs": sum(s.get("epochs_run") or 0 for s in summaries),
            "pruned": sum(s["status"] == "pruned" for s in summaries), "trials": len(summaries),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pruning-"))
    plain = search(work, "unpruned", args.trials, args.epochs, "none", args.data)
    pruned = search(work, "pruned", args.trials, args.epochs, args.pruner, args.data)
    print(f"hparams_search=mlp, {args.trials} trials of {args.epochs} epochs (data={args.data}), TPE seed 0")
    print("| search | best val_loss | trials pruned | epochs trained | wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in (("no pruning", plain), (f"{args.pruner} pruner", pruned)):
        print(f"| {name} | {r['best']:.4f} | {r['pruned']} of {r['trials']} | {r['epochs']} | {r['seconds']:.0f} s |")
    print(f"epochs saved: {1 - pruned['epochs'] / plain['epochs']:.0%}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
