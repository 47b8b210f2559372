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
from sklearn import metrics as sk

from trainrun.build.metrics import MetricSet, extra_names
from trainrun.errors import TrainrunError

N = 301


def metric_set(names, **kw) -> MetricSet:
    defaults = dict(task="binary", num_classes=2, output="scores", targets="float",
                    y_scale=1.0, device=torch.device("cpu"))
    return MetricSet(names, **{**defaults, **kw})


def fed(ms: MetricSet, out: torch.Tensor, y: torch.Tensor, batch: int = 64) -> dict[str, float]:
    for i in range(0, len(out), batch):  # several updates, as evaluate() does per batch
        ms.update(out[i : i + batch], y[i : i + batch])
    return ms.compute()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("form", ["sigmoid", "logits", "two_class_softmax", "two_class_log_softmax"])
def test_binary_metrics_match_sklearn(gen, form):
    y = torch.randint(0, 2, (N,), generator=gen)
    score = torch.randn(N, generator=gen) + 1.2 * y  # informative but imperfect
    prob = score.sigmoid()
    if form == "sigmoid":  # loss=bce: the model ends in a Sigmoid, one output, float targets
        out, target, kw = prob[:, None], y.float()[:, None], {"output": "probabilities"}
    elif form == "logits":  # loss=bce_logits
        out, target, kw = score[:, None], y.float()[:, None], {}
    else:  # loss=cross_entropy / nll on a binary task: two outputs, class indices
        logits = torch.stack([torch.zeros(N), score], dim=1)
        head = "log_softmax" if form.endswith("log_softmax") else "other"
        out = logits.log_softmax(1) if head == "log_softmax" else logits
        target, kw = y, {"targets": "index", "output": "log_probabilities" if head == "log_softmax" else "scores"}
    got = fed(metric_set(["f1", "auroc", "precision", "recall"], **kw), out, target)
    pred = (prob > 0.5).numpy()
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred), abs=1e-6)
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred), abs=1e-6)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y, prob), abs=1e-5)


@pytest.mark.parametrize("head", ["other", "log_softmax"])
def test_multiclass_metrics_match_sklearn(gen, head):
    classes = 5
    y = torch.randint(0, classes, (N,), generator=gen)
    logits = torch.randn(N, classes, generator=gen) + 1.5 * torch.nn.functional.one_hot(y, classes)
    out = logits.log_softmax(1) if head == "log_softmax" else logits
    got = fed(metric_set(["f1", "auroc", "top2", "top3"], task="multiclass", num_classes=classes,
                         targets="index", output="log_probabilities" if head == "log_softmax" else "scores"), out, y)
    prob = logits.softmax(1).numpy()
    assert got["f1"] == pytest.approx(sk.f1_score(y, prob.argmax(1), average="macro"), abs=1e-6)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y, prob, multi_class="ovr", average="macro"), abs=1e-5)
    for k in (2, 3):
        assert got[f"top{k}"] == pytest.approx(sk.top_k_accuracy_score(y, prob, k=k), abs=1e-6)


@pytest.mark.parametrize("width", [1, 3])
def test_regression_metrics_match_sklearn_in_target_units(gen, width):
    scale = 7.5  # data.standardize divides the targets by their spread; metrics undo it
    y = torch.randn(N, width, generator=gen)
    out = y + 0.3 * torch.randn(N, width, generator=gen)
    got = fed(metric_set(["mae", "mse", "r2"], task="regression", num_classes=None, y_scale=scale), out, y)
    yt, pt = (y * scale).numpy(), (out * scale).numpy()
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(yt.ravel(), pt.ravel()), rel=1e-5)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(yt.ravel(), pt.ravel()), rel=1e-5)
    expected_r2 = sk.r2_score(yt.ravel(), pt.ravel()) if width == 1 else sk.r2_score(yt, pt)
    assert got["r2"] == pytest.approx(expected_r2, rel=1e-5)


def test_compute_resets_for_the_next_epoch(gen):
    y = torch.randint(0, 2, (N,), generator=gen).float()[:, None]
    ms = metric_set(["f1"], output="probabilities")
    first = fed(ms, y.clone(), y)  # perfect predictions
    second = fed(ms, 1 - y, y)  # all wrong
    assert first["f1"] == 1.0 and second["f1"] == 0.0


@pytest.mark.parametrize("names, task, classes, message", [
    (["r2"], "multiclass", 10, "does not apply to this run's task (multiclass)"),
    (["f1"], "regression", None, "does not apply to this run's task (regression)"),
    (["top3"], "binary", 2, "does not apply to this run's task (binary)"),
    (["top10"], "multiclass", 10, "needs k between 1 and 9"),
    (["bogus"], "binary", 2, "is not a known metric"),
])
def test_names_are_checked_against_the_task(names, task, classes, message):
    with pytest.raises(TrainrunError) as err:
        extra_names(names, task, classes)
    assert message in str(err.value) and err.value.key == "metrics"


def test_built_in_names_need_no_torchmetrics():
    assert extra_names(["accuracy", "acc", "f1", "F1"], "binary", 2) == ["f1"]
    assert extra_names(["rmse", "r2"], "regression", None) == ["r2"]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
