"""``lr_find=apply`` trains well on every bundled data set with every optimizer preset: the run
at the suggested rate completes, stays finite, and ends with a best validation loss no worse
than the preset's own rate gives (within a margin for the tiny validation splits of iris and
wine). In-process runs (``run_training`` on a composed config), two per pair: 30 pairs."""

from __future__ import annotations

import math

import pytest
import torch

from trainrun.commands.train import run as run_training

DATA = ["digits", "iris", "wine", "breast_cancer", "diabetes", "synthetic"]
OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]
QUIET = ("plot=false", "trainer.progress=none", "checkpoint.enabled=false", "logger=[]")


def best_val_loss(compose, tmp_path, name: str, *overrides: str) -> tuple[dict, float]:
    summary = run_training(compose(*QUIET, *overrides), tmp_path / name)
    assert summary["status"] == "completed", summary
    values = [row["val_loss"] for row in [summary["best"], summary["final"]]]
    assert all(math.isfinite(v) for v in values), summary
    return summary, summary["best"]["val_loss"]


@pytest.mark.parametrize("data", DATA)
def test_the_suggestion_trains_as_well_as_the_preset_rate(compose, tmp_path, data):
    torch.set_num_threads(1)
    loss = ["loss=mse"] if data == "diabetes" else []
    lines = []
    for optim in OPTIMIZERS:
        common = (f"data={data}", f"optim={optim}", *loss)
        _, preset = best_val_loss(compose, tmp_path, f"{optim}-preset", *common)
        summary, found = best_val_loss(compose, tmp_path, f"{optim}-found", *common, "lr_find=apply")
        lr = summary["lr_find"]["suggestion"]
        lines.append(f"{data} {optim}: suggested {lr:.3g} (minimum {summary['lr_find']['minimum_lr']:.3g}), "
                     f"best val_loss {found:.4f} vs {preset:.4f} at the preset lr")
        assert found <= 1.5 * preset + 0.05, "\n".join(lines)
    print("\n" + "\n".join(lines))
