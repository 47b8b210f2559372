"""``sweep.png``: a sweep's jobs compared at a glance (drawn with ``summary.csv`` at the end of
a multirun, :mod:`trainrun.report.sweep`).

What makes it readable: one best job, red in every panel; bars on an axis scaled to the values
(close scores look different, each bar carries its number); long float values rounded in the
labels; many curves drawn as the best few in colour over the others in grey.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from trainrun.config.choices import direction as direction_of
from trainrun.files import METRICS_JSONL
from trainrun.report.plots import NO_MATPLOTLIB, _figure, _integer_epochs, _log_if_wide

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
    pairs = (str(o).partition("=") for o in overrides)
    return {key: value for key, _, value in pairs}


def short_value(value: str) -> str:
    """A swept value as a label: a long float rounded to 3 significant digits
    (``0.07257005721594278`` -> ``0.0726``); anything else as written."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}" if len(value) > 6 and math.isfinite(number) else value


def _label(settings: dict[str, str], params: list[str], row: dict[str, Any]) -> str:
    if params:
        return " ".join(f"{p.rsplit('.', 1)[-1].lstrip('+')}={short_value(settings.get(p, '-'))}" for p in params)
    return f"job {row.get('job', '?')}"


def _history(run_dir: Any) -> list[dict[str, Any]]:
    file = Path(str(run_dir)) / METRICS_JSONL if run_dir else None
    if file is None or not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


HIGHLIGHTED = 5  # a sweep with more jobs draws the best few in colour, the others in grey
BEST_COLOR = "tab:red"  # the one best job, in every panel
OTHER_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:olive")


def plot_sweep(
    summary_rows: list[dict[str, Any]],
    path: str | Path,
    *,
    objective: str | None = None,
    direction: str | None = None,
) -> str | None:
    """A picture comparing a sweep's jobs, written to ``path`` (next to ``summary.csv``).

    ``summary_rows``: one dict per job, as ``trainrun.report.sweep.job_row`` makes them. Read
    from each: ``objective`` (the job's objective value; None or NaN for a failed job, which is
    left out; ``objective=`` names another key), ``objective_name`` (for the axis label and the
    direction, unless ``direction`` is given), ``overrides`` (``["optim.lr=0.1", ...]``: the keys
    whose values differ between jobs are the swept parameters), ``job`` and, optionally,
    ``run_dir`` (its ``metrics.jsonl`` gives the curves panel).

    One best job (the best objective; the lowest job number among ties) is red in every panel.
    Left: the objective against the swept parameter when exactly one numeric parameter varies
    (a log axis when it spans two decades or more), otherwise one bar per job, best first, on an
    axis scaled to the values (not from zero: close scores look different), each bar labelled
    with its value. Right (when run folders are given): each job's per-epoch curve of the
    objective (or ``val_loss``): all in colour with a legend up to :data:`HIGHLIGHTED` jobs,
    beyond that the best few in colour and the others in grey. Long float values in labels are
    rounded. Returns None when written, or a note saying why not.
    """
    path = Path(path)
    try:
        fig = sweep_figure(summary_rows, objective=objective, direction=direction)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    if isinstance(fig, str):
        return f"{path.name} not written: {fig}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None


def sweep_figure(summary_rows: list[dict[str, Any]], *, objective: str | None = None,
                 direction: str | None = None) -> Any:
    """The figure of :func:`plot_sweep`, or why there is none (a string); raises ImportError
    without matplotlib."""
    rows = list(summary_rows)
    key = objective or next((k for k in _RESULT_KEYS if any(k in r for r in rows)), "objective")
    name = next((str(r["objective_name"]) for r in rows if r.get("objective_name")), None) or key
    direction = direction or direction_of(name)
    scored = [(r, _settings(r), _number(r.get(key))) for r in rows]
    done = [(r, s, v) for r, s, v in scored if v is not None and math.isfinite(v)]
    if not done:
        return f"no job of the sweep has a finite {name}"
    fig = _figure(11, 4.5)
    sign = 1.0 if direction == "minimize" else -1.0
    done.sort(key=lambda d: (sign * d[2], d[0].get("job") if isinstance(d[0].get("job"), int) else 1 << 30))
    keys = list(dict.fromkeys(k for _, s, _ in done for k in s))
    params = [k for k in keys if len({s.get(k) for _, s, _ in done}) > 1]
    best_row, best_settings, best_value = done[0]
    colors = {id(r): (BEST_COLOR if i == 0 else OTHER_COLORS[(i - 1) % len(OTHER_COLORS)]
                      if i < HIGHLIGHTED else "0.7") for i, (r, _, _) in enumerate(done)}
    curves = [(r, s, h) for r, s, _ in done if (h := _history(r.get("run_dir")))]

    axes = fig.subplots(1, 2 if curves else 1, squeeze=False)[0]
    ax = axes[0]
    xs = [_number(s.get(params[0])) for _, s, _ in done] if len(params) == 1 else []
    numeric = [x for x in xs if x is not None]
    if xs and len(numeric) == len(xs):
        points = sorted(zip(numeric, (v for _, _, v in done), strict=True))
        ys = [y for _, y in points]
        ax.plot([x for x, _ in points], ys, "o-", markersize=5, color=OTHER_COLORS[0])
        best_x = _number(best_settings.get(params[0])) or 0.0
        ax.plot([best_x], [best_value], "*", markersize=15, color=BEST_COLOR,
                label=f"best: {params[0]}={best_x:.3g}, {name} {best_value:.4g}")
        if min(numeric) > 0 and max(numeric) / min(numeric) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(params[0])
        ax.set_ylabel(name)
        _log_if_wide(ax, ys)
        ax.legend(fontsize=8)
    else:
        values = [v for _, _, v in done]
        low, high = min(values), max(values)
        span = (high - low) or abs(high) * 0.1 or 1.0
        left = low - 0.35 * span  # scaled to the data, not from zero: close scores look different
        ax.barh(range(len(values)), [v - left for v in values], left=left,
                color=[BEST_COLOR if i == 0 else "tab:blue" for i in range(len(values))])
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.4g}", va="center", fontsize=7 if len(values) > 12 else 8)
        ax.set_xlim(left, high + 0.35 * span)
        ax.set_yticks(range(len(values)), [_label(s, params, r) for r, s, _ in done],
                      fontsize=7 if len(values) > 12 else 9)
        ax.invert_yaxis()  # best at the top
        ax.set_xlabel(name + (" (axis scaled to the values)" if left > 0 or high < 0 else ""))
    ax.set_title(f"{len(done)} of {len(rows)} jobs; best {name} = {best_value:.4g} ({direction}): "
                 f"{_label(best_settings, params, best_row)}", fontsize=9)
    ax.grid(alpha=0.3)

    if curves:
        ax = axes[1]
        metric = name if any(name in h[0] for _, _, h in curves) else "val_loss"
        many = len(curves) > HIGHLIGHTED
        for r, s, history in reversed(curves):  # the best drawn last, on top
            color = colors[id(r)]
            grey = color == "0.7"
            ax.plot([h["epoch"] for h in history], [h.get(metric, math.nan) for h in history],
                    "-o" if not grey else "-", markersize=2, linewidth=2.4 if color == BEST_COLOR else 1.0,
                    color=color, alpha=0.5 if grey else 1.0, zorder=3 if color == BEST_COLOR else 2,
                    label=None if grey else ("best: " if color == BEST_COLOR else "") + _label(s, params, r))
        _log_if_wide(ax, [h.get(metric) for _, _, hs in curves for h in hs])
        _integer_epochs(ax, [h["epoch"] for _, _, hs in curves for h in hs])
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch" + (f" (the best {HIGHLIGHTED} of {len(curves)} in colour)"
                                              if many else ""), fontsize=10)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("best: "))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7)
    return fig
