"""Per-job overhead of a sweep: a 40-job basic-launcher sweep (every job in the one `train -m`
process) against one `train` in its own process, run in turn, and the sweep process's memory
after each job (docs/cluster.md, "What a sweep costs").

    python scripts/bench_sweep_overhead.py [--jobs 40] [--singles 3]

ratio = (sweep's wall time / jobs) / (one `train` process's wall time): <= 1.0 means a job in
the sweep costs no more than starting it as its own process. Memory: the sweep process's
resident set (VmRSS) as each job's summary.json appears.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "train")
RUN = ["data=iris", "trainer.epochs=2", "plot=false", "logger=[]", "trainer.progress=none"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--singles", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    singles = []
    for i in range(args.singles):
        started = time.perf_counter()
        subprocess.run([TRAIN, *RUN, f"hydra.run.dir={work / f'single{i}'}"], cwd=work, check=True,
                       capture_output=True)
        singles.append(time.perf_counter() - started)
    lrs = ",".join(f"{0.2 / (1 + i):.5f}" for i in range(args.jobs))
    sweep_dir = work / "sweep"
    started = time.perf_counter()
    proc = subprocess.Popen([TRAIN, "-m", *RUN, f"optim.lr={lrs}", f"hydra.sweep.dir={sweep_dir}"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    memory: list[float] = []
    while proc.poll() is None:
        done = len(list(sweep_dir.glob("*/summary.json")))
        if done > len(memory):
            rss = rss_mb(proc.pid)
            memory.extend([rss] * (done - len(memory)) if rss is not None else [])
        time.sleep(0.02)
    sweep_s = time.perf_counter() - started
    single = statistics.median(singles)
    print(f"one train in its own process: {single:.2f} s (median of {args.singles}: "
          f"{', '.join(f'{s:.2f}' for s in singles)})")
    print(f"{args.jobs}-job sweep, basic launcher: {sweep_s:.1f} s, {sweep_s / args.jobs:.2f} s a job")
    print(f"per-job overhead ratio: {sweep_s / args.jobs / single:.2f}")
    if len(memory) >= 10:
        tenth, half = len(memory) // 10, len(memory) // 2
        marks = sorted({1, tenth, *range(10, len(memory) + 1, 10), len(memory)})
        print("sweep process RSS after job " + ", ".join(f"{j}: {memory[j - 1]:.1f} MB" for j in marks))
        print(f"growth from job {tenth} to the last: {memory[-1] - memory[tenth - 1]:+.1f} MB; over the second "
              f"half (job {half} to {len(memory)}): {memory[-1] - memory[half - 1]:+.1f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
