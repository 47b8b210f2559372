"""A 40-job grid sweep stopped after about 20 jobs (SIGTERM) and run again into the same folder,
next to the same sweep run without interruption: how many jobs each run trained, and whether the
two summaries agree (docs/cluster.md, "Resuming a sweep").

    python scripts/bench_sweep_resume.py [--jobs 40] [--stop-after 20] [--out /tmp/bench-resume]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "train")
COLUMNS = ("job", "status", "objective", "overrides", "best_epoch", "epochs")


def grid(jobs: int) -> list[str]:
    lrs = ",".join(f"{0.2 / (1 + i):.5f}" for i in range(jobs // 2))
    return ["data=iris", "trainer.epochs=2", "plot=false", "logger=[]", f"optim.lr={lrs}", "trainer.seed=0,1"]


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return sorted(({k: r[k] for k in COLUMNS} for r in csv.DictReader(f)), key=lambda r: int(r["job"]))


def completed(sweep_dir: Path) -> int:
    n = 0
    for path in sweep_dir.glob("*/summary.json"):
        with contextlib.suppress(ValueError):
            n += json.loads(path.read_text()).get("status") == "completed"
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--stop-after", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-resume"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    overrides = grid(args.jobs)

    started = time.perf_counter()
    subprocess.run([TRAIN, "-m", *overrides, f"hydra.sweep.dir={args.out / 'whole'}"], cwd=args.out,
                   check=True, capture_output=True)
    whole_s = time.perf_counter() - started

    stopped = args.out / "stopped"
    started = time.perf_counter()
    proc = subprocess.Popen([TRAIN, "-m", *overrides, f"hydra.sweep.dir={stopped}"], cwd=args.out,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while completed(stopped) < args.stop_after:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    first_s = time.perf_counter() - started
    first = rows(stopped)
    done_first = sum(r["status"] == "completed" for r in first)
    started = time.perf_counter()
    again = subprocess.run([TRAIN, "-m", *overrides, f"hydra.sweep.dir={stopped}"], cwd=args.out,
                           capture_output=True, text=True, check=True)
    second_s = time.perf_counter() - started
    skipped = again.stdout.count("not trained again") + again.stderr.count("not trained again")
    resumed = again.stdout.count("resume=auto") + again.stderr.count("resume=auto")
    final, reference = rows(stopped), rows(args.out / "whole")
    print(f"{args.jobs}-job grid (iris, 2 epochs, basic launcher)")
    print(f"uninterrupted sweep: {len(reference)} jobs trained in {whole_s:.1f} s")
    print(f"first run: SIGTERM after {done_first} completed jobs, exit {code}, summary.csv with "
          f"{len(first)} rows, {first_s:.1f} s")
    print(f"second run: {skipped} jobs skipped, {resumed} resumed from last.pt, "
          f"{args.jobs - skipped - resumed} trained from the start; {second_s:.1f} s")
    print(f"summary equal to the uninterrupted sweep's (job, status, objective, overrides, best epoch, "
          f"epochs): {final == reference}")


if __name__ == "__main__":
    main()
