"""Multi-fidelity evaluation that works for multi-objective studies (Optuna's pruners do not).

A trial's cost metrics (latency, size: no data rows) are measured first; then its data metrics on a
first slice of the validation rows. If even the slice's optimistic value (the upper end of the 95%
interval for a metric to maximise) at the trial's measured cost is dominated by a point of the current
Pareto front, a full evaluation could not have put the trial on the front (with 97.5% confidence), so
the trial stops, pruned with that reason. Survivors are then scored on every validation row by the
same evaluator and cache key as without this rule: their values are exactly what they would have been.
"""

from __future__ import annotations

from typing import Any

from autotune.records import ObjectiveSpec, TrialRecord
from autotune.selection.pareto import dominates

__all__ = ["FidelityRule", "SliceStopped", "optimistic_point"]


class SliceStopped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def optimistic_point(objectives: list[ObjectiveSpec], values: dict[str, Any]) -> list[float] | None:
    """The objective vector with each data metric at its optimistic bound; None when one has no bound."""
    point = []
    for o in objectives:
        metric = values[o.metric]
        if getattr(metric, "ci_high", None) is None and o.kind == "accuracy":
            return None
        value = (metric.ci_high if o.higher_is_better else metric.ci_low) if o.kind == "accuracy" else metric.value
        if value is None:
            return None
        point.append(float(value))
    return point


def front_that_dominates(point: list[float], objectives: list[ObjectiveSpec], front: list[TrialRecord]) -> TrialRecord | None:
    maximize = [o.higher_is_better for o in objectives]
    for record in front:
        known = all(o.metric in record.objectives for o in objectives)
        if known and dominates([record.objectives[o.metric] for o in objectives], point, maximize):
            return record
    return None


class FidelityRule:
    """Evaluates a trial's model in two stages when a front exists; see the module's docstring."""

    def __init__(self, ctx: Any, evaluator: Any, config: Any, objectives: list[ObjectiveSpec]) -> None:
        self.ctx = ctx
        self.evaluator = evaluator
        self.config = config
        self.objectives = objectives

    def _slice_rows(self, total: int) -> int:
        share = self.config.first_rows
        rows = int(share) if share >= 1 else round(total * share)
        return max(self.config.min_rows, rows)

    def evaluate(self, model: Any, front: list[TrialRecord]) -> dict[str, Any]:
        """Every metric of ``model`` (raises :class:`SliceStopped` when the slice rules the trial out)."""
        data_metrics = self.evaluator.data_metric_indices()
        if not front or not data_metrics:
            return self.evaluator.evaluate(model)
        others = set(range(len(self.evaluator.evaluator.metrics))) - data_metrics
        costs = self.evaluator.evaluate(model, only=others) if others else {}
        sliced = self._sliced_evaluator()
        if sliced is not None:
            first = sliced.evaluate(model, only=data_metrics)
            point = optimistic_point(self.objectives, {**costs, **first})
            winner = front_that_dominates(point, self.objectives, front) if point is not None else None
            if winner is not None:
                n = next((m.n for m in first.values() if getattr(m, "n", None)), None)
                shown = ", ".join(f"{o.metric} {v:.4g}" for o, v in zip(self.objectives, point))
                raise SliceStopped(f"on the first {n} validation rows, even the optimistic point ({shown}, upper 95% bound "
                                   f"for accuracy) is dominated by trial {winner.number} of the Pareto front")
        full = self.evaluator.evaluate(model, only=data_metrics)
        return {spec.key: {**costs, **full}[spec.key] for spec in self.evaluator.specs}

    def _sliced_evaluator(self) -> Any:
        """The same evaluator reading only the first rows of each validation split (its own cache keys)."""
        pipeline = self.ctx.pipeline
        evaluator = self.ctx.evaluator()

        def first_rows(name: str) -> Any:
            data = pipeline.data(name)
            rows = self._slice_rows(len(data.eval))
            return data.with_eval(data.eval[:rows], f"first:{rows}")

        sizes = [len(pipeline.data(n).eval) for n in evaluator.data_names()]
        if not sizes or all(self._slice_rows(n) >= n for n in sizes):
            return None  # too few rows for a slice to save anything
        evaluator.data_loader = first_rows
        return evaluator
