"""The built-in models. They output raw scores; the loss adds any head it needs (see losses.py).

Sizes come from the data: ``in_features`` (flattened sample size), ``in_shape`` (sample shape)
and ``out_features``. A user model receives whichever of these its constructor accepts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from trainrun.errors import TrainrunError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise TrainrunError(
            f"unknown activation {name!r}",
            key="model.activation",
            fix=f"use one of {', '.join(ACTIVATIONS)}",
        ) from None


class MLP(nn.Sequential):
    """Flatten, then ``Linear -> activation [-> Dropout]`` per hidden size, then ``Linear``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)


class Linear(nn.Sequential):
    """A single affine map: logistic, softmax or linear regression depending on the loss."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, out_features))


class CNN(nn.Module):
    """Conv-ReLU blocks (padding keeps the size, 2x2 pooling while the image is large enough),
    then a hidden Linear layer and the output layer. For inputs shaped ``[C, H, W]``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise TrainrunError(
                f"model=cnn needs image-shaped samples [channels, height, width], got {list(in_shape)}",
                key="data.image_shape",
                fix="set data.image_shape (e.g. data.image_shape=[1,8,8]) or use model=mlp",
            )
        c, h, w = in_shape
        blocks: list[nn.Module] = []
        for out_c in channels:
            blocks += [nn.Conv2d(c, out_c, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out_c
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, out_features))
        self.classifier = nn.Sequential(*head)
        self.in_shape = tuple(in_shape)
        self.in_features = math.prod(in_shape)

    def forward(self, x):
        return self.classifier(self.features(x))
