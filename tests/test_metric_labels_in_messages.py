"""Messages name metrics by the labels the trials table shows ("decode p50 (ms/token)"), never by their
ids ("latency-decode_ms_per_token_p50"), which stay in the CSV columns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import autotune
from autotune.records import BoundSpec, MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord
from autotune.selection import select
from tests.search.test_study import study_config

ACC, LAT, SIZE = "accuracy-accuracy", "latency-decode_ms_per_token_p50", "footprint-size_mb"
OBJECTIVES = [ObjectiveSpec(metric=ACC, higher_is_better=True, unit="ratio", kind="accuracy", label="accuracy"),
              ObjectiveSpec(metric=LAT, higher_is_better=False, unit="ms/token", kind="latency", label="decode p50 (ms/token)")]
IDS = (ACC, LAT, SIZE)


def view(points: list[tuple[float, float, float]], bounds: list[BoundSpec] | None = None) -> StudyView:
    records = []
    for i, (acc, lat, size) in enumerate(points):
        constraints = {b.metric: (size - b.value) for b in bounds or []}
        records.append(TrialRecord(number=i, state="COMPLETE", objectives={ACC: acc, LAT: lat}, constraints=constraints,
                                   feasible=all(v <= 0 for v in constraints.values()),
                                   metrics={SIZE: MetricValue(value=size, unit="MB", higher_is_better=False, label="size on disk (MB)")}))
    return StudyView("s", StudyMeta(objectives=OBJECTIVES, bounds=bounds or []), records)


POINTS = [(0.90, 20.0, 80.0), (0.80, 10.0, 60.0), (0.70, 5.0, 40.0)]


def no_ids(text: str) -> bool:
    return not any(metric_id in text for metric_id in IDS)


def test_max_accuracy_explains_itself_with_labels() -> None:
    rule = select(view(POINTS), policy="max-accuracy").rule
    assert "highest accuracy; ties broken by decode p50 (ms/token), then lower trial number" in rule and no_ids(rule), rule


def test_min_latency_and_its_accuracy_floor_explain_themselves_with_labels() -> None:
    rule = select(view(POINTS), policy="min-latency", min_accuracy=0.75).rule
    assert "lowest decode p50 (ms/token)" in rule and "with accuracy >= 0.75" in rule and no_ids(rule), rule


def test_weighted_names_its_weights_by_label() -> None:
    rule = select(view(POINTS), policy="weighted", weights={ACC: 1.0, LAT: 0.5}).rule
    assert "weights: accuracy 1, decode p50 (ms/token) 0.5" in rule and no_ids(rule), rule


def test_a_missed_filter_and_a_missed_bound_are_named_by_label() -> None:
    nearest = select(view(POINTS), policy="max-accuracy", min_accuracy=0.95)
    assert "accuracy by 0.05" in nearest.rule and no_ids(nearest.rule), nearest.rule
    assert nearest.missed_by == {ACC: pytest.approx(0.05)}  # the data keeps the ids
    # A bound on a metric that is no objective: its label comes from the trials' measurements.
    infeasible = select(view(POINTS, bounds=[BoundSpec(metric=SIZE, value=30.0, higher_is_better=False)]), policy="max-accuracy")
    assert "size on disk (MB) by 10" in infeasible.rule and no_ids(infeasible.rule), infeasible.rule


def test_a_study_prints_each_trial_and_its_selection_with_labels(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    config = study_config(tiny_model, tone_file, tmp_path, max_samples=1)
    with caplog.at_level(logging.INFO, logger="autotune"):
        result = autotune.run(config)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial 0: ") and " in " in r.getMessage()]
    assert any(line.startswith("trial 0: accuracy ") and ", decode p50 (ms/token) " in line for line in lines), lines
    assert all(no_ids(line) for line in lines), lines
    assert "highest accuracy; ties broken by decode p50 (ms/token)" in result.selection.rule and no_ids(result.selection.rule)
