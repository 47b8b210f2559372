"""The verdict of ``debug=overfit``: did the train loss fall enough, and by how much.

Overfitting two fixed batches is the first sanity check of a setup (a model, loss and optimizer
wired right memorize 64 samples in a few hundred steps); a loss that barely moves means a wrong
head, a detached output, a frozen model or a learning rate far off. ``overfit_check=<ratio>``
(the preset sets 0.1) passes when the last epoch's ``train_loss`` is at most ``ratio`` times
the first epoch's, and fails the run (exit 1) otherwise: a sanity check that prints a number
and exits 0 either way would be read as passed.
"""

from __future__ import annotations

import math
from typing import Any


def overfit_verdict(history: list[dict[str, Any]], ratio: float) -> dict[str, Any]:
    """``{"passed", "first", "last", "fraction", "ratio", "epochs", "message"}`` for ``history``
    (the run's epoch rows), judged against ``ratio``."""
    losses = [(row["epoch"], row.get("train_loss", math.nan)) for row in history]
    if not losses:
        return {"passed": False, "first": None, "last": None, "fraction": None, "ratio": ratio,
                "epochs": 0, "message": "overfit check FAILED: no epoch finished"}
    (first_epoch, first), (last_epoch, last) = losses[0], losses[-1]
    finite = math.isfinite(first) and math.isfinite(last)
    # A loss already at 0 (nothing to fall) or a NaN is judged by the last value alone.
    fraction = last / first if finite and first > 0 else 0.0 if finite and last <= 1e-12 else math.inf
    passed = fraction <= ratio
    wanted = f"the check asks for at most {ratio:.0%} of it (overfit_check={ratio:g})"
    fell = (f"train_loss went from {first:.4g} (epoch {first_epoch}) to {last:.4g} (epoch {last_epoch})")
    if passed:
        lower = f", {1 / fraction:,.0f}x lower" if fraction > 0 else ""
        message = f"overfit check passed: {fell}, {_percent(fraction)} of its start{lower}; {wanted}"
    elif math.isfinite(fraction):
        message = (f"overfit check FAILED: {fell}, still {_percent(fraction)} of its start; {wanted}. "
                   "A setup that cannot memorize the same few batches is wired wrong or learns too slowly")
    else:
        message = f"overfit check FAILED: {fell}; a finite, falling loss is needed"
    return {"passed": passed, "first": first, "last": last,
            "fraction": fraction if math.isfinite(fraction) else None, "ratio": ratio,
            "epochs": len(losses), "message": message}


def _percent(fraction: float) -> str:
    return f"{fraction:.2%}" if fraction < 0.1 else f"{fraction:.1%}"

