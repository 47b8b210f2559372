"""``lr_find=true|apply``: the learning-rate range test (Lightning's rules), its files, a run it
leaves bit-identical, and a run trained with its suggestion."""

from __future__ import annotations

import itertools
import math

import pytest

from trainrun.tools.lr_find import schedule, suggestion


def test_the_rates_grow_exponentially_from_min_to_max():
    lrs = schedule(1e-8, 1.0, 100)
    assert lrs[0] == 1e-8 and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert max(ratios) == pytest.approx(min(ratios))  # evenly spaced on a log axis


def test_the_suggestion_is_the_steepest_descent_after_the_first_ten_steps():
    lrs = schedule(1e-6, 1.0, 60)
    # flat, then a slow fall, the steepest fall around step 40, then a blow-up
    loss = [2.0] * 25 + [2.0 - 0.01 * i for i in range(10)] + [1.9 - 0.2 * i for i in range(6)] \
        + [0.9 + 0.5 * i for i in range(19)]
    chosen = suggestion(lrs, loss)
    assert 35 <= chosen <= 40 and loss[chosen + 1] < loss[chosen]
    noisy_start = [5.0, 0.1, 9.0, *loss[3:]]  # the first ten steps never win
    assert suggestion(lrs, noisy_start) == chosen
    assert suggestion(lrs[:12], loss[:12]) is None  # too few points after the skip
    with_nan = [*loss[:30], math.nan, *loss[31:]]
    assert suggestion(lrs, with_nan) == chosen
