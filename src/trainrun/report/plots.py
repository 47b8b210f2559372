"""Pictures: ``curves.png`` for a run, ``lr_find.png`` for a range test, a comparison plot for
a sweep.

matplotlib is the ``plot`` extra (``pip install 'trainrun[plot]'``). Figures are drawn with
``matplotlib.figure.Figure`` on the Agg canvas: no pyplot, no display, no global backend
switch, safe in batch jobs and worker processes. Without matplotlib nothing fails: the writing
functions return a one-line note saying how to get the pictures, and write nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainrun.config.choices import direction as direction_of

if TYPE_CHECKING:  # matplotlib is imported when a picture is drawn (the plot extra)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

NO_MATPLOTLIB = "not written: matplotlib is not installed (pip install 'trainrun[plot]'; plot=false skips it)"
# Keys of an epoch row that are not learning curves.
_NOT_CURVES = ("epoch", "step", "lr", "seconds", "samples_per_s")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # ~0.5 s; only when a picture is drawn

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _log_if_wide(ax: Axes, values: Sequence[Any], axis: str = "y") -> None:
    """A log scale when positive values span more than 50x (a diverged job, a falling loss)."""
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _integer_epochs(ax: Axes, epochs: Sequence[int]) -> None:
    """Ticks on whole epochs only: each epoch up to 12 of them, else whole numbers that
    matplotlib spaces (its default locator puts ticks at 2.5, 7.5, ... for 20 epochs)."""
    if epochs and len(set(epochs)) <= 12:
        ax.set_xticks(sorted(set(epochs)))
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finite(values: Sequence[Any]) -> bool:
    return any(isinstance(v, int | float) and math.isfinite(v) for v in values)


def metric_keys(history: list[dict[str, Any]]) -> list[str]:
    """The non-loss values in the rows (``val_acc``, ``val_f1``, ``train_rmse``...)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k not in _NOT_CURVES and not k.endswith("loss")]
    return keys


def metric_panels(history: list[dict[str, Any]], most: int = 3) -> list[list[str]]:
    """The metrics grouped for drawing: scores that stay in [0, 1] (accuracy, F1, AUROC, top-k)
    share one panel; any other metric (RMSE, MAE, R²) gets its own, so scales never clash."""
    scores: list[str] = []
    others: list[str] = []
    for key in metric_keys(history):
        values = [r[key] for r in history if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        if values:
            (scores if all(0 <= v <= 1 for v in values) else others).append(key)
    panels = ([scores] if scores else []) + [[key] for key in others]
    return panels[:most]


def write_curves(history: list[dict[str, Any]], path: str | Path, best: dict[str, Any] | None = None) -> str | None:
    """Train and validation loss per epoch (first panel) and the metrics per epoch (one more
    panel for the scores in [0, 1], one per other metric, three at most) to ``path``, with the
    row ``best.pt`` holds (``best``) marked in every panel. Per optimizer step instead when the
    run validated inside epochs (``trainer.val_every_n_steps``). Returns None when written, or a
    note saying why not."""
    path = Path(path)
    if not history:
        return f"{path.name} not written: no epoch finished"
    try:
        fig = curves_figure(history, best)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None


def curves_figure(history: list[dict[str, Any]], best: dict[str, Any] | None = None) -> Any:
    """The figure of :func:`write_curves` (raises ImportError without matplotlib)."""
    panels = metric_panels(history)
    fig = _figure(5 * (1 + len(panels)), 4)
    # one row per epoch: x is the epoch; several (trainer.val_every_n_steps): the optimizer step
    axis = "epoch" if len({row["epoch"] for row in history}) == len(history) else "step"
    epochs = [row[axis] for row in history]
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]

    ax = axes[0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        values = [row.get(key, math.nan) for row in history]
        if _finite(values):
            ax.plot(epochs, values, style, markersize=3, label=key)
    ax.set_ylabel("loss")
    ax.set_title("loss")
    _log_if_wide(ax, [v for r in history for k, v in r.items() if k.endswith("loss")])

    for ax, keys in zip(axes[1:], panels, strict=True):
        for key in keys:
            ax.plot(epochs, [row.get(key, math.nan) for row in history], "-o", markersize=3, label=key)
        ax.margins(y=0.12)  # room for the label of the best value
        top = _best_marker(history, keys[0], axis)
        if top is not None:
            ax.annotate(f"{top[1]:.4g}", top, textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
        ax.set_title("scores" if len(keys) > 1 else keys[0])
    if best and best.get(axis) in epochs:  # the row the checkpoint one deploys holds
        where = f"epoch {best['epoch']}" + (f", step {best['step']}" if axis == "step" else "")
        for ax in axes:
            ax.axvline(best[axis], color="tab:red", linestyle="--", linewidth=1, alpha=0.7,
                       label=f"best.pt ({where})")
    for ax in axes:
        ax.set_xlabel("epoch" if axis == "epoch" else "optimizer step")
        ax.grid(alpha=0.3)
        ax.legend()
        _integer_epochs(ax, epochs)
    return fig


def _best_marker(history: list[dict[str, Any]], key: str, axis: str = "epoch") -> tuple[float, float] | None:
    points = [(r[axis], r[key]) for r in history if isinstance(r.get(key), int | float)
              and math.isfinite(r[key])]
    if not points:
        return None
    pick = min if direction_of(key) == "minimize" else max
    return pick(points, key=lambda p: p[1])


def write_lr_find(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                  chosen: int | None, path: str | Path, minimum: int | None = None) -> str | None:
    """``lr_find.png``: the loss of each step of the range test against its learning rate (log
    axis), raw and smoothed, with the suggested learning rate and the smoothed minimum marked.
    The y axis stops at twice the first smoothed loss, so a diverging tail does not flatten the
    part that matters.
    Returns None when written, or a note saying why not."""
    path = Path(path)
    try:
        fig = _figure(6, 4)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    ax = fig.subplots()
    ax.plot(lrs, losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=1.8, label="smoothed loss")
    if chosen is not None:
        ax.plot([lrs[chosen]], [smoothed[chosen]], "o", color="tab:red", markersize=8,
                label=f"suggested lr {lrs[chosen]:.3g}")
    if minimum is not None:
        ax.plot([lrs[minimum]], [smoothed[minimum]], "v", color="tab:gray", markersize=7,
                label=f"smoothed minimum (lr {lrs[minimum]:.3g})")
    ax.set_xscale("log")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:
        low, high = min(finite), min(max(finite), 2 * finite[0]) if finite[0] > 0 else max(finite)
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("learning-rate range test" + (f": suggested {lrs[chosen]:.3g}" if chosen is not None else ""),
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None
