"""Objectives and constraints from the evaluator's sub-types.

Sub-types with ``priority > 0`` are objectives, ordered by priority (Olive's convention: priority -1
tracks a metric without optimising it); directions come from ``higher_is_better``. Goals become
constraints through Optuna's constraints API: a trial that misses one is infeasible and never enters
the Pareto set.
"""

from __future__ import annotations

from autotune.errors import ConfigError
from autotune.evaluation.goals import Bound
from autotune.evaluation.runner import MetricSpec
from autotune.records import ObjectiveSpec, read_constraints


def objectives_from(specs: list[MetricSpec], *, where: str) -> list[ObjectiveSpec]:
    """The study's objectives (the stored type: one per concept), in priority order."""
    chosen = sorted((s for s in specs if s.priority > 0), key=lambda s: s.priority)
    if not chosen:
        raise ConfigError(where, "no metric has priority > 0, so the study has nothing to optimise")
    return [ObjectiveSpec(metric=s.key, higher_is_better=s.higher_is_better, unit=s.unit, kind=s.kind, label=s.label) for s in chosen]


def constraint_values(bounds: list[Bound], metrics: dict[str, float]) -> dict[str, float]:
    """Violation per bounded metric (<= 0 feasible)."""
    return {b.metric: b.violation(metrics[b.metric]) for b in bounds if b.metric in metrics}


class ConstraintsFunc:
    """Optuna's constraints_func: the violations the objective stored on the trial.

    A trial stopped before it was measured (pruned) counts as infeasible on every constraint.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, trial: object) -> list[float]:
        values = read_constraints(trial)
        return values if values and len(values) == self.n else [1.0] * self.n
