"""The tutorial loop, written once: the training epoch every PyTorch tutorial shows, against
which trainrun is held. ``tests/e2e/test_fidelity.py`` asserts that trainrun's loop ends with
bit-identical weights; ``scripts/benchmark.py`` times it as the "tutorial" variant. Both feed it
batches in trainrun's order (slices in the test, a DataLoader in the benchmark).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def tutorial_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: torch.nn.Module,
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One epoch of the canonical loop; returns the sample-weighted mean loss (``loss.item()``
    every step, as tutorials do)."""
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        optimizer.zero_grad()
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / count
