"""Goals resolve against the baseline in the metric's direction."""

from __future__ import annotations

import pytest

from autotune.evaluation.goals import resolve_goal
from autotune.evaluation.metrics import wilson_interval


@pytest.mark.parametrize(("goal", "value", "higher", "baseline", "bound"), [
    ("threshold", 0.8, True, None, 0.8),
    ("min-improvement", 0.05, True, 0.70, 0.75),
    ("max-degradation", 0.05, True, 0.70, 0.65),
    ("percent-min-improvement", 10, True, 0.50, 0.55),
    ("percent-max-degradation", 10, True, 0.50, 0.45),
    ("min-improvement", 5, False, 40.0, 35.0),  # latency must drop by 5 ms
    ("max-degradation", 5, False, 40.0, 45.0),  # latency may rise by 5 ms
    ("percent-min-improvement", 20, False, 40.0, 32.0),
    ("percent-max-degradation", 20, False, 40.0, 48.0),
])
def test_goal_bounds(goal: str, value: float, higher: bool, baseline: float | None, bound: float) -> None:
    resolved = resolve_goal("m", goal, value, higher, baseline)
    assert resolved.value == pytest.approx(bound)
    inside = bound + (0.01 if higher else -0.01)
    outside = bound - (0.01 if higher else -0.01)
    assert resolved.violation(inside) < 0 < resolved.violation(outside)


def test_relative_goal_without_baseline_is_an_error() -> None:
    with pytest.raises(ValueError, match="baseline"):
        resolve_goal("m", "max-degradation", 0.05, True, None)


def test_wilson_interval_is_honest_at_small_n() -> None:
    low, high = wilson_interval(36, 40)
    assert low < 0.9 < high and high - low > 0.15  # 40 items cannot pin accuracy within 15 points
    low, high = wilson_interval(270, 300)
    assert high - low < 0.08
    assert wilson_interval(0, 10)[0] == 0.0
