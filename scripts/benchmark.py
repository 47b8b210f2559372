#!/usr/bin/env python
"""Time trainrun's loop against the best hand-written loop and the tutorial loop.

Every variant trains the same model from the same initial weights on the same data in the same
batch order, so all of them compute the same math and end with the same weights (checked and
printed). Only the training part is timed. Variants run interleaved, round after round, in one
process; the table shows the median per-step time of each and the ratios.

    python scripts/benchmark.py                       # all three workloads
    python scripts/benchmark.py --workloads digits --rounds 5
    python scripts/benchmark.py --quick               # fewer epochs, for a smoke test

Workloads (from the team's reference measurements):
  tiny   60-60-30-1 sigmoid MLP, BCE, SGD lr 0.1, 208 rows, batch 16, 200 epochs
  digits 64-256-256-10 MLP, CrossEntropy, SGD+momentum, batch 32, 30 epochs
  wide   100k x 128, 128-512-512-10 MLP, CrossEntropy, Adam, batch 256, 3 epochs
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Sampler, TensorDataset

from trainrun.build import Run, build
from trainrun.cli import config_dir
from trainrun.loop import TrainState, fit

WORKLOADS: dict[str, dict[str, Any]] = {
    "tiny": {
        "overrides": [
            "data=synthetic", "data.task=binary", "data.n_samples=208", "data.n_features=60",
            "model.hidden=[60,30]", "loss=bce", "optim=sgd", "optim.lr=0.1", "optim.momentum=0",
            "data.batch_size=16", "trainer.epochs=200",
        ],
        "quick_epochs": 20,
    },
    "digits": {
        "overrides": [
            "data=digits", "model.hidden=[256,256]", "loss=cross_entropy", "optim=sgd",
            "optim.lr=0.05", "optim.momentum=0.9", "data.batch_size=32", "trainer.epochs=30",
        ],
        "quick_epochs": 3,
    },
    "wide": {
        "overrides": [
            "data=synthetic", "data.task=multiclass", "data.num_classes=10",
            "data.n_samples=100000", "data.n_features=128", "model.hidden=[512,512]",
            "loss=cross_entropy", "optim=adam", "optim.lr=0.001", "data.batch_size=256",
            "trainer.epochs=3",
        ],
        "quick_epochs": 1,
    },
}
COMMON = ["data.val_fraction=0", "trainer.progress=none", "checkpoint.enabled=false",
          "device=cpu"]


class QuietReporter:
    """What fit() reports to, without output: the benchmark times the loop, not the terminal."""

    def progress(self, epoch: int, steps: int) -> Any:
        import contextlib

        return contextlib.nullcontext(_NoBar())

    def epoch_end(self, row: dict[str, Any], state: Any) -> None:
        pass


class _NoBar:
    def step(self, loss: torch.Tensor) -> None:
        pass


class EpochOrder(Sampler[int]):
    """Yields trainrun's permutation for each epoch, so the DataLoader sees the same order."""

    def __init__(self, permutation: Callable[[int], torch.Tensor]) -> None:
        self.permutation, self.epoch = permutation, 0

    def __iter__(self):
        yield from self.permutation(self.epoch).tolist()

    def __len__(self) -> int:
        return len(self.permutation(0))


def make_run(overrides: list[str], extra: list[str]) -> Run:
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose("train", overrides=overrides + COMMON + extra)
    return build(cfg)


def hand_loop(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[float]:
    """The best hand-written loop: slices of a permuted copy, one .item() per epoch."""
    batches = run.train_batches
    x_all, y_all, criterion = batches.x, batches.y, run.criterion
    bounds = batches.bounds
    n = batches.num_samples
    losses = []
    for epoch in range(run.cfg.trainer.epochs):
        perm = batches.permutation(epoch)
        x, y = x_all[perm], y_all[perm]
        model.train()
        total = torch.zeros(())
        for lo, hi in bounds:
            optimizer.zero_grad(set_to_none=True)
            out = model(x[lo:hi])
            loss = criterion(out, y[lo:hi])
            loss.backward()
            optimizer.step()
            total += loss.detach() * (hi - lo)
        losses.append(total.item() / n)
    return losses


def tutorial_loop(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[float]:
    """The tutorial loop: DataLoader over a TensorDataset, loss.item() every step."""
    batches = run.train_batches
    sampler = EpochOrder(batches.permutation)
    loader = DataLoader(TensorDataset(batches.x, batches.y), batch_size=run.cfg.data.batch_size,
                        sampler=sampler)
    criterion = run.criterion
    losses = []
    for epoch in range(run.cfg.trainer.epochs):
        sampler.epoch = epoch
        model.train()
        running, seen = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            out = model(x)
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(x)
            seen += len(x)
        losses.append(running / seen)
    return losses


@dataclass
class Result:
    times: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    steps: int = 0


def time_workload(name: str, rounds: int, quick: bool, extra: list[str]) -> Result:
    spec = WORKLOADS[name]
    overrides = list(spec["overrides"])
    if quick:
        overrides.append(f"trainer.epochs={spec['quick_epochs']}")
    template = make_run(overrides, extra)
    initial = copy.deepcopy(template.module.state_dict())
    result = Result(steps=len(template.train_batches) * template.cfg.trainer.epochs)

    def trainrun_variant() -> dict[str, torch.Tensor]:
        run = make_run(overrides, extra)  # built outside the timed part
        run.module.load_state_dict(initial)
        started = time.perf_counter()
        fit(run, TrainState(), QuietReporter())
        result.times.setdefault("trainrun", []).append(time.perf_counter() - started)
        return run.module.state_dict()

    def plain_variant(label: str, loop: Callable[..., list[float]]) -> dict[str, torch.Tensor]:
        run = make_run(overrides, extra)
        run.module.load_state_dict(initial)
        started = time.perf_counter()
        loop(run, run.module, run.optimizer)
        result.times.setdefault(label, []).append(time.perf_counter() - started)
        return run.module.state_dict()

    for _ in range(rounds + 1):  # the first round warms up (imports, allocator) and is dropped
        result.weights["trainrun"] = trainrun_variant()
        result.weights["hand"] = plain_variant("hand", hand_loop)
        result.weights["tutorial"] = plain_variant("tutorial", tutorial_loop)
    result.times = {k: v[1:] for k, v in result.times.items()}
    return result


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    if all(torch.equal(a[k], b[k]) for k in a):
        return "identical"
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    return f"max diff {diff:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra trainrun overrides for every variant, "
                        "e.g. optim.fused=true (applied to all variants' optimizers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    header = (f"{'workload':<8} {'steps':>7} {'trainrun':>10} {'hand':>10} {'tutorial':>10} "
              f"{'trainrun/hand':>14} {'tutorial/trainrun':>18}  weights")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} "
          "rounds, µs per training step")
    print(header)
    for name in args.workloads:
        result = time_workload(name, args.rounds, args.quick, args.overrides)
        us = {k: statistics.median(v) / result.steps * 1e6 for k, v in result.times.items()}
        check = same_weights(result.weights["trainrun"], result.weights["hand"])
        tut = same_weights(result.weights["trainrun"], result.weights["tutorial"])
        row = {"workload": name, "steps": result.steps, **{f"{k}_us": v for k, v in us.items()},
               "trainrun_over_hand": us["trainrun"] / us["hand"],
               "tutorial_over_trainrun": us["tutorial"] / us["trainrun"],
               "weights_vs_hand": check, "weights_vs_tutorial": tut}
        rows.append(row)
        print(f"{name:<8} {result.steps:>7} {us['trainrun']:>10.0f} {us['hand']:>10.0f} "
              f"{us['tutorial']:>10.0f} {row['trainrun_over_hand']:>14.3f} "
              f"{row['tutorial_over_trainrun']:>18.2f}  vs hand: {check}; vs tutorial: {tut}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
