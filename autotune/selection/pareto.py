"""The Pareto set over a study's feasible completed trials."""

from __future__ import annotations

from autotune.records import StudyView, TrialRecord

__all__ = ["dominates", "pareto_indices", "pareto_set"]


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    """a dominates b: no worse in every objective and better in at least one."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        if (x > y) if up else (x < y):
            better = True
    return better


def pareto_indices(points: list[list[float]], maximize: list[bool]) -> list[int]:
    """Indices of the non-dominated points (identical points are all kept), in input order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)]


def pareto_set(view: StudyView) -> list[TrialRecord]:
    feasible = [r for r in view.completed() if r.feasible is not False]
    maximize = [o.higher_is_better for o in view.objectives]
    points = [[r.objectives[o.metric] for o in view.objectives] for r in feasible]
    return [feasible[i] for i in pareto_indices(points, maximize)]
