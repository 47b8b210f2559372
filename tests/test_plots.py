"""Pictures: curves.png for a run, the sweep comparison plot, and life without matplotlib."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_loggers import shadow

from trainrun.report.plots import NO_MATPLOTLIB, curves_figure, metric_panels, plot_sweep, write_curves

pytest.importorskip("matplotlib")


def image(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def drawn(path: Path) -> float:
    """Share of the picture that is not background white: 0 for an empty canvas."""
    pixels = image(path)[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


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


def test_metrics_of_different_scales_get_their_own_panels(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_rmse": 80 - 3 * e, "val_r2": e / 10 - 0.3,
             "val_mae": 60 - 2 * e, "val_mse": (80 - 3 * e) ** 2} for e in range(1, 8)]
    assert metric_panels(rows) == [["val_rmse"], ["val_r2"], ["val_mae"]]  # at most three
    scores = [{"epoch": 1, "val_acc": 0.5, "val_f1": 0.4, "val_auroc": 0.7, "val_top3": 0.9}]
    assert metric_panels(scores) == [["val_acc", "val_f1", "val_auroc", "val_top3"]]
    assert write_curves(rows, tmp_path / "wide.png") is None
    assert image(tmp_path / "wide.png").shape[:2] == (400, 2000)


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


def test_every_run_writes_curves_png(train):
    result = train("trainer.epochs=3", "trainer.limit_train_batches=4", "print_config=false")
    assert drawn(result.run_dir / "curves.png") > 0.01
    assert "curves.png not written" not in result.output


def test_plot_false_writes_none(train):
    result = train("trainer.epochs=1", "trainer.limit_train_batches=2", "plot=false", "print_config=false")
    assert not (result.run_dir / "curves.png").exists()
    assert result.summary["status"] == "completed"


@pytest.mark.slow
def test_without_matplotlib_the_run_says_how_to_get_plots(train, tmp_path):
    result = train("trainer.epochs=2", "trainer.limit_train_batches=2", "print_config=false",
                   env=shadow(tmp_path, "matplotlib"))
    assert result.returncode == 0
    assert not (result.run_dir / "curves.png").exists()
    assert f"curves.png {NO_MATPLOTLIB}" in result.output
    assert "pip install 'trainrun[plot]'" in result.output


def sweep_rows(tmp_path: Path, lrs: list[float], statuses: list[str] | None = None) -> list[dict]:
    rows = []
    for job, lr in enumerate(lrs):
        run_dir = tmp_path / str(job)
        run_dir.mkdir()
        hist = [{"epoch": e, "val_loss": lr * 10 + 1 / e} for e in range(1, 5)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        status = (statuses or ["completed"] * len(lrs))[job]
        rows.append({"job": job, "overrides": [f"optim.lr={lr}", "trainer.epochs=4"], "run_dir": str(run_dir),
                     "status": status, "objective": None if status == "failed" else lr * 10 + 0.25,
                     "objective_name": "val_loss"})
    return rows


def test_sweep_plot_of_one_numeric_parameter(tmp_path):
    rows = sweep_rows(tmp_path, [0.001, 0.01, 0.1, 1.0], ["completed", "completed", "failed", "completed"])
    assert plot_sweep(rows, tmp_path / "sweep.png") is None
    assert drawn(tmp_path / "sweep.png") > 0.01
    assert image(tmp_path / "sweep.png").shape[:2] == (450, 1100)


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
