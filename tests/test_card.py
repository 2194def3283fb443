"""The model card shows each metric once, with the interval of the value shown, and names a split only for
the metrics measured on one (issue 28)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from autotune.card import card_markdown, model_card
from autotune.records import MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord
from autotune.report.values import IntervalError
from autotune.selection import Selection

# Metric names that are not their types, so the card must read the evaluator config to tell rows from no split.
ACC, LAT, SIZE, MEM = "acc-accuracy", "speed-decode_ms_per_token_p50", "disk-size_mb", "disk-peak_rss_mb"
EVALUATOR = {"metrics": [
    {"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}]},
    {"name": "speed", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50"}]},
    {"name": "disk", "type": "footprint", "sub_types": [{"name": "size_mb"}, {"name": "peak_rss_mb"}]},
]}


def card() -> dict[str, Any]:
    latency = MetricValue(value=9.1, unit="ms/token", higher_is_better=False, name="decode_ms_per_token_p50",
                          label="decode p50 (ms/token)", ci_low=8.865, ci_high=9.210)
    again = latency.model_copy(update={"value": 9.998, "ci_low": 8.865, "ci_high": 10.4, "details": {
        "rounds": [9.0, 9.998, 10.1], "spread": 1.1, "interleaved": True, "first_value": 9.1,
        "round_intervals": [[8.865, 9.21], [9.8, 10.2], [9.9, 10.4]]}})
    accuracy = MetricValue(value=0.9, unit="ratio", name="accuracy", label="accuracy", n=200, ci_low=0.85, ci_high=0.93)
    record = TrialRecord(number=0, state="COMPLETE", feasible=True, objectives={ACC: 0.9, LAT: 9.1},
                         metrics={ACC: accuracy, LAT: latency,
                                  SIZE: MetricValue(value=90.0, unit="MB", higher_is_better=False, name="size_mb", label="size"),
                                  MEM: MetricValue(value=400.0, unit="MB", higher_is_better=False, name="peak_rss_mb", label="memory")},
                         test_metrics={ACC: accuracy.model_copy(update={"value": 0.88, "ci_low": 0.83, "ci_high": 0.92})},
                         remeasured={LAT: again})
    objectives = [ObjectiveSpec(metric=ACC, higher_is_better=True, kind="accuracy"),
                  ObjectiveSpec(metric=LAT, higher_is_better=False, kind="latency")]
    view = StudyView("s", StudyMeta(objectives=objectives, config={"engine": {"evaluator": "ev"}, "evaluators": {"ev": EVALUATOR}}),
                     [record])
    return model_card(view, Selection(record=record, policy="max-accuracy", rule="highest accuracy"), reproduce={})


def row(markdown: str, label: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))


def test_the_metric_table_shows_the_interval_of_the_value_shown() -> None:
    text = card_markdown(card())
    assert "| 9.998 ms/token [8.865, 10.400] (re-measured, spread 1.1) |" in row(text, "decode p50 (ms/token)")
    assert "[8.865, 9.210]" not in text  # the first measurement's interval belongs to 9.1, which the card does not show


def test_the_card_writer_refuses_a_value_outside_its_own_interval() -> None:
    broken = card()
    broken["metrics"][LAT].update(ci_low=8.865, ci_high=9.210)  # 9.998 beside the first measurement's interval
    with pytest.raises(IntervalError, match=r"metrics\.speed-decode_ms_per_token_p50: value 9\.998 lies outside"):
        card_markdown(broken)


def test_the_front_matter_names_a_split_only_for_metrics_measured_on_one() -> None:
    front = yaml.safe_load(card_markdown(card()).split("---\n")[1])
    names = {(m["type"], m["name"]): m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert names == {("accuracy", "accuracy (validation)"): 0.9, ("accuracy", "accuracy (test)"): 0.88,
                     ("decode_ms_per_token_p50", "decode p50 (ms/token)"): 9.998,  # the value the table shows
                     ("size_mb", "size"): 90.0, ("peak_rss_mb", "memory"): 400.0}
