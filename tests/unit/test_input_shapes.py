"""What a model asks for decides the shape of its input: ``in_features`` alone means flat
samples (digits as ``[N, 64]``), ``in_shape`` means the samples as the data shapes them
(``[N, 1, 8, 8]``), and preflight, explain and evaluate see the same input as training."""

from __future__ import annotations

import textwrap

import pytest
from omegaconf import OmegaConf

from trainrun.build.instantiate import takes_flat_samples

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


def test_which_models_take_flat_samples(folder, monkeypatch):
    monkeypatch.chdir(folder)
    node = lambda target: OmegaConf.create({"_target_": target})  # noqa: E731
    assert takes_flat_samples(node("shapes.LinearFirst"), "model")
    assert not takes_flat_samples(node("shapes.Images"), "model")
    assert takes_flat_samples(node("trainrun.build.models.MLP"), "model")  # flattens anyway
    assert not takes_flat_samples(node("trainrun.build.models.CNN"), "model")
    assert not takes_flat_samples(node("torch.nn.Identity"), "model")  # asks for neither
