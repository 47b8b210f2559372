"""Pictures: ``curves.png`` for a run, a comparison plot for a sweep.

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

NO_MATPLOTLIB = "not written: matplotlib is not installed (pip install 'trainrun[plot]'; plot=false skips it)"
# Keys of an epoch row that are not learning curves.
_NOT_CURVES = ("epoch", "step", "lr", "seconds", "samples_per_s")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # ~0.5 s; only when a picture is drawn

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _finite(values: Sequence[Any]) -> bool:
    return any(isinstance(v, int | float) and math.isfinite(v) for v in values)


def metric_keys(history: list[dict[str, Any]]) -> list[str]:
    """The non-loss values in the rows (``val_acc``, ``val_f1``, ``train_rmse``...)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k not in _NOT_CURVES and not k.endswith("loss")]
    return keys


def write_curves(history: list[dict[str, Any]], path: str | Path, title: str | None = None) -> str | None:
    """Train and validation loss per epoch (left) and the metrics per epoch (right) to ``path``.
    Returns None when written, or a note saying why not."""
    path = Path(path)
    try:
        fig = _figure(10, 4)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    if not history:
        return f"{path.name} not written: no epoch finished"
    epochs = [row["epoch"] for row in history]
    metrics = [k for k in metric_keys(history) if _finite([r.get(k) for r in history])]
    axes = fig.subplots(1, 2 if metrics else 1, squeeze=False)[0]

    ax = axes[0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        values = [row.get(key, math.nan) for row in history]
        if _finite(values):
            ax.plot(epochs, values, style, markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    losses = [v for r in history for k, v in r.items() if k.endswith("loss") and isinstance(v, float)
              and math.isfinite(v)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")  # losses falling by decades read better on a log axis
    ax.grid(alpha=0.3)
    ax.legend()

    if metrics:
        ax = axes[1]
        for key in metrics:
            values = [row.get(key, math.nan) for row in history]
            ax.plot(epochs, values, "-o", markersize=3, label=key)
        best = _best_marker(history, metrics[0])
        if best is not None:
            ax.annotate(f"{best[1]:.4g}", best, textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_title("metrics")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes:
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None


def _best_marker(history: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    from trainrun.config import objective_direction

    points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), int | float)
              and math.isfinite(r[key])]
    if not points:
        return None
    pick = min if objective_direction(key) == "minimize" else max
    return pick(points, key=lambda p: p[1])


# --------------------------------------------------------------------------- sweeps

_RESULT_KEYS = ("objective", "value", "objective_value")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _label(row: dict[str, Any], index: int, params: list[str]) -> str:
    if params:
        return " ".join(f"{p.rsplit('.', 1)[-1]}={row.get(p)}" for p in params)
    for key in ("overrides", "job", "name", "num"):
        if row.get(key) not in (None, "", []):
            value = row[key]
            return " ".join(value) if isinstance(value, list) else str(value)
    return f"#{index}"


def _history(run_dir: Any) -> list[dict[str, Any]]:
    if not run_dir:
        return []
    file = Path(str(run_dir)) / "metrics.jsonl"
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def plot_sweep(
    summary_rows: list[dict[str, Any]],
    path: str | Path,
    *,
    objective: str | None = None,
    params: list[str] | None = None,
    direction: str | None = None,
) -> str | None:
    """A comparison of a sweep's jobs, written to ``path`` (next to the sweep's summary.csv).

    ``summary_rows``: one dict per job. Read from them: the objective value (``objective`` names
    the key; otherwise the first of ``objective``, ``value``, ``objective_value``; non-numbers
    such as failed jobs are left out), the swept parameters (``params``; otherwise the keys with
    a dot, ``optim.lr``, whose values differ between rows), and ``run_dir`` (optional: the job's
    folder, whose ``metrics.jsonl`` gives the curves panel). ``objective_name`` in a row, or
    ``direction`` (``minimize``/``maximize``), decides which job is best.

    Left panel: the objective against the swept parameter when exactly one numeric parameter
    varies (log axis when it spans two decades or more), otherwise one bar per job. Right panel
    (when run folders are given): each job's validation curve of the objective metric (or
    ``val_loss``). Returns None when written, or a note saying why not.
    """
    from trainrun.config import objective_direction

    path = Path(path)
    try:
        fig = _figure(11, 4.5)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    rows = list(summary_rows)
    key = objective or next((k for k in _RESULT_KEYS if any(k in r for r in rows)), None)
    if key is None:
        return f"{path.name} not written: the sweep rows hold no objective value"
    name = next((str(r["objective_name"]) for r in rows if r.get("objective_name")), None)
    direction = direction or objective_direction(name or key)
    if params is None:
        params = sorted({k for r in rows for k in r if "." in k and k != "run_dir"})
        params = [p for p in params if len({str(r.get(p)) for r in rows}) > 1]
    done = [(i, r, _number(r.get(key))) for i, r in enumerate(rows)]
    done = [(i, r, v) for i, r, v in done if v is not None and math.isfinite(v)]
    if not done:
        return f"{path.name} not written: no job of the sweep has a finite {key}"
    best_value = (min if direction == "minimize" else max)(v for _, _, v in done)

    curves = [(i, r, _history(r.get("run_dir"))) for i, r, _ in done]
    curves = [c for c in curves if c[2]]
    axes = fig.subplots(1, 2 if curves else 1, squeeze=False)[0]
    ax = axes[0]
    numeric = [p for p in params if all(_number(r.get(p)) is not None for _, r, _ in done)]
    shown = name or key
    if len(params) == 1 and numeric:
        p = numeric[0]
        points = sorted((_number(r.get(p)), v) for _, r, v in done)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        ax.plot(xs, ys, "o-", markersize=5)
        best_x = next(x for x, y in points if y == best_value)
        ax.plot([best_x], [best_value], "*", markersize=14, color="tab:red",
                label=f"best {p}={best_x:g}: {best_value:.4g}")
        if min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(shown)
        ax.legend()
    else:
        values = [v for _, _, v in done]
        ax.barh(range(len(values)), values,
                color=["tab:red" if v == best_value else "tab:blue" for v in values])
        ax.set_yticks(range(len(values)), [_label(r, i, params) for i, r, _ in done],
                      fontsize=7 if len(values) > 12 else 9)
        ax.invert_yaxis()
        ax.set_xlabel(shown)
    ax.set_title(f"{len(done)} of {len(rows)} jobs; best {shown} = {best_value:.4g} ({direction})",
                 fontsize=10)
    ax.grid(alpha=0.3)

    if curves:
        ax = axes[1]
        metric = name if name and any(name in h[0] for _, _, h in curves) else "val_loss"
        for i, r, history in curves[:20]:
            epochs = [h["epoch"] for h in history]
            ax.plot(epochs, [h.get(metric, math.nan) for h in history], linewidth=1.2,
                    label=_label(r, i, params))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch", fontsize=10)
        ax.grid(alpha=0.3)
        if len(curves) <= 10:
            ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None
