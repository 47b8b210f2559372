"""Extra metrics through torchmetrics: values checked against scikit-learn for every head and
target form, names checked against the task, the default path free of torchmetrics, and the
values under DDP equal to those of one process over the whole set."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import env_for_tests
from helpers import fed, metric_set


def test_the_default_path_does_not_import_torchmetrics(tmp_path):
    """No metrics asked: build() adds nothing to evaluate() and imports nothing (~1.5 s)."""
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from trainrun.config import config_dir\n"
        "from trainrun.config.schemas import register\n"
        "from trainrun.build.setup import build\n"
        "register()\n"
        "with initialize_config_dir(config_dir=str(config_dir()), version_base=None):\n"
        "    for extra in ([], ['metrics=[f1]']):\n"
        "        run = build(compose('train', overrides=['data=breast_cancer', 'loss=bce', *extra]))\n"
        "        print(run.metrics is None, 'torchmetrics' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env_for_tests(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["True False", "False True"]


def test_extra_metrics_end_to_end_and_as_objective(train):
    result = train("data=breast_cancer", "loss=bce", "trainer.epochs=3", "print_config=false",
                   "metrics=[f1,auroc,accuracy]", "objective=val_auroc")
    for row in result.metrics:
        assert 0.5 < row["val_auroc"] <= 1 and 0 < row["val_f1"] <= 1
        assert "val_accuracy" not in row  # accuracy is the built-in val_acc
    assert result.summary["objective"] == {
        "name": "val_auroc", "direction": "maximize",
        "value": max(r["val_auroc"] for r in result.metrics)}
    assert "val_f1" in result.output  # in the epoch line


def test_a_metric_that_does_not_fit_the_task_stops_before_training(train):
    result = train("metrics=[r2]", check=False)
    assert result.returncode == 2
    assert "metrics: 'r2' does not apply to this run's task (multiclass)" in result.output
    assert "accuracy, f1, auroc" in result.output
    assert not (result.run_dir / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out, y = _ddp_data()
    shards = np.array_split(np.arange(len(y)), world)[rank]  # uneven shards, as DDP val splits can be
    ms = metric_set(["f1", "auroc", "top2"], task="multiclass", num_classes=4, targets="index")
    values = fed(ms, out[shards], y[shards], batch=16)
    torch.save(values, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skips gloo's thread teardown at interpreter exit (infra-notes)


def _ddp_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (203,), generator=g)
    return torch.randn(203, 4, generator=g) + torch.nn.functional.one_hot(y, 4), y


def test_under_ddp_every_rank_gets_the_whole_sets_values(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    single = fed(metric_set(["f1", "auroc", "top2"], task="multiclass", num_classes=4, targets="index"),
                 *_ddp_data(), batch=16)
    for rank in (0, 1):
        values = torch.load(tmp_path / f"rank{rank}.pt")
        assert values == pytest.approx(single, abs=1e-6)
    out, y = _ddp_data()  # a shard alone gives other values: the equality above is the sync
    half = fed(metric_set(["f1", "auroc", "top2"], task="multiclass", num_classes=4, targets="index"),
               out[:102], y[:102], batch=16)
    assert half != pytest.approx(single, abs=1e-6)
