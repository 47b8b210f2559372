"""Unit tests of data preparation and batching."""

from __future__ import annotations

import numpy as np
import pytest

from trainrun.data.prepare import prepare_arrays
from trainrun.errors import TrainrunError


def prepare(x, y, **kwargs):
    options = dict(task="auto", val_fraction=0.2, test_fraction=0.1, standardize=True, seed=0,
                   image_shape=None)
    options.update(kwargs)
    return prepare_arrays(x, y, **options)


def test_split_sizes_and_standardization_fit_on_train_only():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, size=(1000, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=1000)
    splits, info = prepare(x, y)
    assert info.sizes == {"train": 700, "val": 200, "test": 100}
    train_x = splits.train[0]
    assert np.allclose(train_x.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(train_x.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(splits.val[0].mean(axis=0), 0, atol=1e-5)  # val stats not used
    assert info.task == "multiclass" and info.num_classes == 3
    # every sample lands in exactly one split
    assert len(train_x) + len(splits.val[0]) + len(splits.test[0]) == 1000


def test_text_labels_are_encoded_and_kept():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array(["cat", "dog", "cat", "bird", "dog", "bird"])
    splits, info = prepare(x, y, val_fraction=0.0, test_fraction=0.0)
    assert info.classes == ["bird", "cat", "dog"]
    assert splits.train[1].dtype == np.int64
    assert sorted(splits.train[1].tolist()) == [0, 0, 1, 1, 2, 2]


def test_regression_targets_are_standardized_and_scale_kept():
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    y = (x[:, 0] * 40 + 100).astype(np.float32)
    splits, info = prepare(x, y, val_fraction=0.0, test_fraction=0.0)
    assert info.task == "regression"
    assert abs(splits.train[1].mean()) < 1e-5
    assert info.y_scale == pytest.approx(float(y.std()), rel=1e-4)


def test_image_shape_reshapes_and_is_checked():
    x = np.zeros((10, 64), dtype=np.float32)
    y = np.arange(10) % 2
    splits, info = prepare(x, y, image_shape=[1, 8, 8], val_fraction=0, test_fraction=0)
    assert splits.train[0].shape == (10, 1, 8, 8) and info.in_shape == (1, 8, 8)
    with pytest.raises(TrainrunError, match="image_shape"):
        prepare(x, y, image_shape=[1, 7, 7])
