"""``debug=profile`` (``profiler.enabled=true``): ``torch.profiler`` over a few training steps.

The profiler follows torch's schedule: ``wait`` steps skipped, ``warmup`` steps profiled and
thrown away (caches, the allocator, lazy initialization), then ``active`` steps recorded. When
they are done, the trace goes to ``<run>/profiler/rank<r>.<time>.pt.trace.json`` (written by
``torch.profiler.tensorboard_trace_handler``: Chrome's ``chrome://tracing`` and Perfetto open
the file, TensorBoard's PyTorch Profiler plugin the folder), and the operators that took the
most time are printed and kept in ``<run>/profiler/top_operators.txt``. The rest of the run
trains unprofiled. CUDA kernels are recorded too when the run is on a GPU. A run that ends
inside the window writes what was recorded: its last step then also holds what followed the
last batch (validation, the checkpoint).

The loop is not touched: :func:`profiled` wraps the reporter that ``fit`` already calls, and the
progress object it hands out per epoch marks each batch's end with ``prof.step()``. A step is
therefore one batch (its forward, backward and, on the last batch of an accumulation window,
the optimizer step that follows it in the trace).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.profiler import profile

from trainrun.build.setup import Setup
from trainrun.engine.state import Progress, Reporter, TrainState
from trainrun.files import PROFILER, atomic_write_text

TOP_OPERATORS = "top_operators.txt"


class _Steps:
    """The progress object of one epoch: the reporter's own, then ``prof.step()``."""

    def __init__(self, inner: Progress, profiled: Profiled) -> None:
        self.inner, self.profiled = inner, profiled

    def step(self, loss: torch.Tensor) -> None:
        self.inner.step(loss)
        self.profiled.steps += 1
        self.profiled.prof.step()


class Profiled:
    """A reporter that forwards everything to ``reporter`` and counts steps for the profiler."""

    def __init__(self, reporter: Reporter, prof: profile) -> None:
        self.reporter, self.prof, self.steps = reporter, prof, 0

    @contextlib.contextmanager
    def progress(self, epoch: int, steps: int) -> Iterator[_Steps]:
        with self.reporter.progress(epoch, steps) as inner:
            yield _Steps(inner, self)

    def epoch_end(self, row: dict[str, Any], state: TrainState) -> None:
        self.reporter.epoch_end(row, state)


@contextlib.contextmanager
def profiling(settings: DictConfig, setup: Setup, run_dir: Path, *, rank: int,
              say: Callable[[str], None]) -> Iterator[Callable[[Reporter], Reporter]]:
    """Yields a function that wraps ``fit``'s reporter: the identity unless
    ``settings.enabled`` (the config's ``profiler`` section)."""
    if not settings.enabled:
        yield lambda reporter: reporter
        return
    from torch.profiler import ProfilerActivity, schedule, tensorboard_trace_handler

    folder = run_dir / PROFILER
    cuda = setup.device.type == "cuda"
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    write_trace = tensorboard_trace_handler(str(folder), worker_name=f"rank{rank}")
    written: list[str] = []

    def trace_ready(prof: profile) -> None:
        write_trace(prof)
        trace = max(folder.glob(f"rank{rank}.*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
        table = prof.key_averages().table(sort_by=sort_by, row_limit=int(settings.row_limit))
        atomic_write_text(folder / (TOP_OPERATORS if rank == 0 else f"top_operators.rank{rank}.txt"),
                          table + "\n")
        written.append(str(trace))
        say(f"profiler: {settings.active} steps after {settings.wait} skipped and {settings.warmup} of "
            f"warm-up; the top operators by {sort_by}:\n{table}\ntrace: {trace} (open it in "
            f"chrome://tracing or ui.perfetto.dev; TensorBoard: pip install torch-tb-profiler, then "
            f"tensorboard --logdir {folder})")

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    prof = profile(activities=activities, on_trace_ready=trace_ready,
                   schedule=schedule(wait=int(settings.wait), warmup=int(settings.warmup),
                                     active=int(settings.active), repeat=1),
                   record_shapes=bool(settings.record_shapes), profile_memory=bool(settings.profile_memory),
                   with_stack=bool(settings.with_stack))
    watched: list[Profiled] = []

    def wrap(reporter: Reporter) -> Reporter:
        watched.append(Profiled(reporter, prof))
        return watched[-1]

    with prof:  # leaving it mid-window writes what was recorded so far
        yield wrap
    if not written:
        steps = watched[0].steps if watched else 0
        say(f"profiler: no trace: the run took {steps} training steps, and the profiler skips "
            f"{settings.wait} and warms up for {settings.warmup} before it records (lower "
            "profiler.wait / profiler.warmup, or train longer)")
