"""The speed and stability levers of the loop: gradient accumulation, clipping, learning-rate
schedulers (cadence, logging, checkpointing), precision, torch.compile, foreach/fused optimizers.

End-to-end runs are ``train`` subprocesses; the clipping checks build a run in this process and
watch the gradients the optimizer actually stepped with.
"""

from __future__ import annotations

import pytest
import torch


def test_micro_batch_weights_make_each_step_a_mean_over_its_samples():
    from trainrun.engine.collectives import micro_batch_weights

    alone = 1  # world size: one process
    sizes = torch.tensor([8.0] * 8 + [3.0])
    assert micro_batch_weights(sizes, 1, alone) == [1.0] * 9  # plain steps: no multiply at all
    weights = micro_batch_weights(sizes, 4, alone)
    assert weights[:8] == [0.25] * 8
    assert weights[8:] == [1.0]  # a window holding one short batch is a plain step
    ragged = micro_batch_weights(torch.tensor([8.0] * 7), 3, alone)  # windows 8+8+8, 8+8+8, 8
    assert ragged == pytest.approx([1 / 3] * 6 + [1.0])
    short = micro_batch_weights(torch.tensor([8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 3.0]), 4, alone)
    assert short[4:] == pytest.approx([8 / 19, 8 / 19, 3 / 19])
    # every sample of a window weighs the same: weight / size is constant inside a window
    assert short[4] / 8 == pytest.approx(short[6] / 3)
