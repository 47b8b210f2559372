#!/usr/bin/env python
"""Time trainrun's loop against the best hand-written loop, the tutorial loop and Lightning.

Every variant trains the same model from the same initial weights on the same data in the same
batch order, so all of them compute the same math and end with the same weights (checked and
printed; fused optimizers and compiled models round differently in the last bits). Only the
training part is timed. Variants run interleaved, round after round, in one process; the table
shows the median per-step time of each and its ratios to the best hand loop, the tutorial loop
and Lightning's Trainer.

    python scripts/benchmark.py                       # all three workloads
    python scripts/benchmark.py --workloads digits --rounds 5
    python scripts/benchmark.py --quick               # fewer epochs, for a smoke test
    python scripts/benchmark.py --levers fused compile compile+fused   # trainrun with levers
    python scripts/benchmark.py --startup [--rounds 5 ...]   # fixed costs: scripts/bench_startup.py
    python scripts/benchmark.py --strategies ddp fsdp [--workloads wide]   # 2 processes vs a hand
                                                      # torchrun script: scripts/bench_distributed.py

Lightning variants run when ``lightning`` is installed (``pip install -e .[bench]``): its Trainer
with the progress bar and ``self.log`` every step (what its docs show), and a lean one (no bar,
no logging) as its best case. ``--no-lightning`` leaves them out.

Levers (``--levers``, each a trainrun variant with extra overrides): ``fused`` (optim.fused=true),
``foreach`` (optim.foreach=true), ``compile`` (trainer.compile=true; compiled and warmed up on
one epoch outside the timed part, then weights and optimizer state reset), combinations with
``+``, and ``bf16`` (trainer.precision=bf16: different math, different weights). ``hand+fused``
is the hand loop with a fused optimizer, to show what the lever is worth outside trainrun too.

On a GPU (``--device cuda``): every variant runs there, with its data on the device (the
tutorial loop keeps its data on the CPU and copies each batch, as tutorials do), the clock read
after ``torch.cuda.synchronize()``. Levers for it: ``reduce-overhead`` (trainer.compile=
reduce-overhead: the whole step replayed as one CUDA graph), ``max-autotune``, ``tf32``,
``channels_last``. ``torch-reduce-overhead`` / ``torch-max-autotune`` put torch.compile with that
mode around trainrun's model directly, to measure the modes trainrun refuses on a CPU.

Workloads (from the team's reference measurements):
  tiny   60-60-30-1 sigmoid MLP, BCE, SGD lr 0.1, 208 rows, batch 16, 200 epochs
  digits 64-256-256-10 MLP, CrossEntropy, SGD+momentum, batch 32, 30 epochs
  wide   100k x 128, 128-512-512-10 MLP, CrossEntropy, Adam, batch 256, 3 epochs
  resnet (GPU-sized; default with --device cuda) a 3-block ResNet (64-128-256 channels, batch
         norm) on 10,240 synthetic 3x32x32 images, CrossEntropy, SGD+momentum, batch 256,
         3 epochs (scripts/bench_models.py)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_models  # this folder's: the GPU-sized workload's model and images
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tutorial_loop import tutorial_epoch  # this folder's: the loop written once

from trainrun.build.setup import Setup, build
from trainrun.build.speed import set_tf32
from trainrun.config import config_dir
from trainrun.config.schemas import register
from trainrun.engine.loop import TrainState, fit, train_epoch
from trainrun.engine.stop import Stop
from trainrun.errors import TrainrunError

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
    "resnet": {
        "overrides": [
            "data=npz", "model._target_=bench_models.ResNet", "loss=cross_entropy", "optim=sgd",
            "optim.lr=0.05", "optim.momentum=0.9", "data.batch_size=256", "trainer.epochs=3",
        ],
        "quick_epochs": 1,
        "images": {"n": 10240, "size": 32},  # written to a temporary NPZ (bench_models.write_images)
        "quick_images": {"n": 512, "size": 16, "overrides": ["+model.widths=[8,16,32]"]},
    },
}
COMMON = ["data.val_fraction=0", "objective=train_loss", "checkpoint.monitor=train_loss",
          "trainer.progress=none", "checkpoint.enabled=false"]
DEVICE = ["device=cpu"]  # --device
CLOCK = [time.perf_counter]  # --clock cpu: time.process_time


def torch_defaults() -> None:
    """TF32 as torch starts (a tf32 variant sets it for the whole process)."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True


def sync() -> None:
    """Wait for the GPU before reading the clock (kernels run after Python returns)."""
    if DEVICE == ["device=cuda"]:
        torch.cuda.synchronize()


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


LEVERS = {
    "fused": ["optim.fused=true"],
    "foreach": ["optim.foreach=true"],
    "compile": ["trainer.compile=true"],
    "bf16": ["trainer.precision=bf16"],  # not the same math: autocast matmuls in bfloat16
    "reduce-overhead": ["trainer.compile=reduce-overhead"],  # CUDA: the step as one CUDA graph
    "max-autotune": ["trainer.compile=max-autotune"],  # CUDA
    "tf32": ["trainer.tf32=true"],  # CUDA: TensorFloat-32 matmuls and convolutions
    "channels_last": ["trainer.channels_last=true"],
    "torch-reduce-overhead": [],  # torch.compile(model, mode=...) put in by hand (see TORCH_MODES)
    "torch-max-autotune": [],
}
# Levers that wrap trainrun's model in torch.compile with a mode trainrun refuses on a CPU, to
# measure what it refuses (docs/performance.md).
TORCH_MODES = {"torch-reduce-overhead": "reduce-overhead", "torch-max-autotune": "max-autotune"}


def lever_overrides(spec: str) -> list[str]:
    """``compile+fused`` -> the overrides of each named lever."""
    return [o for part in spec.split("+") for o in LEVERS[part]]


def compiled(run: Setup) -> bool:
    """Whether the run compiles (torch.compile) or captures its step: it is warmed up first."""
    return str(run.cfg.trainer.compile).lower() != "false" or run.model is not run.raw_model


def warm_up_compiled(run: Setup, initial: dict[str, torch.Tensor]) -> None:
    """Compile outside the timed part: one epoch (every batch shape), then back to the initial
    weights and a fresh optimizer state, so the timed run computes what the others compute."""
    train_epoch(run, TrainState(), 0, Stop.for_setup(run, checkpoints=None))
    run.raw_model.load_state_dict(initial)
    run.optimizer.state.clear()  # a captured step (step_graph) sees it and warms up again


class EpochBatches:
    """trainrun's batches for Lightning: an iterable with a length; each pass yields the slices
    of the Trainer's current epoch (the same order every other variant sees)."""

    def __init__(self, batches: Any) -> None:
        self.batches, self.trainer = batches, None

    def __iter__(self):
        return iter(self.batches.epoch(self.trainer.current_epoch if self.trainer else 0))

    def __len__(self) -> int:
        return len(self.batches)


def lightning_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lightning") is not None


def lightning_loop(run: Setup, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                   lean: bool) -> float:
    """Lightning's Trainer on the same module, optimizer and batches; returns the seconds from
    the start of its training loop to its end (its set-up and tear-down are not counted)."""
    import contextlib
    import logging
    import os
    import warnings

    import lightning as L

    criterion = run.criterion

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = criterion(self.net(x), y)
            if not lean:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer

    class Clock(L.Callback):
        started = stopped = 0.0

        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.started = CLOCK[0]()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.stopped = CLOCK[0]()

    clock, batches = Clock(), EpochBatches(run.train_batches)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with (warnings.catch_warnings(), open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink),
          contextlib.redirect_stdout(sink)):  # the bar still draws, into /dev/null
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            max_epochs=run.cfg.trainer.epochs, accelerator=run.device.type, devices=1, logger=False,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=not lean,
            num_sanity_val_steps=0, callbacks=[clock],
        )
        batches.trainer = trainer
        trainer.fit(Module(), train_dataloaders=batches)
    return clock.stopped - clock.started


def make_run(overrides: list[str], extra: list[str]) -> Setup:
    register()
    torch_defaults()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("train", overrides=overrides + COMMON + DEVICE + extra)
    return build(cfg)


def hand_loop(run: Setup, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[float]:
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
        total = torch.zeros((), device=x_all.device)
        for lo, hi in bounds:
            optimizer.zero_grad(set_to_none=True)
            out = model(x[lo:hi])
            loss = criterion(out, y[lo:hi])
            loss.backward()
            optimizer.step()
            total += loss.detach() * (hi - lo)
        losses.append(total.item() / n)
    return losses


def tutorial_loop(run: Setup, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[float]:
    """The tutorial loop: DataLoader over a TensorDataset, loss.item() every step; on a GPU the
    data stays on the CPU and each batch is copied over, as tutorials do."""
    batches = run.train_batches
    sampler = EpochOrder(batches.permutation)
    device = batches.x.device
    loader = DataLoader(TensorDataset(batches.x.cpu(), batches.y.cpu()), batch_size=run.cfg.data.batch_size,
                        sampler=sampler)
    criterion = run.criterion
    losses = []
    for epoch in range(run.cfg.trainer.epochs):
        sampler.epoch = epoch
        epoch_batches = loader if device.type == "cpu" else ((x.to(device), y.to(device)) for x, y in loader)
        losses.append(tutorial_epoch(model, optimizer, criterion, epoch_batches))
    return losses


@dataclass
class Result:
    times: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    steps: int = 0


def time_workload(name: str, rounds: int, quick: bool, extra: list[str], levers: list[str] = (),
                  lightning: bool = False) -> Result:
    spec = WORKLOADS[name]
    overrides = list(spec["overrides"])
    if quick:
        overrides.append(f"trainer.epochs={spec['quick_epochs']}")
    if "images" in spec:  # the GPU-sized workload's data, written once per run of the benchmark
        images = dict(spec["quick_images"] if quick else spec["images"])
        overrides += images.pop("overrides", [])
        path = Path(tempfile.mkdtemp(prefix="trainrun-bench-")) / "images.npz"
        overrides.append(f"data.path={bench_models.write_images(path, **images)}")
    template = make_run(overrides, extra)
    initial = copy.deepcopy(template.raw_model.state_dict())
    result = Result(steps=len(template.train_batches) * template.cfg.trainer.epochs)

    compiled_runs: dict[str, Setup] = {}
    refused: set[str] = set()

    def trainrun_variant(label: str = "trainrun", more: list[str] = ()) -> dict[str, torch.Tensor]:
        if label in compiled_runs:  # compiled once: later rounds reuse it from the initial state
            run = compiled_runs[label]
            run.raw_model.load_state_dict(initial)
            run.optimizer.state.clear()
            torch_defaults()
            set_tf32(run.cfg.trainer.tf32, run.device)
        else:
            run = make_run(overrides, [*extra, *more])  # built outside the timed part
            run.raw_model.load_state_dict(initial)
            if label.removeprefix("trainrun +") in TORCH_MODES:
                run.model = torch.compile(run.model, mode=TORCH_MODES[label.removeprefix("trainrun +")])
            if compiled(run):
                warm_up_compiled(run, initial)
                compiled_runs[label] = run
        sync()
        started = CLOCK[0]()
        fit(run, TrainState(), QuietReporter())
        sync()
        result.times.setdefault(label, []).append(CLOCK[0]() - started)
        return run.raw_model.state_dict()

    def plain_variant(label: str, loop: Callable[..., Any], more: list[str] = (),
                      **kwargs: Any) -> dict[str, torch.Tensor]:
        run = make_run(overrides, [*extra, *more])
        run.raw_model.load_state_dict(initial)
        sync()
        started = CLOCK[0]()
        seconds = loop(run, run.raw_model, run.optimizer, **kwargs)
        sync()
        if not isinstance(seconds, float):  # the loop did not time itself
            seconds = CLOCK[0]() - started
        result.times.setdefault(label, []).append(seconds)
        return run.raw_model.state_dict()

    for _ in range(rounds + 1):  # the first round warms up (imports, allocator) and is dropped
        result.weights["trainrun"] = trainrun_variant()
        result.weights["hand"] = plain_variant("hand", hand_loop)
        result.weights["tutorial"] = plain_variant("tutorial", tutorial_loop)
        if lightning:
            result.weights["lightning"] = plain_variant("lightning", lightning_loop, lean=False)
            result.weights["lightning lean"] = plain_variant("lightning lean", lightning_loop, lean=True)
        for lever in levers:
            if lever in refused:
                continue
            try:
                if lever.startswith("hand+"):
                    label = lever
                    result.weights[label] = plain_variant(label, hand_loop, lever_overrides(lever[5:]))
                else:
                    label = f"trainrun +{lever}"
                    result.weights[label] = trainrun_variant(label, lever_overrides(lever))
            except TrainrunError as err:  # e.g. reduce-overhead on a CPU: said once, left out
                refused.add(lever)
                print(f"  {lever}: refused here: {err.message}", flush=True)
    result.times = {k: v[1:] for k, v in result.times.items()}
    return result


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts (buffers such as batch norm's
    step count included)."""
    return max(((a[k].float() - b[k].float()).abs().max().item() for k in a), default=0.0)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    if all(torch.equal(a[k], b[k]) for k in a):
        return "identical"
    return f"max diff {max_difference(a, b):.1e}"


def main() -> None:
    if "--startup" in sys.argv[1:]:  # the fixed costs: whole commands, scripts/bench_startup.py
        script = str(Path(__file__).resolve().parent / "bench_startup.py")
        os.execv(sys.executable, [sys.executable, script, *(a for a in sys.argv[1:] if a != "--startup")])
    if "--strategies" in sys.argv[1:]:  # DDP and FSDP on 2 processes: scripts/bench_distributed.py
        script = str(Path(__file__).resolve().parent / "bench_distributed.py")
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  "--nproc-per-node=2", script, *sys.argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS),
                        help="default: tiny digits wide, and resnet with --device cuda")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every variant runs")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time (time.process_time), which other jobs on a shared "
                        "machine disturb far less than wall time; with --threads 1 and --device cpu only")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="how rounds combine; min suits a machine other jobs disturb")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    parser.add_argument("--levers", nargs="*", default=[], metavar="LEVER",
                        help="trainrun variants with levers: fused, foreach, compile, compile+fused, "
                        "...; hand+fused for the hand loop with a fused optimizer")
    parser.add_argument("--no-lightning", action="store_true", help="leave Lightning out")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra trainrun overrides for every variant, "
                        "e.g. optim.fused=true (applied to all variants' optimizers)")
    args = parser.parse_args()
    for lever in args.levers:
        parts = lever[5:] if lever.startswith("hand+") else lever
        if not all(part in LEVERS for part in parts.split("+")):
            parser.error(f"unknown lever {lever!r}; choose from {', '.join(LEVERS)} (joined with +)")
    torch.set_num_threads(args.threads)
    # Every compiled variant compiles the same module code again (another model, another mode): past
    # torch's default of 8 recompilations dynamo would silently run the rest eagerly.
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    lightning = not args.no_lightning and lightning_available()
    DEVICE[:] = [f"device={args.device}"]
    if args.clock == "cpu":
        if args.device != "cpu" or args.threads != 1:
            parser.error("--clock cpu measures one thread's work: use it with --device cpu --threads 1")
        CLOCK[:] = [time.process_time]
    workloads = args.workloads or ["tiny", "digits", "wide"] + (["resnet"] if args.device == "cuda" else [])
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"

    rows = []
    print(f"torch {torch.__version__}, {where}, {args.stat} of {args.rounds} rounds, µs per training step"
          + (" (CPU time)" if args.clock == "cpu" else "") + ("" if lightning else "; without Lightning"))
    for name in workloads:
        result = time_workload(name, args.rounds, args.quick, args.overrides, args.levers, lightning)
        combine = statistics.median if args.stat == "median" else min
        us = {k: combine(v) / result.steps * 1e6 for k, v in result.times.items()}
        bases = [b for b in ("hand", "tutorial", "lightning") if b in us]
        print(f"\n{name} ({result.steps} steps)")
        print(f"  {'variant':<24} {'µs/step':>8} " + " ".join(f"{'÷ ' + b:>12}" for b in bases)
              + "  weights vs hand")
        for label, value in us.items():
            check = same_weights(result.weights[label], result.weights["hand"])
            row = {"workload": name, "variant": label, "device": where, "steps": result.steps,
                   "us_per_step": value, **{f"over_{b}": value / us[b] for b in bases},
                   "weights_vs_hand": check, "max_diff_vs_hand": max_difference(result.weights[label],
                                                                               result.weights["hand"]),
                   "seconds": result.times[label]}
            rows.append(row)
            print(f"  {label:<24} {value:>8.0f} " + " ".join(f"{value / us[b]:>12.3f}" for b in bases)
                  + f"  {check}", flush=True)
        if args.json:  # after each workload: a run stopped by a time limit keeps what it measured
            args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
