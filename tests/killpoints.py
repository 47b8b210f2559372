"""Run the real ``train`` command in this process and hit it at an exact moment.

    python tests/killpoints.py <event>:<n>[,<event>:<n>...] <train overrides...>

Events (counted from 1 within this process):

* ``saved:N``   SIGKILL right after the N-th checkpoint file is in place (``last.pt``/``best.pt``)
* ``rename:N``  SIGKILL between writing+fsyncing the N-th checkpoint's temporary file and the
                rename over the checkpoint (the atomic write's window)
* ``write:N``   SIGKILL half-way through writing the N-th checkpoint's bytes
* ``step:N``    SIGKILL right after the N-th optimizer step (and its every_n_steps checkpoint)
* ``SIGxxx@N``  send signal SIGxxx to this process in the middle of the N-th batch (after its
                backward, before its optimizer step), e.g. ``SIGTERM@7``; ``SIGINT@7,SIGINT@7``
                sends a second Ctrl-C right after the first

Used by the kill-and-resume and signal tests: the kills are real (SIGKILL, nothing runs after
it) and the signals go through trainrun's real handlers; only the *timing* is made exact.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve()
TIMING = ("seconds", "samples_per_s")  # the only metrics.csv columns allowed to differ


# --------------------------------------------------------------------------- test helpers


def launch(points: str, *overrides: str, run_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``train <overrides> hydra.run.dir=<run_dir>`` in a subprocess, hit at ``points``."""
    import forkserver
    from conftest import env_for_tests

    python = forkserver.shim(forkserver.PYTHON) if forkserver.enabled() else sys.executable
    args = [str(python), str(HERE), points, "trainer.progress=epoch", *overrides,
            f"hydra.run.dir={run_dir}"]
    return subprocess.run(args, cwd=run_dir.parent, env=env_for_tests(), capture_output=True,
                          text=True, timeout=timeout)


def weights(run_dir: Path, name: str = "last.pt") -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv as text (bit-exact floats), without the timing columns."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


# --------------------------------------------------------------------------- the hooked train


def main() -> None:
    from trainrun import files
    from trainrun.cli import main as cli
    from trainrun.engine import checkpoint, stop
    from trainrun.report import console

    plan: dict[str, list[int]] = {}
    for item in sys.argv[1].split(","):
        sep = "@" if "@" in item else ":"
        event, n = item.split(sep)
        plan.setdefault(event, []).append(int(n))
    seen: Counter[str] = Counter()

    def due(event: str) -> int:
        """How many planned hits of ``event`` fall on this occurrence."""
        seen[event] += 1
        return plan.get(event, []).count(seen[event])

    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    # Checkpoint files are written on the writer's background thread, one at a time, through
    # checkpoint.write_file: the N-th call is the N-th checkpoint file.
    original_write_file = checkpoint.write_file

    def write_file(path, data):
        if due("write"):  # half the bytes reach the temporary file, then the kill
            def half(f):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()

            return files.atomic_write(path, half)
        out = original_write_file(path, data)
        if due("saved"):
            die()
        return out

    checkpoint.write_file = write_file

    original_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".pt") and due("rename"):
            die()
        return original_replace(src, dst, *args, **kwargs)

    files.os.replace = replace  # the os module itself: atomic_write looks it up on each call

    original_after_step = stop.Stop.after_step

    def after_step(self, state, epoch):
        stopped = original_after_step(self, state, epoch)
        if due("step"):
            self.writer.wait()  # "right after the step and its checkpoint": the write is done
            die()
        return stopped

    stop.Stop.after_step = after_step

    signals = [e for e in plan if e.startswith("SIG")]
    if signals:
        # Every batch calls progress.step(loss) between its backward and the optimizer step;
        # trainer.progress=epoch gives the quiet progress object, patched here.
        original_step = console._Quiet.step

        def step(self, loss):
            seen["batch"] += 1
            for name in signals:
                for _ in range(plan[name].count(seen["batch"])):
                    os.kill(os.getpid(), getattr(signal, name))
            return original_step(self, loss)

        console._Quiet.step = step

    sys.argv = ["train", *sys.argv[2:]]
    cli.train()


if __name__ == "__main__":
    main()
