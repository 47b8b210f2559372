"""Pictures: curves.png for a run, the sweep comparison plot, and life without matplotlib."""

from __future__ import annotations

from conftest import shadow
from helpers import drawn, image, sweep_rows

from trainrun.report.plots import NO_MATPLOTLIB, metric_panels, write_curves
from trainrun.report.sweep_plot import plot_sweep


def test_metrics_of_different_scales_get_their_own_panels(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_rmse": 80 - 3 * e, "val_r2": e / 10 - 0.3,
             "val_mae": 60 - 2 * e, "val_mse": (80 - 3 * e) ** 2} for e in range(1, 8)]
    assert metric_panels(rows) == [["val_rmse"], ["val_r2"], ["val_mae"]]  # at most three
    scores = [{"epoch": 1, "val_acc": 0.5, "val_f1": 0.4, "val_auroc": 0.7, "val_top3": 0.9}]
    assert metric_panels(scores) == [["val_acc", "val_f1", "val_auroc", "val_top3"]]
    assert write_curves(rows, tmp_path / "wide.png") is None
    assert image(tmp_path / "wide.png").shape[:2] == (400, 2000)


def test_every_run_writes_curves_png(train):
    result = train("trainer.epochs=3", "trainer.limit_train_batches=4", "print_config=false")
    assert drawn(result.run_dir / "curves.png") > 0.01
    assert "curves.png not written" not in result.output


def test_plot_false_writes_none(train):
    result = train("trainer.epochs=1", "trainer.limit_train_batches=2", "plot=false", "print_config=false")
    assert not (result.run_dir / "curves.png").exists()
    assert result.summary["status"] == "completed"


def test_without_matplotlib_the_run_says_how_to_get_plots(train, tmp_path):
    result = train("trainer.epochs=2", "trainer.limit_train_batches=2", "print_config=false",
                   env=shadow(tmp_path, "matplotlib"))
    assert result.returncode == 0
    assert not (result.run_dir / "curves.png").exists()
    assert f"curves.png {NO_MATPLOTLIB}" in result.output
    assert "pip install 'trainrun[plot]'" in result.output


def test_sweep_plot_of_one_numeric_parameter(tmp_path):
    rows = sweep_rows(tmp_path, [0.001, 0.01, 0.1, 1.0], ["completed", "completed", "failed", "completed"])
    assert plot_sweep(rows, tmp_path / "sweep.png") is None
    assert drawn(tmp_path / "sweep.png") > 0.01
    assert image(tmp_path / "sweep.png").shape[:2] == (450, 1100)
