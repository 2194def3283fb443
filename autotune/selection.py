"""Pareto set over a study's feasible completed trials, and the policies that pick one model.

Everything here reads the study storage alone (trial records, objectives, bounds, baseline), so
``autotune report`` and ``autotune select`` work without rerunning anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autotune.search.records import TrialRecord, read_record

POLICIES = ("max-accuracy", "min-latency", "knee", "weighted")


@dataclass
class StudyView:
    """What the storage holds about a study, in plain Python."""

    name: str
    objectives: list[dict[str, Any]]  # {metric, higher_is_better, unit}
    bounds: list[dict[str, Any]]  # {metric, value, higher_is_better, goal}
    baseline: dict[str, dict[str, Any]]
    records: list[TrialRecord]
    config: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    study: Any = None  # the optuna Study it came from (for importance), if any

    @classmethod
    def load(cls, study: Any) -> StudyView:
        attrs = study.user_attrs
        return cls(
            name=study.study_name,
            objectives=attrs.get("objectives", []),
            bounds=attrs.get("bounds", []),
            baseline=attrs.get("autotune_baseline", {}),
            records=[read_record(t) for t in study.get_trials(deepcopy=False)],
            config=attrs.get("config", {}),
            provider=attrs.get("provider", ""),
            study=study,
        )

    def completed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.state == "COMPLETE" and r.objectives]


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
    maximize = [o["higher_is_better"] for o in view.objectives]
    points = [[r.objectives[o["metric"]] for o in view.objectives] for r in feasible]
    return [feasible[i] for i in pareto_indices(points, maximize)]


@dataclass
class Selection:
    record: TrialRecord | None
    policy: str
    rule: str
    feasible: bool = True
    missed_by: dict[str, float] = field(default_factory=dict)


def _normalised(records: list[TrialRecord], objectives: list[dict[str, Any]]) -> list[list[float]]:
    """Each objective scaled to [0, 1] over ``records``, 1 being best."""
    out = [[0.0] * len(objectives) for _ in records]
    for j, o in enumerate(objectives):
        values = [r.objectives[o["metric"]] for r in records]
        low, high = min(values), max(values)
        for i, v in enumerate(values):
            scaled = 1.0 if high == low else (v - low) / (high - low)
            out[i][j] = scaled if o["higher_is_better"] else 1.0 - scaled
    return out


def _first(objectives: list[dict[str, Any]], *, higher: bool, units: tuple[str, ...] = ()) -> dict[str, Any] | None:
    for o in objectives:
        if o["higher_is_better"] == higher and (not units or o.get("unit") in units):
            return o
    return None


def _tiebreak(record: TrialRecord, objectives: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Sort key: objectives in priority order (best first), then the lower trial number."""
    return (*[-(record.objectives[o["metric"]]) if o["higher_is_better"] else record.objectives[o["metric"]] for o in objectives],
            record.number)


def select(view: StudyView, *, policy: str = "max-accuracy", min_accuracy: float | None = None,
           latency_budget_ms: float | None = None, weights: dict[str, float] | None = None) -> Selection:
    """Pick one trial from the feasible Pareto set by ``policy``; deterministic, with its rule in words."""
    if policy not in POLICIES:
        from autotune.errors import ConfigError

        raise ConfigError("selection.policy", f"expected one of {', '.join(POLICIES)}, got \"{policy}\"")
    objectives = view.objectives
    accuracy = _first(objectives, higher=True)
    latency = _first(objectives, higher=False, units=("ms", "ms/token")) or _first(objectives, higher=False)
    candidates = pareto_set(view)
    notes = []
    if min_accuracy is not None and accuracy:
        candidates = [r for r in candidates if r.objectives[accuracy["metric"]] >= min_accuracy]
        notes.append(f"{accuracy['metric']} >= {min_accuracy}")
    if latency_budget_ms is not None and latency:
        candidates = [r for r in candidates if r.objectives[latency["metric"]] <= latency_budget_ms]
        notes.append(f"{latency['metric']} <= {latency_budget_ms} ms")
    if not candidates:
        return least_infeasible(view, policy, extra=notes)
    where = f"among {len(candidates)} feasible Pareto trial(s)" + (f" with {' and '.join(notes)}" if notes else "")
    if policy == "max-accuracy" or (policy == "min-latency" and latency is None):
        order = [accuracy] + [o for o in objectives if o is not accuracy] if accuracy else objectives
        best = min(candidates, key=lambda r: _tiebreak(r, order))
        others = ", ".join(o["metric"] for o in order[1:]) or "nothing else"
        rule = f"highest {order[0]['metric']} {where}; ties broken by {others}, then lower trial number"
    elif policy == "min-latency":
        order = [latency] + [o for o in objectives if o is not latency]
        best = min(candidates, key=lambda r: _tiebreak(r, order))
        rule = f"lowest {latency['metric']} {where}; ties broken by the other objectives, then lower trial number"
    elif policy == "knee":
        scaled = _normalised(candidates, objectives)
        dist = [math.dist(s, [1.0] * len(objectives)) for s in scaled]
        best = min(zip(dist, [r.number for r in candidates], candidates), key=lambda t: (t[0], t[1]))[2]
        rule = f"closest to the ideal point after scaling each objective to [0, 1] {where}; ties: lower trial number"
    else:
        weights = weights or {o["metric"]: 1.0 for o in objectives}
        scaled = _normalised(candidates, objectives)
        score = [sum(weights.get(o["metric"], 0.0) * s[j] for j, o in enumerate(objectives)) for s in scaled]
        best = max(zip(score, [-r.number for r in candidates], candidates), key=lambda t: (t[0], t[1]))[2]
        rule = f"highest weighted sum of scaled objectives (weights {weights}) {where}; ties: lower trial number"
    return Selection(record=best, policy=policy, rule=rule)


def least_infeasible(view: StudyView, policy: str, extra: list[str] | None = None) -> Selection:
    """No trial met the constraints: the one that missed by the least (relative to each bound)."""
    completed = view.completed()
    if not completed:
        return Selection(record=None, policy=policy, rule="no trial completed", feasible=False)
    bounds = list(view.bounds)
    accuracy = _first(view.objectives, higher=True)

    def miss(r: TrialRecord) -> tuple[float, int]:
        total = 0.0
        for b in bounds:
            violation = r.constraints.get(b["metric"], 0.0)
            total += max(0.0, violation) / (abs(b["value"]) or 1.0)
        return total, r.number

    best = min(completed, key=miss)
    missed = {b["metric"]: best.constraints.get(b["metric"], 0.0) for b in bounds if best.constraints.get(b["metric"], 0.0) > 0}
    if extra and not missed and accuracy:
        rule = f"no trial met {' and '.join(extra)}; exported trial {best.number}, the nearest"
    else:
        text = ", ".join(f"{m} by {v:.4g}" for m, v in missed.items())
        rule = f"no trial met the constraints; exported trial {best.number}, which missed by the least ({text})"
    return Selection(record=best, policy=policy, rule=rule, feasible=False, missed_by=missed)
