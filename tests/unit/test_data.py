"""Unit tests of data preparation and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainrun.data.batches import TensorBatches
from trainrun.data.order import global_bounds
from trainrun.data.prepare import infer_task, prepare_arrays
from trainrun.errors import TrainrunError


def prepare(x, y, **kwargs):
    options = dict(task="auto", val_fraction=0.2, test_fraction=0.1, standardize=True, seed=0,
                   image_shape=None)
    options.update(kwargs)
    return prepare_arrays(x, y, **options)


@pytest.mark.parametrize(
    ("y", "task"),
    [(np.array([0.5, 1.2, 3.0]), "regression"), (np.array([0, 1, 1, 0]), "binary"),
     (np.array([0, 1, 2, 2]), "multiclass"), (np.array([1.0, 0.0, 1.0]), "binary")],
)
def test_infer_task(y, task):
    assert infer_task(y) == task


def test_no_training_samples_left_is_an_error():
    with pytest.raises(TrainrunError, match="no training samples"):
        prepare(np.zeros((10, 2)), np.arange(10) % 2, val_fraction=0.5, test_fraction=0.5)


def test_batches_cover_every_sample_once_per_epoch_in_a_new_order():
    x = torch.arange(103, dtype=torch.float32).unsqueeze(1)
    batches = TensorBatches(x, x.squeeze(1).long(), 10, shuffle=True, seed=3)
    assert len(batches) == 11 and batches.sizes.tolist() == [10.0] * 10 + [3.0]
    seen = [torch.cat([b[1] for b in batches.epoch(e)]) for e in range(2)]
    for order in seen:
        assert sorted(order.tolist()) == list(range(103))
    assert not torch.equal(seen[0], seen[1])
    # a resumed epoch continues with the same order
    later = torch.cat([b[1] for b in batches.epoch(1, start=4)])
    assert torch.equal(later, seen[1][40:])


def test_ddp_shards_split_each_global_batch():
    x = torch.arange(40, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(40)
    one = TensorBatches(x, y, 8, shuffle=True, seed=0)
    ranks = [TensorBatches(x, y, 4, shuffle=True, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 5
    for step, (_, global_y) in enumerate(one.epoch(0)):
        parts = [list(r.epoch(0))[step][1] for r in ranks]
        assert torch.equal(torch.cat(parts), global_y)


def test_evaluation_batches_score_every_sample_on_any_number_of_processes():
    """Adversarial pass: a last global validation batch smaller than the number of processes
    was dropped as a training batch is (121 validation samples scored as 120 on 2 processes: a
    val_loss, best.pt and sweep objective that one process and `evaluate` do not give, exit 0).
    Evaluation keeps it (joined to the batch before), with the same number of non-empty
    batches on every rank; training still drops it."""
    for n in range(1, 60):
        for batch in range(1, 6):
            for world in range(1, 5):
                ranks = [global_bounds(n, batch, r, world, whole=True) for r in range(world)]
                assert len({len(b) for b in ranks}) == 1, (n, batch, world)
                covered = sorted(i for bounds in ranks for lo, hi in bounds for i in range(lo, hi))
                if n >= world:
                    assert covered == list(range(n)), (n, batch, world)
                    assert all(hi > lo for bounds in ranks for lo, hi in bounds), (n, batch, world)
                trained = [global_bounds(n, batch, r, world) for r in range(world)]
                kept = sum(hi - lo for bounds in trained for lo, hi in bounds)
                assert kept == n - (n % (batch * world) if n % (batch * world) < world else 0)


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer", "diabetes"])
def test_bundled_sets_match_scikit_learn(name):
    from sklearn import datasets

    from trainrun.data.sources import load_sklearn

    x, y = load_sklearn(name)
    reference = getattr(datasets, f"load_{name}")(**({"scaled": False} if name == "diabetes" else {}))
    if name == "digits":  # served as 1x8x8 images, so model=cnn needs no extra setting
        assert x.shape == (1797, 1, 8, 8)
        x = x.reshape(len(x), -1)
    assert x.shape == reference.data.shape
    assert np.allclose(x, reference.data, rtol=1e-6)
    assert np.array_equal(y, reference.target)
