"""The losses of an epoch's batches, kept on the device until the epoch's end.

Below the loop, the checkpoint writer and the stop rules, which all read them."""

from __future__ import annotations

import torch


class EpochLosses:
    """The losses of an epoch's batches so far, on the device, read once at the epoch's end.

    Appending each 0-d loss is cheaper per step than writing it into a preallocated tensor (~20
    µs a step on a small model); folding every ``FOLD`` of them into one tensor keeps a long
    epoch's memory small (the CUDA allocator gives each 0-d tensor a 512-byte block)."""

    FOLD = 1024

    def __init__(self, done: torch.Tensor | None = None) -> None:
        self._folded: list[torch.Tensor] = [] if done is None or not len(done) else [done]
        self._recent: list[torch.Tensor] = []
        self._count = 0 if done is None else len(done)

    def append(self, loss: torch.Tensor) -> None:
        self._recent.append(loss)
        self._count += 1
        if len(self._recent) == self.FOLD:
            self._folded.append(torch.stack(self._recent))
            self._recent = []

    def __len__(self) -> int:
        return self._count

    def stacked(self) -> torch.Tensor:
        """All of them as one ``[len]`` tensor (at least one must have been appended)."""
        parts = [*self._folded, torch.stack(self._recent)] if self._recent else self._folded
        return parts[0] if len(parts) == 1 else torch.cat(parts)
