"""The trials table (pandas): one row per trial, built from trial records alone."""

from __future__ import annotations

from typing import Any

from autotune.records import TrialRecord
from autotune.report.pass_views import pass_views
from autotune.report.values import shown_metric, shown_value


def trial_row(record: TrialRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"number": record.number, "state": record.state, "feasible": record.feasible}
    if record.base is not None:  # a study that searches the base model: the trial's base by its candidate name
        row["base"] = record.base
    for key, value in sorted(record.point.items()):
        row[f"param.{key}"] = value
    for view in pass_views(record):  # each pass's own columns (Pass.view), e.g. the blocks a depth pass removed
        row.update(view.columns)
    for key in record.metrics:
        # The value every figure and the card show (re-measured where it was), with that value's own interval.
        metric = shown_metric(record, key)
        assert metric is not None
        row[key] = metric.value
        if metric.ci_low is not None:
            row[f"{key}.ci_low"] = metric.ci_low
            row[f"{key}.ci_high"] = metric.ci_high
        row[f"{key}.flag"] = metric.flag  # always a column, so one table's schema never depends on its noise
    for key, metric in record.test_metrics.items():  # scored once, after the study: validation and test side by side
        row[f"test.{key}"] = metric.value
        shown = shown_value(record, key) if key in record.metrics else None
        if shown is not None:
            row[f"gap.{key}"] = metric.value - shown
    for key, metric in record.remeasured.items():  # how the value shown came about: the first value and the spread
        row[f"remeasured.{key}.first"] = record.metrics[key].value if key in record.metrics else metric.details.get("first_value")
        row[f"remeasured.{key}.spread"] = metric.details.get("spread")
    for p in record.passes:
        row[f"seconds.{p.name}"] = p.seconds
        row[f"cache_hit.{p.name}"] = p.cache_hit
    row["seconds.evaluation"] = record.evaluation_seconds
    row["seconds.orchestration"] = record.orchestration_seconds
    row["seconds.total"] = record.seconds
    for key, value in record.constraints.items():
        row[f"violation.{key}"] = value
    row["model_key"] = record.model_key
    # Trials of one structure key share their latency and memory measurement (autotune.evaluation.structure).
    row["structure_key"] = record.structure_key
    row["fail_reason"] = record.fail_reason
    row["prune_reason"] = record.prune_reason
    row["duplicate_of"] = record.duplicate_of
    row["log_file"] = record.log_file
    return row


def trials_frame(records: list[TrialRecord]) -> Any:
    import pandas as pd

    rows = [trial_row(r) for r in sorted(records, key=lambda r: r.number)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["number", "state", "feasible"])
    return frame
