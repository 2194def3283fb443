"""Goals on metrics, resolved against the baseline into bounds and Optuna constraint values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Bound(BaseModel):
    """A goal resolved to a bound: ``metric`` must be >= ``value`` (higher is better) or <= it. One type for the
    search's constraints, the study's stored bounds (``autotune.records`` keeps it as it is) and the reports."""

    # Frozen: a resolved goal does not change; extra fields a newer autotune stored are kept, not refused.
    model_config = ConfigDict(frozen=True, extra="allow")
    metric: str
    value: float
    higher_is_better: bool
    goal: str = ""

    def violation(self, measured: float) -> float:
        """Optuna's constraint value: <= 0 when met, else by how much it misses."""
        return self.value - measured if self.higher_is_better else measured - self.value

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:.4g} ({self.goal})"


def resolve_goal(metric: str, goal_type: str, value: float, higher_is_better: bool, baseline: float | None) -> Bound:
    """Turn a goal into a bound; relative goals need the baseline's value of the metric."""
    if goal_type == "threshold":
        return Bound(metric=metric, value=value, higher_is_better=higher_is_better, goal=f"threshold {value}")
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
    return Bound(metric=metric, value=bound, higher_is_better=higher_is_better, goal=f"{goal_type} {value} vs baseline {baseline:.4g}")
