"""A user ``torch.utils.data.Dataset`` is never read whole before training: its task and class
count come from what it declares or from a few samples, the preflight batch confirms them, and
a batch whose labels do not fit stops the run with one paragraph."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import Quiet

DATASETS = '''
import torch


class Counting(torch.utils.data.Dataset):
    """2,000 samples of 4 features, labels 0, 1, 2; counts every __getitem__."""
    calls = 0

    def __len__(self):
        return 2000

    def __getitem__(self, i):
        Counting.calls += 1
        return torch.full((4,), float(i % 7)), i % 3


class Declared(Counting):
    """Declares five classes, though only 0, 1 and 2 occur."""
    num_classes = 5


class Named(Counting):
    classes = ["ant", "bee", "cat", "dog"]


class Held(Counting):
    """Holds its labels apart from its samples, as torchvision's data sets do."""
    targets = [i % 3 for i in range(2000)]


class Regression(Counting):
    def __getitem__(self, i):
        Counting.calls += 1
        return torch.full((4,), float(i % 7)), float(i % 7) / 3


class RareThird(Counting):
    """Labels 0 and 1, and a 2 only at position 3, which the few samples read do not include."""
    def __len__(self):
        return 200

    def __getitem__(self, i):
        Counting.calls += 1
        return torch.full((4,), float(i % 7)), 2 if i == 3 else i % 2
'''


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch):
    (tmp_path / "userdata.py").write_text(DATASETS)
    monkeypatch.chdir(tmp_path)
    return tmp_path  # conftest drops the module and the sys.path entry after the test


def built(compose, name: str, *overrides: str):
    """build + preflight, as ``train`` does before the first step; the Dataset's call count then."""
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    setup = build(compose(f"data._target_=userdata.{name}", "data.batch_size=16", "checkpoint.enabled=false",
                          *overrides))
    said: list[str] = []
    preflight.check(setup, say=said.append)
    return setup, sys.modules["userdata"].Counting.calls, said


@pytest.mark.parametrize("name, task, classes, guessed", [
    ("Counting", "multiclass", 3, True),
    ("Declared", "multiclass", 5, False),
    ("Named", "multiclass", 4, False),
    ("Held", "multiclass", 3, False),
    ("Regression", "regression", None, False),
])
def test_task_without_reading_the_dataset(compose, datasets: Path, name, task, classes, guessed) -> None:
    setup, calls, said = built(compose, name, *(["loss=mse"] if task == "regression" else []))
    assert (setup.info.task, setup.info.num_classes) == (task, classes)
    assert setup.loss.out_features == (classes or 1)
    # sample 0, at most 32 spread over the set, one batch of 16 for preflight: not 2,000
    assert calls <= 1 + 32 + 16, calls
    assert ("guessed from the labels of 32 of 2000 samples" in " ".join(said)) == guessed, said
    if name == "Held":
        assert calls <= 1 + 16  # the labels it holds are read, not its samples


def test_a_guess_that_a_batch_contradicts_stops_the_run(compose, datasets: Path) -> None:
    from trainrun.engine.loop import TrainState, fit
    from trainrun.errors import TRAINING_ERROR, TrainrunError

    setup, _, said = built(compose, "RareThird", "data.val_fraction=0", "data.shuffle=false",
                          "objective=train_loss", "checkpoint.monitor=train_loss")
    assert setup.info.task == "binary" and "guessed" in " ".join(said)

    with pytest.raises(TrainrunError) as caught:
        fit(setup, TrainState(), Quiet())
    err = caught.value
    assert err.exit_code == TRAINING_ERROR and err.key == "data._target_"
    assert "holds the label 2, outside 0..1" in str(err) and "num_classes" in err.fix
