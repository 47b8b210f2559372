"""trainrun computes exactly the canonical loop: same weights as a plain hand-written loop."""

from __future__ import annotations

import copy

import pytest
import torch
from tutorial_loop import tutorial_epoch

from trainrun.build.setup import build
from trainrun.engine.loop import TrainState, fit
from trainrun.report.console import Reporter


def canonical_loop(model, optimizer, criterion, batches, epochs):
    """The tutorial loop (scripts/tutorial_loop.py), with the batch order trainrun uses."""
    epoch_losses = []
    for epoch in range(epochs):
        perm = batches.permutation(epoch)
        x_all, y_all = batches.x[perm], batches.y[perm]
        epoch_losses.append(tutorial_epoch(model, optimizer, criterion,
                                           ((x_all[lo:hi], y_all[lo:hi]) for lo, hi in batches.bounds)))
    return epoch_losses


@pytest.mark.parametrize(
    ("overrides", "make_optimizer"),
    [
        (["optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "loss=cross_entropy"],
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (["optim=adam", "optim.lr=0.002", "loss=nll", "model.dropout=0.3"],
         lambda p: torch.optim.Adam(p, lr=0.002)),
        (["optim=sgd", "optim.lr=0.1", "optim.momentum=0", "loss=bce", "data=breast_cancer",
          "model.hidden=[16,8]"],
         lambda p: torch.optim.SGD(p, lr=0.1)),
    ],
    ids=["sgd-momentum-ce", "adam-nll-dropout", "plain-sgd-bce-sigmoid-head"],
)
def test_same_weights_as_the_canonical_loop(compose, tmp_path, overrides, make_optimizer):
    # 1,437 training digits at batch 50: the last batch is short (37), which the epoch mean
    # must weight by its size.
    cfg = compose(*overrides, "trainer.epochs=3", "data.batch_size=50", "checkpoint.enabled=false",
                  "trainer.progress=none", "device=cpu")
    run = build(cfg)
    assert len(run.train_batches.x) % 50 != 0
    initial = copy.deepcopy(run.raw_model.state_dict())
    model = copy.deepcopy(run.raw_model)
    rng = torch.get_rng_state()

    state = fit(run, TrainState(), Reporter(tmp_path, epochs=3, progress="none"))

    torch.set_rng_state(rng)  # dropout draws the same masks
    model.load_state_dict(initial)
    losses = canonical_loop(model, make_optimizer(model.parameters()), run.criterion,
                            run.train_batches, epochs=3)

    ours, theirs = run.raw_model.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert [row["train_loss"] for row in state.history] == pytest.approx(losses, rel=1e-6)
