"""Pictures: curves.png for a run, the sweep comparison plot, and life without matplotlib."""

from __future__ import annotations

import pytest
from helpers import drawn, image, sweep_rows

from trainrun.report.plots import curves_figure, plot_sweep, write_curves

pytest.importorskip("matplotlib")


def history(epochs: int = 6) -> list[dict]:
    return [{"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_acc": 0.5 + e / 20,
             "lr": 0.01, "seconds": 0.1, "samples_per_s": 1000.0} for e in range(1, epochs + 1)]


def test_curves_with_loss_and_metric_panels(tmp_path):
    path = tmp_path / "curves.png"
    assert write_curves(history(), path) is None
    assert image(path).shape[:2] == (400, 1000)  # loss | val_acc
    assert drawn(path) > 0.01
    write_curves([{k: v for k, v in r.items() if k != "val_acc"} for r in history()], tmp_path / "one.png")
    assert image(tmp_path / "one.png").shape[:2] == (400, 500)  # no metric: the loss panel alone
    assert drawn(tmp_path / "one.png") > 0.01


@pytest.mark.parametrize("epochs", [1, 2, 7, 12, 13, 20, 25, 150])
def test_curves_put_ticks_on_whole_epochs_only(epochs):
    """20 epochs (the default) used to get ticks at 2.5, 7.5, ...: never a half epoch."""
    fig = curves_figure(history(epochs))
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
        assert len(ticks) <= 13


def test_no_epoch_no_picture(tmp_path):
    note = write_curves([], tmp_path / "curves.png")
    assert note and "no epoch finished" in note
    assert not (tmp_path / "curves.png").exists()


def test_sweep_plot_of_several_parameters_is_a_bar_per_job(tmp_path):
    rows = sweep_rows(tmp_path, [0.001, 0.01, 0.1])
    for row, model in zip(rows, ["mlp", "linear", "mlp"], strict=True):
        row["overrides"].append(f"model={model}")
        row["run_dir"] = None  # no curves panel
    assert plot_sweep(rows, tmp_path / "bars.png", direction="minimize") is None
    assert image(tmp_path / "bars.png").shape[:2] == (450, 1100)


def test_sweep_without_a_finished_job_draws_nothing(tmp_path):
    rows = sweep_rows(tmp_path, [0.1, 1.0], ["failed", "failed"])
    note = plot_sweep(rows, tmp_path / "sweep.png")
    assert note and "no job of the sweep has a finite val_loss" in note
    assert not (tmp_path / "sweep.png").exists()
