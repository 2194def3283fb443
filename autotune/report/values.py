"""The one value a trial shows for a metric, with its interval: every figure, table and the model card read it
here, so that no two of them can show a trial in two places (issue 28).

A latency re-measured after the study (:func:`autotune.search.final.remeasure_latency`) replaces the value
measured during it, as in selection (:func:`autotune.selection.pareto.current_objectives`); the first value
stays in the re-measured metric's ``details.first_value``.
"""

from __future__ import annotations

import math

from autotune.records import MetricValue, TrialRecord

__all__ = ["IntervalError", "check_interval", "shown_metric", "shown_value"]


class IntervalError(ValueError):
    """A metric's value lies outside its own 95 % interval: a bug upstream, refused rather than published."""


def shown_metric(record: TrialRecord, key: str) -> MetricValue | None:
    """The measurement of ``key`` a trial is shown (and ranked) by: the re-measured one where there is one,
    else the one measured during the study; None when the trial has neither."""
    again = record.remeasured.get(key)
    if again is None:
        return record.metrics.get(key)
    if again.ci_low is not None and "round_intervals" not in again.details:
        # Stored before the re-measure kept its own interval: that one is the first round's, not the median's.
        again = again.model_copy(update={"ci_low": None, "ci_high": None})
    return again


def shown_value(record: TrialRecord, key: str) -> float | None:
    """The value of :func:`shown_metric`, else the stored objective (a record without the metric itself)."""
    metric = shown_metric(record, key)
    return metric.value if metric is not None else record.objectives.get(key)


def check_interval(where: str, value: float, low: float | None, high: float | None) -> None:
    """Refuse (:class:`IntervalError`) a value outside its own interval ``[low, high]``; no interval passes."""
    if low is None or high is None:
        return
    slack = 1e-9 * max(1.0, abs(value))  # rounding in storage, not a real miss
    if math.isnan(value) or not (low - slack <= value <= high + slack):
        raise IntervalError(f"{where}: value {value:.6g} lies outside its own 95% interval [{low:.6g}, {high:.6g}]")
