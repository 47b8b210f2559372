"""Test data and helpers that both tiers use (tests/unit and tests/e2e): toy files, the recipes'
stated qualities, image checks for the plots, metric sets, a pickle that runs code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import torch

from trainrun.build.metrics import MetricSet
from trainrun.config import config_dir

RECIPES = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


CLAIM = re.compile(r"Reaches (\w+) (>=|<=) ([\d.]+)")


def claim(name: str) -> tuple[str, str, float]:
    found = CLAIM.search((config_dir() / "experiment" / f"{name}.yaml").read_text())
    assert found, f"experiment/{name}.yaml states no quality ('Reaches <metric> >= <value>')"
    return found.group(1), found.group(2), float(found.group(3))


GOOD = "a,b,y\n1.5,2,0\n3,4.25,1\n5,6,2\n"


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    (folder / name).write_bytes(text.encode(encoding))
    return str(folder / name)


# Each model refuses any input but the one it asked for: a wrong shape fails the run loudly.
MODELS = textwrap.dedent("""
    from torch import nn

    class LinearFirst(nn.Module):
        # The classic tutorial network: no Flatten, nn.Linear(in_features, ...) first.
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc1 = nn.Linear(in_features, 32)
            self.fc2 = nn.Linear(32, out_features)
            self.in_features = in_features

        def forward(self, x):
            if x.dim() != 2 or x.shape[1] != self.in_features:
                raise ValueError(f"LinearFirst wants [N, {self.in_features}], got {list(x.shape)}")
            return self.fc2(self.fc1(x).relu())

    class Images(nn.Module):
        # Asks for in_shape (and in_features too): gets the samples as images.
        def __init__(self, in_shape, in_features, out_features):
            super().__init__()
            self.in_shape = tuple(in_shape)
            self.conv = nn.Conv2d(in_shape[0], 4, 3, padding=1)
            self.fc = nn.Linear(4 * in_features // in_shape[0], out_features)

        def forward(self, x):
            if tuple(x.shape[1:]) != self.in_shape:
                raise ValueError(f"Images wants [N, *{list(self.in_shape)}], got {list(x.shape)}")
            return self.fc(self.conv(x).relu().flatten(1))
""")


DATASET = textwrap.dedent("""
    import torch
    from sklearn.datasets import load_digits

    class DigitImages(torch.utils.data.Dataset):
        # A user Dataset (the DataLoader path) whose samples are [1, 8, 8] images.
        def __init__(self):
            digits = load_digits()
            self.x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
            self.y = torch.tensor(digits.target)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], self.y[i]
""")


def image(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def drawn(path: Path) -> float:
    """Share of the picture that is not background white: 0 for an empty canvas."""
    pixels = image(path)[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


def sweep_rows(tmp_path: Path, lrs: list[float], statuses: list[str] | None = None) -> list[dict]:
    rows = []
    for job, lr in enumerate(lrs):
        run_dir = tmp_path / str(job)
        run_dir.mkdir()
        hist = [{"epoch": e, "val_loss": lr * 10 + 1 / e} for e in range(1, 5)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        status = (statuses or ["completed"] * len(lrs))[job]
        rows.append({"job": job, "overrides": [f"optim.lr={lr}", "trainer.epochs=4"], "run_dir": str(run_dir),
                     "status": status, "objective": None if status == "failed" else lr * 10 + 0.25,
                     "objective_name": "val_loss"})
    return rows


class Evil:
    """Unpickling this runs code (creates the file named in ``SENTINEL``)."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SENTINEL']}",))


def metric_set(names, **kw) -> MetricSet:
    defaults = dict(task="binary", num_classes=2, output="scores", targets="float",
                    y_scale=1.0, device=torch.device("cpu"))
    return MetricSet(names, **{**defaults, **kw})


def fed(ms: MetricSet, out: torch.Tensor, y: torch.Tensor, batch: int = 64) -> dict[str, float]:
    for i in range(0, len(out), batch):  # several updates, as evaluate() does per batch
        ms.update(out[i : i + batch], y[i : i + batch])
    return ms.compute()


N = 301


class Quiet:
    """``fit``'s reporter printing nothing (the loop's ``Progress`` and ``Reporter`` protocols)."""

    def progress(self, epoch, steps):
        return contextlib.nullcontext(self)

    def step(self, loss):
        pass

    def epoch_end(self, row, state):
        pass
