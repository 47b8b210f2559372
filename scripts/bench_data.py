#!/usr/bin/env python
"""Figures of data beyond memory (docs/performance.md, "Data beyond memory"): benchmarks, not tests.

    python scripts/bench_data.py memory      # a 4 GB .npy and a 2 GB Parquet file, one epoch each:
                                             # peak RssAnon (and Pss_Anon) summed over train and its workers
    python scripts/bench_data.py throughput  # a user Dataset with per-sample work, num_workers=2:
                                             # trainrun's loop against a hand-written DataLoader loop
    python scripts/bench_data.py resume      # a 1 ms __getitem__, stopped at 90 % of an epoch: time to
                                             # the first batch after the resume, and as before (re-reading)
    python scripts/bench_data.py scaling     # time per epoch at 10k, 100k, 1M rows (in memory, npy streamed)
    python scripts/bench_data.py access      # why a copy: a shuffled batch from a memmap vs Parquet row groups

Big files go to ``--folder`` (default: a temporary folder) and are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BIN = Path(sys.executable).parent
QUIET = ["plot=false", "trainer.progress=none", "checkpoint.enabled=false", "model=linear",
         "data.val_fraction=0", "objective=train_loss", "checkpoint.monitor=train_loss"]


# --------------------------------------------------------------------------- memory


def anon_kb(pid: int, field: str) -> int:
    """``field`` (RssAnon from status, Pss_Anon from smaps_rollup) of one process, in kB."""
    source = "status" if field == "RssAnon" else "smaps_rollup"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/{source}") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError), open(f"/proc/{p}/task/{p}/children") as f:
            todo += [int(c) for c in f.read().split()]
    return out


def peak_memory(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a command; sample the summed anonymous memory of its process tree every 50 ms."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"RssAnon": 0, "Pss_Anon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = tree(proc.pid)
            for field in peak:
                peak[field] = max(peak[field], sum(anon_kb(p, field) for p in pids))
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{output}")
    return {"seconds": time.perf_counter() - started, "rss_anon_mb": peak["RssAnon"] / 1024,
            "pss_anon_mb": peak["Pss_Anon"] / 1024}


def write_npy(folder: Path, rows: int, width: int) -> None:
    from numpy.lib.format import open_memmap

    x = open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(rows, width))
    y = open_memmap(folder / "y.npy", mode="w+", dtype=np.int64, shape=(rows,))
    rng = np.random.default_rng(0)
    w = rng.normal(size=width).astype(np.float32)
    for lo in range(0, rows, 1 << 16):
        chunk = rng.normal(size=(min(1 << 16, rows - lo), width)).astype(np.float32)
        x[lo:lo + len(chunk)] = chunk
        y[lo:lo + len(chunk)] = (chunk @ w > 0).astype(np.int64)
    x.flush()
    y.flush()
    del x, y


def write_parquet(folder: Path, rows: int, width: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    names = [f"f{j}" for j in range(width)]
    schema = pa.schema([*(pa.field(n, pa.float64()) for n in names), pa.field("label", pa.int64())])
    with pq.ParquetWriter(folder / "big.parquet", schema, compression="none") as writer:
        for lo in range(0, rows, 1 << 16):
            chunk = rng.normal(size=(min(1 << 16, rows - lo), width))
            label = (chunk[:, 0] + chunk[:, 1] > 0).astype(np.int64)
            writer.write_table(pa.table([*(chunk[:, j] for j in range(width)), label], schema=schema))


def memory(folder: Path, workers: list[int], parquet_only: bool = False) -> list[dict[str, Any]]:
    env = {**os.environ, "TRAINRUN_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    results: list[dict[str, Any]] = []
    if not parquet_only:
        write_npy(folder, 4 * 2**30 // (4 * 256), 256)  # 4 GiB of float32: 4,194,304 rows x 256
    size = (folder / "X.npy").stat().st_size / 2**30 if not parquet_only else 0
    for w in [] if parquet_only else workers:
        run = ["data=npy", "data.path=X.npy", "data.target_path=y.npy", "data.batch_size=4096",
               f"data.num_workers={w}", "trainer.epochs=1", *QUIET, f"hydra.run.dir={folder / f'npy{w}'}"]
        results.append({"what": f"npy {size:.1f} GiB, num_workers={w}", **peak_memory([str(BIN / "train"), *run],
                                                                                       folder, env)})
        print(json.dumps(results[-1]), flush=True)
    for name in ("X.npy", "y.npy"):
        (folder / name).unlink(missing_ok=True)
    write_parquet(folder, 2 * 2**30 // (8 * 64), 64)  # 2 GiB of float64 columns: 4,194,304 rows x 64
    size = (folder / "big.parquet").stat().st_size / 2**30
    for w in workers:
        run = ["data=parquet", "data.path=big.parquet", "data.target=label", "data.batch_size=4096",
               f"data.num_workers={w}", "trainer.epochs=1", *QUIET, f"hydra.run.dir={folder / f'pq{w}'}"]
        results.append({"what": f"parquet {size:.1f} GiB (streamed, first run converts), num_workers={w}",
                        **peak_memory([str(BIN / "train"), *run], folder, env)})
        print(json.dumps(results[-1]), flush=True)
    return results


# --------------------------------------------------------------------------- in-process runs

WORK = '''
import numpy as np
import torch


class Work(torch.utils.data.Dataset):
    """Per-sample work: a sample computed from its index (about {ms} ms of numpy)."""
    num_classes = 2

    def __init__(self, n={n}, ms={ms}):
        self.n, self.reps = n, max(1, int(ms * 40))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        x = rng.normal(size=32).astype(np.float32)
        for _ in range(self.reps):
            x = np.tanh(x * 1.0001)
        return torch.from_numpy(x), int(x[0] > 0)


class Slow(torch.utils.data.Dataset):
    """A 1 ms __getitem__ (a read from slow storage)."""
    num_classes = 2

    def __init__(self, n={n}):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import time
        time.sleep(0.001)
        return torch.full((8,), float(i % 7)), i % 2
'''


def setup_for(folder: Path, overrides: list[str]) -> Any:
    sys.path.insert(0, str(folder))
    from hydra import compose, initialize_config_dir

    from trainrun.build import build
    from trainrun.config import config_dir
    from trainrun.config.schemas import register

    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("train", overrides=[*QUIET, "device=cpu", *overrides])
    return build(cfg)


def throughput(folder: Path, rounds: int) -> dict[str, Any]:
    """trainrun's fit against a hand-written loop over the same DataLoader settings (2 workers,
    persistent, batch 64), the same model, optimizer and data, interleaved round after round."""
    import torch
    from torch.utils.data import DataLoader

    from trainrun.engine.loop import TrainState, fit

    (folder / "work.py").write_text(WORK.format(n=6000, ms=0.3))
    common = ["data._target_=work.Work", "data.num_workers=2", "data.batch_size=64", "trainer.epochs=1",
              "model=mlp", "model.hidden=[64]"]
    run = setup_for(folder, common)
    initial = {k: v.clone() for k, v in run.raw_model.state_dict().items()}
    dataset = run.train_batches.dataset
    hand_loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2, persistent_workers=True,
                             generator=torch.Generator().manual_seed(0))

    class Silent:
        def progress(self, epoch: int, steps: int) -> Any:
            return contextlib.nullcontext(self)

        def step(self, loss: Any) -> None:
            pass

        def epoch_end(self, row: Any, state: Any) -> None:
            pass

    def trainrun_epoch(epoch: int) -> float:
        started = time.perf_counter()
        state = TrainState(epoch=epoch)
        run.settings.__dict__["epochs"] = epoch + 1  # frozen dataclass: one more epoch each round
        fit(run, state, Silent())
        return time.perf_counter() - started

    def hand_epoch() -> float:
        model, optimizer, criterion = run.raw_model, run.optimizer, run.criterion
        started = time.perf_counter()
        model.train()
        for x, y in hand_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x.float()), y)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    mine, hand = [], []
    for r in range(rounds + 1):  # round 0 starts the workers of both: not counted
        run.raw_model.load_state_dict(initial)
        t = trainrun_epoch(r)
        run.raw_model.load_state_dict(initial)
        h = hand_epoch()
        if r:
            mine.append(t)
            hand.append(h)
        print(f"round {r}: trainrun {t:.2f} s, hand loop {h:.2f} s", flush=True)
    return {"trainrun_s": statistics.median(mine), "hand_s": statistics.median(hand),
            "throughput_ratio": statistics.median(hand) / statistics.median(mine), "rounds": rounds}


def resume(folder: Path) -> dict[str, Any]:
    """First batch after a resume at 90 % of an epoch of a 1 ms __getitem__ (20,000 samples,
    batch 32: 625 batches), now (the sampler starts at batch 450) and as before (the loader
    read and dropped the 450 batches before it: what batches.py did)."""
    (folder / "slow.py").write_text(WORK.format(n=20000, ms=1))
    run = setup_for(folder, ["data._target_=slow.Slow", "data.batch_size=32", "data.num_workers=0",
                             "data.val_fraction=0"])
    batches = run.train_batches
    start = int(len(batches) * 0.9)
    out = {}
    for name, first in (("epoch start", 0), ("resume at 90 %", start)):
        started = time.perf_counter()
        next(iter(batches.epoch(1, first)))
        out[name + " s"] = time.perf_counter() - started
    batches.sampler.set_epoch(1, 0)
    started = time.perf_counter()
    for i, _ in enumerate(batches.loader):  # before: every batch up to the resume point was read
        if i == start:
            break
    out["before: re-reading to 90 % s"] = time.perf_counter() - started
    out["batches per epoch"] = len(batches)
    return out


def scaling(folder: Path) -> list[dict[str, Any]]:
    """Seconds per epoch at 10k, 100k and 1M rows x 32 features: in memory (sliced) and as an
    .npy read through the loader (batch 256, MLP 32-64-2)."""
    out = []
    for rows in (10_000, 100_000, 1_000_000):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, 32)).astype(np.float32)
        np.save(folder / "X.npy", x)
        np.save(folder / "y.npy", (x[:, 0] > 0).astype(np.int64))
        np.savez(folder / "d.npz", X=x, y=(x[:, 0] > 0).astype(np.int64))
        row: dict[str, Any] = {"rows": rows}
        for name, data in (("in memory (npz)", ["data=npz", "data.path=d.npz"]),
                           ("npy, loader", ["data=npy", "data.path=X.npy", "data.target_path=y.npy"])):
            run_dir = folder / f"scale{rows}"
            subprocess.run([str(BIN / "train"), *data, "data.batch_size=256", "trainer.epochs=2", *QUIET,
                            "model=mlp", "model.hidden=[64]", f"hydra.run.dir={run_dir}"], cwd=folder, check=True,
                           capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            row[name + " s/epoch"] = history[-1]["seconds"]  # the second epoch: nothing to warm up
            shutil.rmtree(run_dir)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def access(folder: Path) -> dict[str, Any]:
    """One shuffled batch of 256 rows from 1M x 64: a memory-mapped .npy against Parquet row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1_000_000, 64)).astype(np.float32)
    np.save(folder / "A.npy", x)
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(64)}), folder / "a.parquet", row_group_size=65536)
    rows = np.sort(rng.choice(1_000_000, 256, replace=False))
    mm = np.load(folder / "A.npy", mmap_mode="r")
    started = time.perf_counter()
    for _ in range(20):
        _ = mm[rows]
    npy = (time.perf_counter() - started) / 20
    f = pq.ParquetFile(folder / "a.parquet")
    groups = np.unique(rows // 65536)
    started = time.perf_counter()
    for _ in range(3):
        for g in groups:
            f.read_row_group(int(g))
    parquet = (time.perf_counter() - started) / 3
    return {"npy memmap ms/batch": npy * 1e3, "parquet row groups ms/batch": parquet * 1e3,
            "row groups touched": len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="+", choices=["memory", "throughput", "resume", "scaling", "access"])
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--parquet-only", action="store_true", help="memory: the Parquet file alone")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench_data-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        for what in args.what:
            if what == "memory":
                results[what] = memory(folder, args.workers, args.parquet_only)
            elif what == "throughput":
                results[what] = throughput(folder, args.rounds)
            elif what == "resume":
                results[what] = resume(folder)
            elif what == "scaling":
                results[what] = scaling(folder)
            else:
                results[what] = access(folder)
            print(json.dumps({what: results[what]}, indent=1), flush=True)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for big in ("X.npy", "y.npy", "big.parquet", "A.npy", "a.parquet", "d.npz", "cache"):
                p = folder / big
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
