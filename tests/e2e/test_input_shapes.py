"""What a model asks for decides the shape of its input: ``in_features`` alone means flat
samples (digits as ``[N, 64]``), ``in_shape`` means the samples as the data shapes them
(``[N, 1, 8, 8]``), and preflight, explain and evaluate see the same input as training."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_command

FAST = ("trainer.epochs=3", "print_config=false", "plot=false")

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


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "shapes.py").write_text(MODELS)
    (tmp_path / "userdata.py").write_text(DATASET)
    return tmp_path


def test_a_linear_first_model_gets_flat_digits_in_train_explain_and_evaluate(folder):
    result = run_command("train", "model._target_=shapes.LinearFirst", *FAST, cwd=folder)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_acc"] > 0.8  # three epochs of a 32-unit network
    assert "[32,64]" in result.output  # preflight's report of the batch the model got

    evaluated = run_command("evaluate", f"run={result.run_dir}", "predictions=true", "trust=[shapes]", cwd=folder)
    report = json.loads(next((result.run_dir / "eval").glob("*/eval.json")).read_text())
    # best.pt scored on val again: the val_loss its epoch logged, from the same flat input
    assert report["loss"] == pytest.approx(report["logged"]["val_loss"], rel=1e-5), evaluated.output

    explained = run_command("train", "model._target_=shapes.LinearFirst", "explain=true",
                            "print_config=false", cwd=folder, run_dir=folder / "explain")
    assert "Traceback" not in explained.output and "[32,64]" in explained.output


def test_a_model_that_asks_for_in_shape_gets_images(folder):
    result = run_command("train", "model._target_=shapes.Images", *FAST, cwd=folder)
    assert "[32,1,8,8]" in result.output
    run_command("evaluate", f"run={result.run_dir}", "trust=[shapes]", cwd=folder)


@pytest.mark.parametrize("model, shape", [("shapes.LinearFirst", "[32,64]"), ("shapes.Images", "[32,1,8,8]")])
def test_a_user_dataset_of_images_follows_the_model_too(folder, model, shape):
    result = run_command("train", "data._target_=userdata.DigitImages", f"model._target_={model}",
                         *FAST, cwd=folder)
    assert shape in result.output
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_acc"] > 0.5
