"""The benchmark's GPU-sized workload: a small ResNet on synthetic images.

The three MLP workloads of ``scripts/benchmark.py`` are launch-bound on a GPU (a step is a few
microseconds of arithmetic); this one keeps the GPU busy (batch 256 of 3x32x32 images through
convolutions with batch norm), so what a lever buys in arithmetic (bf16, TF32, channels_last)
shows. The model is passed to trainrun as a user's would be (``model._target_=bench_models.ResNet``);
the data is an NPZ file written here, learnable (each class its own smooth template plus noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    """A basic residual block: two 3x3 convolutions with batch norm, a 1x1 projection when the
    width or stride changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet(nn.Module):
    """A stem, one block per width (each after the first halves the image), global pooling and
    a linear classifier. ``in_shape`` and ``out_features`` come from trainrun."""

    def __init__(self, in_shape: Sequence[int], out_features: int, widths: Sequence[int] = (64, 128, 256)) -> None:
        super().__init__()
        c = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        blocks = []
        for i, width in enumerate(widths):
            blocks.append(Block(c, width, 1 if i == 0 else 2))
            c = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def write_images(path: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> Path:
    """``n`` images ``[3, size, size]`` (float32) with labels ``0..classes-1`` as ``X``/``y``."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, 3, 4, 4)).astype(np.float32)
    templates = coarse.repeat(size // 4, axis=2).repeat(size // 4, axis=3)  # smooth class patterns
    y = rng.integers(0, classes, size=n)
    x = templates[y] + rng.normal(scale=2.0, size=(n, 3, size, size)).astype(np.float32)
    np.savez(path, X=x.astype(np.float32), y=y.astype(np.int64))
    return path
