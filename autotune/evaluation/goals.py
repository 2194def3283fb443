"""Goals on metrics, resolved against the baseline into bounds and Optuna constraint values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """The metric must be >= value (higher_is_better) or <= value (lower is better)."""

    metric: str
    value: float
    higher_is_better: bool
    goal: str

    def violation(self, measured: float) -> float:
        """Optuna's constraint value: <= 0 when met, else by how much it misses."""
        return self.value - measured if self.higher_is_better else measured - self.value

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:.4g} ({self.goal})"


def resolve_goal(metric: str, goal_type: str, value: float, higher_is_better: bool, baseline: float | None) -> Bound:
    """Turn a goal into a bound; relative goals need the baseline's value of the metric."""
    if goal_type == "threshold":
        return Bound(metric, value, higher_is_better, f"threshold {value}")
    if baseline is None:
        raise ValueError(f"goal '{goal_type}' on {metric} needs the baseline, which was not evaluated")
    sign = 1 if higher_is_better else -1
    if goal_type == "min-improvement":
        bound = baseline + sign * value
    elif goal_type == "max-degradation":
        bound = baseline - sign * value
    elif goal_type == "percent-min-improvement":
        bound = baseline * (1 + sign * value / 100)
    elif goal_type == "percent-max-degradation":
        bound = baseline * (1 - sign * value / 100)
    else:
        raise ValueError(f"unknown goal type {goal_type}")
    return Bound(metric, bound, higher_is_better, f"{goal_type} {value} vs baseline {baseline:.4g}")
