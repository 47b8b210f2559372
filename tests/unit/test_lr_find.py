"""``lr_find=true|apply``: the range test's rates, its smoothing and the rule of its suggestion."""

from __future__ import annotations

import itertools
import math

import pytest

from trainrun.tools.lr_find import minimum, schedule, smoothing, suggestion


def test_the_rates_grow_exponentially_from_min_to_max():
    lrs = schedule(1e-8, 1.0, 100)
    assert lrs[0] == 1e-8 and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert max(ratios) == pytest.approx(min(ratios))  # evenly spaced on a log axis


def test_the_suggestion_is_the_steepest_descent_a_decade_below_the_minimum():
    lrs = schedule(1e-8, 1.0, 100)  # 12.5 steps per decade
    # flat until 1e-4 (step 50), a slow fall, the steepest fall around 1e-2 (steps 69-75), a
    # minimum at 0.39 (step 95), then a blow-up
    loss = [2.0] * 50 + [2.0 - 0.01 * i for i in range(19)] + [1.8 - 0.15 * i for i in range(7)] \
        + [0.75 - 0.02 * i for i in range(19)] + [0.4 + 0.5 * i for i in range(5)]
    assert minimum(loss) == 94
    chosen = suggestion(lrs, loss)
    assert lrs[94] / 100 <= lrs[chosen] <= lrs[94] / 10  # well before the minimum
    assert 69 <= chosen <= 75 and loss[chosen + 1] < loss[chosen]
    noisy_start = [5.0, 0.1, 9.0, 0.05, *loss[4:]]  # the first tenth is never the minimum
    assert suggestion(lrs, noisy_start) == chosen
    with_nan = [*loss[:60], math.nan, *loss[61:]]
    assert suggestion(lrs, with_nan) == chosen
    assert suggestion(lrs, [2.0 + 0.01 * i for i in range(100)]) is None  # the loss never fell
    assert suggestion(lrs[:12], loss[:12]) is None


def test_the_smoothing_spans_a_tenth_of_the_test():
    assert smoothing(100) == pytest.approx(0.9)
    assert smoothing(300) == pytest.approx(1 - 1 / 30)
    assert smoothing(5) == 0.0  # shorter than ten steps: the raw losses
