"""Early stopping: ``trainer.early_stopping.{patience,min_delta,monitor,mode}``; the reason is
printed and recorded in summary.json (and in last.pt, whose history decides a resumed run)."""

from __future__ import annotations

import math

from trainrun.build.settings import EarlyStopping
from trainrun.engine.stop import early_stopping_reason


def rule(patience, min_delta=0.0, monitor="val_loss", mode="min"):
    """The loop's typed setting; patience null turns early stopping off (no setting at all)."""
    return None if patience is None else EarlyStopping(patience, min_delta, monitor, mode)


def history(values, key="val_loss"):
    return [{"epoch": i + 1, "train_loss": 1.0, key: v} for i, v in enumerate(values)]


def test_patience_counts_epochs_without_improvement():
    # Like Keras and Lightning: patience=2 stops after the 2nd epoch in a row without improvement.
    assert early_stopping_reason(history([1.0, 0.9, 0.95]), rule(2)) is None
    reason = early_stopping_reason(history([1.0, 0.9, 0.95, 0.91]), rule(2))
    assert reason == ("early stopping after epoch 4: val_loss has not improved by more than 0.0 "
                      "for 2 epochs (patience 2; best 0.9 at epoch 2)")
    # An improvement resets the count.
    assert early_stopping_reason(history([1.0, 0.9, 0.95, 0.8, 0.85]), rule(2)) is None
    # patience=0: stop at the first epoch that does not improve (never at one that does).
    assert early_stopping_reason(history([1.0, 0.9]), rule(0)) is None
    assert "for 1 epoch " in early_stopping_reason(history([1.0, 0.9, 0.9]), rule(0))
    # Off while patience is null.
    assert early_stopping_reason(history([1.0, 2.0, 3.0, 4.0]), rule(None)) is None
    assert early_stopping_reason([], rule(1)) is None


def test_min_delta_mode_and_monitor():
    # Improvements of min_delta or less do not count.
    assert early_stopping_reason(history([1.0, 0.95, 0.92]), rule(2, min_delta=0.1)) is not None
    assert early_stopping_reason(history([1.0, 0.85, 0.7]), rule(2, min_delta=0.1)) is None
    # mode=max for accuracy-like values; the monitored key is the one named.
    accs = history([0.5, 0.7, 0.6, 0.4], key="val_acc")
    assert "val_acc has not improved" in early_stopping_reason(accs, rule(2, monitor="val_acc", mode="max"))
    assert early_stopping_reason(accs, rule(2, monitor="val_acc", mode="min")) is None  # 0.4 improves
    # A non-finite value never improves.
    assert early_stopping_reason(history([1.0, math.nan, math.nan]), rule(2)) is not None
    assert "best none" in early_stopping_reason(history([math.nan, math.nan]), rule(2))
