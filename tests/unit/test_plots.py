"""Pictures: curves.png for a run, the sweep comparison plot, and life without matplotlib."""

from __future__ import annotations

import pytest
from helpers import drawn, image, sweep_rows

from trainrun.report.plots import curves_figure, write_curves
from trainrun.report.sweep_plot import plot_sweep

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


def test_curves_mark_the_row_best_pt_holds_and_follow_steps_when_epochs_hold_several():
    rows = [{"epoch": e, "step": s, "train_loss": 1 / s, "val_loss": 1 / s + 0.1, "val_acc": s / 100}
            for e, s in ((1, 5), (1, 10), (2, 15), (2, 20))]
    fig = curves_figure(rows, best=rows[2])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "optimizer step"
    assert any(line.get_label() == "best.pt (epoch 2, step 15)" and list(line.get_xdata()) == [15, 15]
               for line in ax.get_lines())
    by_epoch = curves_figure(rows[1::2], best=rows[1])
    assert by_epoch.axes[0].get_xlabel() == "epoch"
    assert any(line.get_label() == "best.pt (epoch 1)" for line in by_epoch.axes[1].get_lines())


def many_jobs(tmp_path, values: list[float]) -> list[dict]:
    rows = sweep_rows(tmp_path, [0.0123456789 * (i + 1) for i in range(len(values))])
    for row, value in zip(rows, values, strict=True):
        row["objective"] = value
        row["overrides"].append(f"model.hidden=[{64 * (1 + row['job'] % 2)}]")
    return rows


def test_sweep_bars_are_scaled_to_the_values_and_one_best_job_is_red_everywhere(tmp_path):
    from trainrun.report.sweep_plot import BEST_COLOR, sweep_figure

    values = [0.3101, 0.3099, 0.3102, 0.3105, 0.3100, 0.3103, 0.3104, 0.3098]  # close scores
    fig = sweep_figure(many_jobs(tmp_path, values), direction="minimize")
    bars, curves = fig.axes[0], fig.axes[1]
    left, right = bars.get_xlim()
    assert left > 0.309 and right < 0.312  # not from zero: 0.3098 and 0.3105 look different
    ticks = [t.get_text() for t in bars.get_yticklabels()]
    assert ticks[0] == "lr=0.0988 hidden=[128]"  # job 7, the best, first; the float rounded
    red = [patch for patch in bars.patches if patch.get_facecolor()[:3] == (0.8392156862745098, 0.15294117647058825,
                                                                             0.1568627450980392)]
    assert len(red) == 1
    lines = [line for line in curves.get_lines() if line.get_color() == BEST_COLOR]
    assert len(lines) == 1 and lines[0].get_label() == "best: lr=0.0988 hidden=[128]"
    grey = [line for line in curves.get_lines() if line.get_color() == "0.7"]
    assert len(grey) == len(values) - 5  # beyond the best five: grey, no legend entry
    assert len(curves.get_legend().get_texts()) == 5


def test_summary_csv_has_one_column_per_swept_key(tmp_path):
    import csv
    import io

    from trainrun.report.sweep import summary_csv

    rows = [{"job": i, "overrides": [f"optim.lr={lr}", "trainer.epochs=2", f"tags=[{tag}]"], "status": "completed",
             "objective": lr, "objective_name": "val_loss", "final": {}, "best": {}, "tags": [tag]}
            for i, (lr, tag) in enumerate([(0.1, "a"), (0.01, "b")])]
    table = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert list(table[0])[5:8] == ["overrides", "optim.lr", "override:tags"]  # not the epochs: not swept
    assert [r["optim.lr"] for r in table] == ["0.1", "0.01"] and table[1]["override:tags"] == "[b]"
