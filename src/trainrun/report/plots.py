"""Pictures: ``curves.png`` for a run, ``lr_find.png`` for a range test, a comparison plot for
a sweep.

matplotlib is the ``plot`` extra (``pip install 'trainrun[plot]'``). Figures are drawn with
``matplotlib.figure.Figure`` on the Agg canvas: no pyplot, no display, no global backend
switch, safe in batch jobs and worker processes. Without matplotlib nothing fails: the writing
functions return a one-line note saying how to get the pictures, and write nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainrun.config.choices import direction as direction_of
from trainrun.files import METRICS_JSONL

NO_MATPLOTLIB = "not written: matplotlib is not installed (pip install 'trainrun[plot]'; plot=false skips it)"
# Keys of an epoch row that are not learning curves.
_NOT_CURVES = ("epoch", "step", "lr", "seconds", "samples_per_s")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # ~0.5 s; only when a picture is drawn

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _log_if_wide(ax: Any, values: Sequence[Any], axis: str = "y") -> None:
    """A log scale when positive values span more than 50x (a diverged job, a falling loss)."""
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _integer_epochs(ax: Any, epochs: Sequence[int]) -> None:
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
    scores, others = [], []
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


# --------------------------------------------------------------------------- sweeps

_RESULT_KEYS = ("objective", "value", "objective_value")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _settings(row: dict[str, Any]) -> dict[str, str]:
    """A job's swept settings: its ``overrides`` (``["optim.lr=0.1", ...]``) as a dict."""
    overrides = row.get("overrides") or []
    if isinstance(overrides, str):
        overrides = overrides.split()
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)


def _label(settings: dict[str, str], params: list[str], row: dict[str, Any]) -> str:
    if params:
        return " ".join(f"{p.rsplit('.', 1)[-1].lstrip('+')}={settings.get(p, '-')}" for p in params)
    return f"job {row.get('job', '?')}"


def _history(run_dir: Any) -> list[dict[str, Any]]:
    file = Path(str(run_dir)) / METRICS_JSONL if run_dir else None
    if file is None or not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def plot_sweep(
    summary_rows: list[dict[str, Any]],
    path: str | Path,
    *,
    objective: str | None = None,
    direction: str | None = None,
) -> str | None:
    """A picture comparing a sweep's jobs, written to ``path`` (next to ``summary.csv``).

    ``summary_rows``: one dict per job, as ``trainrun.sweep.job_row`` makes them. Read from
    each: ``objective`` (the job's objective value; None or NaN for a failed job, which is left
    out; ``objective=`` names another key), ``objective_name`` (for the axis label and the
    direction, unless ``direction`` is given), ``overrides`` (``["optim.lr=0.1", ...]``: the keys
    whose values differ between jobs are the swept parameters), ``job`` and, optionally,
    ``run_dir`` (its ``metrics.jsonl`` gives the curves panel).

    Left: the objective against the swept parameter when exactly one numeric parameter varies
    (a log axis when it spans two decades or more), otherwise one bar per job, best in red.
    Right (when run folders are given): each job's per-epoch curve of the objective (or
    ``val_loss``). Returns None when written, or a note saying why not.
    """
    path = Path(path)
    try:
        fig = _figure(11, 4.5)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    rows = list(summary_rows)
    key = objective or next((k for k in _RESULT_KEYS if any(k in r for r in rows)), "objective")
    name = next((str(r["objective_name"]) for r in rows if r.get("objective_name")), None) or key
    direction = direction or direction_of(name)
    done = [(r, _settings(r), _number(r.get(key))) for r in rows]
    done = [(r, s, v) for r, s, v in done if v is not None and math.isfinite(v)]
    if not done:
        return f"{path.name} not written: no job of the sweep has a finite {name}"
    keys = list(dict.fromkeys(k for _, s, _ in done for k in s))
    params = [k for k in keys if len({s.get(k) for _, s, _ in done}) > 1]
    best_value = (min if direction == "minimize" else max)(v for _, _, v in done)
    curves = [(r, s, h) for r, s, _ in done if (h := _history(r.get("run_dir")))]

    axes = fig.subplots(1, 2 if curves else 1, squeeze=False)[0]
    ax = axes[0]
    xs = [_number(s.get(params[0])) for _, s, _ in done] if len(params) == 1 else []
    if xs and all(x is not None for x in xs):
        points = sorted(zip(xs, (v for _, _, v in done), strict=True))
        ys = [y for _, y in points]
        ax.plot([x for x, _ in points], ys, "o-", markersize=5)
        best_x = next(x for x, y in points if y == best_value)
        ax.plot([best_x], [best_value], "*", markersize=14, color="tab:red",
                label=f"best {params[0]}={best_x:g}: {best_value:.4g}")
        if min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(params[0])
        ax.set_ylabel(name)
        _log_if_wide(ax, ys)
        ax.legend()
    else:
        values = [v for _, _, v in done]
        ax.barh(range(len(values)), values,
                color=["tab:red" if v == best_value else "tab:blue" for v in values])
        ax.set_yticks(range(len(values)), [_label(s, params, r) for r, s, _ in done],
                      fontsize=7 if len(values) > 12 else 9)
        ax.invert_yaxis()
        ax.set_xlabel(name)
        _log_if_wide(ax, values, "x")
    ax.set_title(f"{len(done)} of {len(rows)} jobs; best {name} = {best_value:.4g} ({direction})",
                 fontsize=10)
    ax.grid(alpha=0.3)

    if curves:
        ax = axes[1]
        metric = name if any(name in h[0] for _, _, h in curves) else "val_loss"
        for r, s, history in curves[:20]:
            ax.plot([h["epoch"] for h in history], [h.get(metric, math.nan) for h in history],
                    "-o", markersize=2, linewidth=1.2, label=_label(s, params, r))
        _log_if_wide(ax, [h.get(metric) for _, _, hs in curves[:20] for h in hs])
        _integer_epochs(ax, [h["epoch"] for _, _, hs in curves[:20] for h in hs])
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch" + (" (first 20 jobs)" if len(curves) > 20 else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        if len(curves) <= 10:
            ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None
