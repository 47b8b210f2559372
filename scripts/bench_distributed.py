#!/usr/bin/env python
"""Per-step time of trainrun's DDP and FSDP against a hand-written torchrun script, and what
sharded asynchronous checkpoints (DCP) cost; run under torchrun (``benchmark.py --strategies``
starts it so):

    torchrun --standalone --nproc-per-node=2 scripts/bench_distributed.py --strategies ddp fsdp
    python scripts/benchmark.py --strategies ddp fsdp --workloads wide --rounds 3

In every process: ``trainrun`` is ``fit`` on the run ``build`` makes for two processes (the
signal agreement every 10 steps included, as in ``train``); ``hand`` is the loop a torchrun user
writes with the same library calls: the same initial weights, the same slices of the same
permuted data, ``DistributedDataParallel`` or ``fully_shard`` per layer then the root, the same
optimizer built after wrapping, ``zero_grad / forward / loss / backward / step``, and the epoch's
loss all-reduced once; ``trainrun +checkpoints`` writes a sharded checkpoint every epoch
(``dcp.async_save``: the training thread pays the copy to CPU memory). Variants run interleaved,
round after round, the first round dropped; rank 0 prints the table (the median or min per-step
time and the ratio to ``hand``) and the weights' agreement with ``hand``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from benchmark import COMMON, WORKLOADS, QuietReporter  # this folder's
from hydra import compose, initialize_config_dir
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from trainrun.build.setup import Setup, build
from trainrun.config import config_dir
from trainrun.config.schemas import register
from trainrun.data.batches import TensorBatches
from trainrun.engine.loop import TrainState, fit
from trainrun.engine.signals import AgreedSignals, Signals
from trainrun.engine.stop import Stop

WORLD = 2


def make_run(overrides: list[str], rank: int, world: int) -> Setup:
    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("train", overrides=overrides)
    return build(cfg, rank=rank, world_size=world)


def whole(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def trainrun_variant(overrides: list[str], rank: int, folder: Path | None
                     ) -> tuple[float, dict[str, torch.Tensor], float, float]:
    """Seconds, final weights, the seconds the training thread spent in checkpoints, and the
    process's CPU seconds (every thread: DCP's writing thread included)."""
    run = make_run(overrides, rank, WORLD)  # built outside the timed part
    stop = Stop.for_setup(run, folder, AgreedSignals(Signals(), WORLD, run.device))
    dist.barrier()
    started, cpu = time.perf_counter(), time.process_time()
    fit(run, TrainState(), QuietReporter(), stop)
    stop.writer.close()  # the last checkpoint is on disk, as train waits for it
    dist.barrier()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, whole(run.raw_model), stop.writer.seconds, cpu


def hand_variant(overrides: list[str], strategy: str, rank: int) -> tuple[float, dict[str, torch.Tensor]]:
    run = make_run(overrides, rank, 1)  # trainrun's initial weights and data, unwrapped: the same start
    model, cfg = run.raw_model, run.cfg
    if strategy == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))][::-1]:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.Adam(run.raw_model.parameters(), lr=cfg.optim.lr)  # after wrapping, as FSDP needs
    full = run.train_batches
    batches = TensorBatches(full.x, full.y, cfg.data.batch_size, shuffle=True, seed=cfg.trainer.seed,
                            rank=rank, world_size=WORLD)
    dist.barrier()
    started = time.perf_counter()
    for epoch in range(cfg.trainer.epochs):
        model.train()
        total = torch.zeros(())
        for x, y in batches.epoch(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = run.criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(x)
        dist.all_reduce(total)  # the epoch's loss over all ranks, read once
        total.item()
    dist.barrier()
    return time.perf_counter() - started, whole(run.raw_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    parser.add_argument("--workloads", nargs="+", default=["wide"], choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stat", choices=("median", "min"), default="median")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    combine = statistics.median if args.stat == "median" else min
    rows: list[dict[str, Any]] = []
    if rank == 0:
        print(f"torch {torch.__version__}, {WORLD} processes x {args.threads} thread(s), gloo, {args.stat} of "
              f"{args.rounds} rounds, µs per training step")
    for name in args.workloads:
        spec = WORKLOADS[name]
        base = [o for o in spec["overrides"] if not o.startswith("data.batch_size=")]
        global_batch = int(next(o for o in spec["overrides"] if o.startswith("data.batch_size=")).split("=")[1])
        epochs = [f"trainer.epochs={spec['quick_epochs']}"] if args.quick else []
        for strategy in args.strategies:
            overrides = [*base, *COMMON, *epochs, f"data.batch_size={global_batch // WORLD}",
                         f"trainer.strategy={strategy}", f"trainer.threads={args.threads}"]
            saving = [*overrides, "checkpoint.enabled=true"]
            times: dict[str, list[float]] = {}
            in_saves: list[float] = []  # the training thread's seconds in checkpoints, per round
            cpu: dict[str, list[float]] = {}  # the process's CPU seconds, per round
            weights: dict[str, dict[str, torch.Tensor]] = {}
            folder = Path(tempfile.mkdtemp(prefix="bench-dcp-")) if rank == 0 else None
            shared = [str(folder)]
            dist.broadcast_object_list(shared, src=0)
            for _ in range(args.rounds + 1):
                for label in ("trainrun", "hand", "trainrun +checkpoints"):
                    if label == "hand":
                        seconds, weights[label] = hand_variant(overrides, strategy, rank)
                    else:
                        checkpoints = Path(shared[0]) / "checkpoints" if label != "trainrun" else None
                        seconds, weights[label], spent, used = trainrun_variant(
                            saving if checkpoints else overrides, rank, checkpoints)
                        cpu.setdefault(label, []).append(used)
                        if checkpoints:
                            in_saves.append(spent / seconds)
                    times.setdefault(label, []).append(seconds)
            run = make_run(overrides, rank, WORLD)
            steps = len(run.train_batches) * int(run.cfg.trainer.epochs)
            if rank != 0:
                continue
            us = {k: combine(v[1:]) / steps * 1e6 for k, v in times.items()}
            print(f"\n{name}, {strategy} ({steps} steps, global batch {global_batch})")
            print(f"  {'variant':<24} {'µs/step':>8} {'÷ hand':>8}  weights vs hand")
            for label, value in us.items():
                a, b = weights[label], weights["hand"]
                same = "identical" if all(torch.equal(a[k], b[k]) for k in a) else \
                    f"max diff {max((a[k] - b[k]).abs().max().item() for k in a):.1e}"
                rows.append({"workload": name, "strategy": strategy, "variant": label, "steps": steps,
                             "us_per_step": value, "over_hand": value / us["hand"], "weights_vs_hand": same,
                             "seconds": times[label][1:]})
                print(f"  {label:<24} {value:>8.0f} {value / us['hand']:>8.3f}  {same}", flush=True)
            cost = us["trainrun +checkpoints"] / us["trainrun"] - 1
            # each round's two runs side by side: the machine's drift between rounds cancels
            saved, plain_ = times["trainrun +checkpoints"][1:], times["trainrun"][1:]
            paired = sorted(c / t - 1 for c, t in zip(saved, plain_, strict=True))
            extra_cpu = statistics.median(cpu["trainrun +checkpoints"][1:]) / statistics.median(cpu["trainrun"][1:]) - 1
            print(f"  checkpoints every epoch (DCP async): {cost:+.1%} of trainrun's training time; "
                  f"round by round {statistics.median(paired):+.1%} (median; from {paired[0]:+.1%} to "
                  f"{paired[-1]:+.1%}); in the training thread {statistics.median(in_saves[1:]):.2%}; "
                  f"CPU of the process (all threads) {extra_cpu:+.1%}", flush=True)
            rows.append({"workload": name, "strategy": strategy, "checkpoint_cost": cost,
                         "checkpoint_cost_paired": paired, "checkpoint_training_thread_share": in_saves[1:],
                         "checkpoint_extra_cpu": extra_cpu})
    if rank == 0 and args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
