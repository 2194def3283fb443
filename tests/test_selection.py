"""Pareto set and selection policies on hand-checked points; report and reproduce from storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from autotune.records import ObjectiveSpec, StudyMeta, StudyView, TrialRecord
from autotune.selection import Policy, PolicyOptions, pareto_indices, register_policy, select

OBJECTIVES = [
    {"metric": "acc", "higher_is_better": True, "unit": "ratio", "kind": "accuracy"},
    {"metric": "lat", "higher_is_better": False, "unit": "ms/token", "kind": "latency"},
]


def test_pareto_indices_hand_checked() -> None:
    points = [
        [0.90, 20.0],  # 0: best accuracy
        [0.80, 10.0],  # 1: trade-off
        [0.70, 5.0],  # 2: fastest
        [0.80, 12.0],  # 3: dominated by 1
        [0.80, 10.0],  # 4: duplicate of 1: both kept (neither dominates the other)
        [0.60, 5.0],  # 5: dominated by 2 (tie on latency, worse accuracy)
        [0.90, 25.0],  # 6: dominated by 0 (tie on accuracy, slower)
    ]
    assert pareto_indices(points, [True, False]) == [0, 1, 2, 4]


def view(points: list[tuple[float, float]], bounds: list[dict[str, Any]] | None = None, feasible: list[bool] | None = None) -> StudyView:
    records = []
    for i, (acc, lat) in enumerate(points):
        ok = True if feasible is None else feasible[i]
        records.append(TrialRecord(number=i, state="COMPLETE", objectives={"acc": acc, "lat": lat}, feasible=ok,
                                   constraints={"acc": 0.0 if ok else 0.8 - acc}))
    return StudyView("s", StudyMeta(objectives=[ObjectiveSpec(**o) for o in OBJECTIVES], bounds=bounds or []), records)


POINTS = [(0.90, 20.0), (0.80, 10.0), (0.70, 5.0), (0.80, 12.0), (0.90, 20.0)]


def test_max_accuracy_breaks_ties_by_latency_then_trial_number() -> None:
    chosen = select(view(POINTS), policy="max-accuracy")
    assert chosen.record is not None and chosen.record.number == 0  # 0 and 4 tie exactly: lower number
    assert "highest acc" in chosen.rule and "lower trial number" in chosen.rule


def test_min_latency_with_an_accuracy_floor() -> None:
    assert select(view(POINTS), policy="min-latency").record.number == 2  # type: ignore[union-attr]
    assert select(view(POINTS), policy="min-latency", min_accuracy=0.75).record.number == 1  # type: ignore[union-attr]


def test_knee_picks_the_point_closest_to_the_ideal() -> None:
    # scaled: acc (0.7..0.9) and lat (5..20): trial 1 = (0.5, 0.667) is nearest (1, 1)
    assert select(view(POINTS), policy="knee").record.number == 1  # type: ignore[union-attr]


def test_weighted_follows_the_weights() -> None:
    assert select(view(POINTS), policy="weighted", weights={"acc": 1.0, "lat": 0.0}).record.number == 0  # type: ignore[union-attr]
    assert select(view(POINTS), policy="weighted", weights={"acc": 0.0, "lat": 1.0}).record.number == 2  # type: ignore[union-attr]


class NthFastestOptions(PolicyOptions):
    rank: int = Field(1, ge=1)


@register_policy
class NthFastest(Policy):
    """A policy with a setting of its own, defined here as a user would: one class, nothing else edited."""

    name = "test-nth-fastest"
    help = "the rank-th fastest trial"
    Options = NthFastestOptions

    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        assert isinstance(self.options, NthFastestOptions)
        ranked = sorted(candidates, key=lambda r: (r.objectives["lat"], r.number))
        return ranked[min(self.options.rank, len(ranked)) - 1], f"number {self.options.rank} by latency"


def test_a_policy_s_own_setting_is_applied_from_the_config_and_the_api_and_refused_where_it_does_not_exist() -> None:
    from autotune.config.schema import SelectionConfig
    from autotune.errors import ConfigError

    assert select(view(POINTS), policy="test-nth-fastest").record.number == 2  # type: ignore[union-attr]
    assert select(view(POINTS), policy="test-nth-fastest", options={"rank": 2}).record.number == 1  # type: ignore[union-attr]
    assert SelectionConfig(policy="test-nth-fastest", options={"rank": 3}).options == {"rank": 3}
    with pytest.raises(ConfigError, match=r"^engine.selection.options.rank: policy 'knee' has no setting 'rank' \(its settings: none\)"):
        SelectionConfig(policy="knee", options={"rank": 3})
    with pytest.raises(ConfigError, match=r"^selection.options.rank: policy 'test-nth-fastest': Input should be greater than"):
        select(view(POINTS), policy="test-nth-fastest", options={"rank": 0})
    with pytest.raises(ConfigError, match="has no setting 'weights'"):  # the weights shorthand is the weighted policy's
        SelectionConfig(policy="test-nth-fastest", weights={"acc": 1.0})


def test_reselecting_with_another_policy_leaves_the_configured_policy_s_options_behind() -> None:
    from autotune.config.schema import RunConfig
    from autotune.finish import selection_settings

    config = RunConfig.model_validate({"input_model": {"model_path": "m"}, "engine": {"selection": {
        "policy": "weighted", "weights": {"acc": 1.0, "lat": 0.0}}}}).model_dump(mode="json")
    stored = StudyView("s", StudyMeta(objectives=[ObjectiveSpec(**o) for o in OBJECTIVES], config=config), view(POINTS).records)
    assert selection_settings(stored)["options"] == {"weights": {"acc": 1.0, "lat": 0.0}}
    assert selection_settings(stored, policy="knee")["options"] == {}
    assert selection_settings(stored, policy="test-nth-fastest", options={"rank": 2})["options"] == {"rank": 2}
    assert select(stored, **selection_settings(stored)).record.number == 0  # type: ignore[union-attr]


def test_latency_budget_filters_the_pareto_set() -> None:
    assert select(view(POINTS), policy="max-accuracy", latency_budget_ms=11).record.number == 1  # type: ignore[union-attr]


def test_infeasible_trials_never_enter_the_pareto_set_and_the_nearest_is_exported_flagged() -> None:
    bounds = [{"metric": "acc", "value": 0.95, "higher_is_better": True, "goal": "threshold 0.95"}]
    v = view([(0.90, 20.0), (0.80, 10.0)], bounds=bounds, feasible=[False, False])
    v.records[0].constraints = {"acc": 0.05}
    v.records[1].constraints = {"acc": 0.15}
    chosen = select(v, policy="max-accuracy")
    assert chosen.feasible is False
    assert chosen.record is not None and chosen.record.number == 0
    assert chosen.missed_by == {"acc": pytest.approx(0.05)}
    assert "no trial met the constraints" in chosen.rule


def test_unknown_policy_is_a_config_error() -> None:
    from autotune.errors import ConfigError

    with pytest.raises(ConfigError):
        select(view(POINTS), policy="best")


def test_report_from_storage_alone_rebuilds_identical_tables_and_best_reproduces(
    tmp_path: Path, tiny_model: Path, tone_file: Path
) -> None:
    import autotune
    from autotune.cli import app
    from tests.search.test_study import study_config

    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    autotune.run(config)
    out = tmp_path / "out"
    before = {name: (out / name).read_text() for name in ("trials.csv", "pareto.csv")}
    for name in ("trials.csv", "pareto.csv", "report.html", "trials.parquet"):
        (out / name).unlink()
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert {name: (out / name).read_text() for name in before} == before
    assert (out / "report.html").is_file() and (out / "trials.parquet").is_file()

    result = CliRunner().invoke(app, ["select", str(out), "--policy", "min-latency"])
    assert result.exit_code == 0, result.output
    assert "lowest" in result.output

    card = json.loads((out / "best" / "model_card.json").read_text())
    reproduce = card["reproduce_config"]
    reproduce["engine"]["output_dir"] = str(tmp_path / "reproduced")
    again = autotune.run(reproduce)
    assert again.record.model_key == card["model_key"]
    assert all(p.cache_hit for p in again.record.passes)  # the very same passes, from the cache


def test_filters_no_trial_meets_export_the_trial_nearest_to_them() -> None:
    chosen = select(view(POINTS), policy="max-accuracy", latency_budget_ms=1.0)  # every trial is slower
    assert chosen.feasible is False and chosen.record is not None and chosen.record.number == 2  # 5 ms: the nearest
    assert chosen.missed_by == {"lat": pytest.approx(4.0)} and "missed by the least" in chosen.rule
