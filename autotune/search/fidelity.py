"""Multi-fidelity evaluation that works for multi-objective studies (Optuna's pruners do not).

A trial's cost metrics (latency, size: no data rows) are measured first; then its data metrics on a
first slice of the validation rows. A slice metric is a pruning ground only when its evaluator gives
per-row 0/1 outcomes whose mean is its value, with an interval (accuracy does; macro F1, perplexity and
a custom metric do not): its optimistic value is the exact (Clopper-Pearson) one-sided bound at level
``1 - ALPHA / 2`` from those outcomes. If that optimistic point, at the trial's measured cost, is
dominated by a point of the current Pareto front, the trial stops, pruned with that reason; a trial
with a data metric that is not a pruning ground always gets the full evaluation.

Error rate: the bound is below the trial's true value with probability at most ``ALPHA / 2`` (2.5 %)
for every slice size and accuracy, so a trial whose full evaluation the front would not dominate is
pruned with probability at most ``ALPHA / 2`` per data objective (a union bound over several).
Survivors are scored on every validation row by the same evaluator and cache key as without this
rule: their values are exactly what they would have been.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from autotune.records import ObjectiveSpec, TrialRecord
from autotune.selection.pareto import dominates

if TYPE_CHECKING:
    from autotune.config.schema import MultiFidelityConfig
    from autotune.evaluation.runner import ModelEvaluator
    from autotune.run_context import RunContext

__all__ = ["ALPHA", "FidelityRule", "SliceStopped", "exact_bound", "front_that_dominates", "optimistic_point", "slice_rules_out"]

# The slice's bound is one-sided at 1 - ALPHA/2 (the end of a two-sided 95 % interval).
ALPHA = 0.05


class SliceStopped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no overflow at thousands of rows)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return min(1.0, math.fsum(math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
                              for i in range(k + 1)))


@lru_cache(maxsize=4096)
def exact_bound(successes: int, n: int, *, upper: bool, alpha: float = ALPHA) -> float:
    """Clopper-Pearson one-sided bound at level ``1 - alpha/2`` for a proportion: P(bound < p) <= alpha/2
    (upper) or P(bound > p) <= alpha/2 (lower), for every n and p."""
    if not 0 <= successes <= n or n <= 0:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    tail = alpha / 2
    if upper and successes == n:
        return 1.0
    if not upper and successes == 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection to ~1e-18
        mid = (low + high) / 2
        if upper:  # the largest p with P(X <= successes | p) >= tail
            low, high = (mid, high) if _binomial_cdf(successes, n, mid) > tail else (low, mid)
        else:  # the smallest p with P(X >= successes | p) >= tail
            low, high = (low, mid) if 1.0 - _binomial_cdf(successes - 1, n, mid) > tail else (mid, high)
    return high if upper else low


def _outcomes(metric: Any) -> tuple[int, int] | None:
    """(successes, rows) when ``metric`` carries an interval and per-row 0/1 outcomes whose mean is its value."""
    if getattr(metric, "ci_low", None) is None or getattr(metric, "ci_high", None) is None:
        return None
    correct = (getattr(metric, "details", None) or {}).get("correct")
    if not isinstance(correct, str) or not correct or set(correct) - {"0", "1"}:
        return None
    successes, rows = correct.count("1"), len(correct)
    return (successes, rows) if math.isclose(successes / rows, float(metric.value), abs_tol=1e-9) else None


def optimistic_point(objectives: list[ObjectiveSpec], *, costs: dict[str, Any], sliced: dict[str, Any]) -> list[float] | None:
    """The objective vector with each slice metric at its optimistic exact bound and each cost metric at
    its value; None when a slice metric is no pruning ground (no interval or per-row outcomes)."""
    point = []
    for o in objectives:
        if o.metric in sliced:
            outcomes = _outcomes(sliced[o.metric])
            if outcomes is None:
                return None
            point.append(exact_bound(*outcomes, upper=o.higher_is_better))
        elif o.metric in costs and costs[o.metric].value is not None:
            point.append(float(costs[o.metric].value))
        else:
            return None
    return point


def front_that_dominates(point: list[float], objectives: list[ObjectiveSpec], front: list[TrialRecord]) -> TrialRecord | None:
    maximize = [o.higher_is_better for o in objectives]
    for record in front:
        known = all(o.metric in record.objectives for o in objectives)
        if known and dominates([record.objectives[o.metric] for o in objectives], point, maximize):
            return record
    return None


def slice_rules_out(objectives: list[ObjectiveSpec], *, costs: dict[str, Any], sliced: dict[str, Any],
                    front: list[TrialRecord]) -> str | None:
    """Why the slice rules the trial out (the front's point that dominates its optimistic point), or None."""
    point = optimistic_point(objectives, costs=costs, sliced=sliced)
    winner = front_that_dominates(point, objectives, front) if point is not None else None
    if winner is None:
        return None
    n = next((m.n for m in sliced.values() if getattr(m, "n", None)), None)
    shown = ", ".join(f"{o.label or o.metric} {v:.4g}" for o, v in zip(objectives, point))
    return (f"on the first {n} validation rows, even the optimistic point ({shown}; exact one-sided "
            f"{100 * (1 - ALPHA / 2):g}% bound for the slice's metrics) is dominated by trial {winner.number} of the Pareto front")


class FidelityRule:
    """Evaluates a trial's model in two stages when a front exists; see the module's docstring."""

    def __init__(self, ctx: RunContext, evaluator: ModelEvaluator, config: MultiFidelityConfig,
                 objectives: list[ObjectiveSpec]) -> None:
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
        others = self.evaluator.metric_indices() - data_metrics
        costs = self.evaluator.evaluate(model, only=others) if others else {}
        sliced = self._sliced_evaluator()
        if sliced is not None:
            reason = slice_rules_out(self.objectives, costs=costs, sliced=sliced.evaluate(model, only=data_metrics), front=front)
            if reason is not None:
                raise SliceStopped(reason)
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
