"""Repeats to a stated precision: a distribution-free interval of the median and the stopping rule.

Standard library only: the latency process imports it after reading its baseline memory.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

__all__ = ["median_ci", "precise_enough", "repeat_until_precise"]


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval of the median: order statistics x_(k) and x_(n+1-k) with k the largest
    rank whose binomial(n, 1/2) tail P(X < k) is at most (1 - confidence) / 2. None below the sample size
    that has such an interval at all (n < 6 for 95 %)."""
    n = len(values)
    ordered = sorted(values)
    alpha = (1 - confidence) / 2
    tail, k = 0.0, 0
    for j in range(n // 2 + 1):  # tail = P(X <= j - 1) = P(X < j)
        if tail > alpha:
            break
        k = j
        tail += math.comb(n, j) / 2**n
    if k < 1:
        return None
    return ordered[k - 1], ordered[n - k]


def precise_enough(values: list[float], precision: float) -> bool:
    """Whether the median's 95 % interval lies within +-``precision`` (relative) of the median."""
    interval = median_ci(values)
    if interval is None:
        return False
    median = statistics.median(values)
    return median > 0 and max(median - interval[0], interval[1] - median) <= precision * median


def repeat_until_precise(measure_once: Callable[[], float], *, min_repeats: int, max_repeats: int, max_seconds: float,
                         precision: float, clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], str]:
    """Call ``measure_once`` (one repeat's value) at least ``min_repeats`` times, then until the values'
    median is known to ``precision`` (:func:`precise_enough`) or a cap is reached; returns the values and
    why it stopped ("precise", "max_repeats", "max_seconds", or "fixed" when ``precision`` is 0)."""
    values: list[float] = []
    began = clock()
    while True:
        values.append(measure_once())
        if len(values) < min_repeats:
            continue
        if precision <= 0:
            return values, "fixed"
        if precise_enough(values, precision):
            return values, "precise"
        if len(values) >= max_repeats:
            return values, "max_repeats"
        if clock() - began >= max_seconds:
            return values, "max_seconds"
