"""``evaluate report=true``: how a classifier does on each class, as text and as a picture.

Per class: precision, recall, F1 and support, with their macro and support-weighted averages
and the accuracy (scikit-learn's ``precision_recall_fscore_support``, already a dependency; a
class never predicted has precision 0, said with a note rather than a warning), and the
confusion matrix (rows: the true class, columns: the predicted one). ``report.txt`` holds the
table and the matrix; ``confusion.png`` the matrix as a picture, each cell with its count and
shaded by its share of the true class, so a rare class's misses show as clearly as a common
one's. Plain numbers in, files out: nothing here knows torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainrun.report.plots import NO_MATPLOTLIB, _figure


def class_report(targets: Sequence[int], predicted: Sequence[int], labels: Sequence[Any]) -> dict[str, Any]:
    """The per-class numbers and the confusion matrix of class ids ``targets`` vs ``predicted``
    (ids index ``labels``)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # only when asked

    ids = list(range(len(labels)))
    y, p = np.asarray(targets, dtype=int), np.asarray(predicted, dtype=int)
    precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=ids, zero_division=0)
    classes = [{"label": label, "precision": float(precision[i]), "recall": float(recall[i]),
                "f1": float(f1[i]), "support": int(support[i])} for i, label in enumerate(labels)]
    total = int(support.sum())

    def average(key: str, weighted: bool) -> float:
        values = np.array([c[key] for c in classes])
        if weighted:
            return float((values * support).sum() / total) if total else math.nan
        return float(values.mean())

    return {
        "classes": classes,
        "macro": {k: average(k, False) for k in ("precision", "recall", "f1")},
        "weighted": {k: average(k, True) for k in ("precision", "recall", "f1")},
        "accuracy": float((y == p).mean()) if len(y) else math.nan,
        "samples": total,
        "never_predicted": [str(labels[i]) for i in ids if not (p == i).any() and support[i] > 0],
        "confusion": confusion_matrix(y, p, labels=ids).tolist(),
    }


def report_text(report: dict[str, Any]) -> str:
    """The table and the matrix as plain text (report.txt, and the console)."""
    names = [str(c["label"]) for c in report["classes"]]
    width = max(12, *(len(n) for n in names))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for c, name in zip(report["classes"], names, strict=True):
        lines.append(f"{name:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} {c['support']:>8}")
    lines.append("")
    for kind in ("macro", "weighted"):
        r = report[kind]
        lines.append(f"{kind + ' avg':<{width}} {r['precision']:>9.4f} {r['recall']:>9.4f} {r['f1']:>9.4f} "
                     f"{report['samples']:>8}")
    lines.append(f"{'accuracy':<{width}} {'':>9} {'':>9} {report['accuracy']:>9.4f} {report['samples']:>8}")
    if report["never_predicted"]:
        lines.append(f"never predicted (precision 0): {', '.join(report['never_predicted'])}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    cell = max(5, *(len(str(v)) for row in report["confusion"] for v in row), *(len(n) for n in names))
    lines.append(" " * width + " " + " ".join(f"{n[:cell]:>{cell}}" for n in names))
    for name, row in zip(names, report["confusion"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines) + "\n"


def write_confusion(report: dict[str, Any], path: str | Path, title: str = "") -> str | None:
    """``confusion.png``; None when written, or a note saying why not."""
    path = Path(path)
    try:
        matrix = np.asarray(report["confusion"], dtype=float)
        n = len(matrix)
        size = min(12.0, 3.0 + 0.6 * n)
        fig = _figure(size + 1.5, size)
    except ImportError:
        return f"{path.name} {NO_MATPLOTLIB}"
    names = [str(c["label"]) for c in report["classes"]]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 30:  # counts in the cells while they stay readable
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8 if n > 12 else 10,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    recall = ", ".join(f"{c['label']} {c['recall']:.2f}" for c in report["classes"][:6])
    ax.set_title((title + "\n" if title else "") + f"accuracy {report['accuracy']:.4f}; recall: {recall}"
                 + (" ..." if n > 6 else ""), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return None
