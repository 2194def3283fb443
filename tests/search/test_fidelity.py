"""Multi-fidelity evaluation: a slice of the validation rows stops a trial only when even its
optimistic accuracy cannot reach the front; survivors get exactly the values of a full evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

import autotune
from autotune.config import load_config
from autotune.context import RunContext
from autotune.evaluation.base import EvalModel
from autotune.records import ObjectiveSpec, TrialRecord
from autotune.search.fidelity import FidelityRule, SliceStopped, front_that_dominates, optimistic_point
from tests.conftest import tiny_config
from tests.search.test_study import EVALUATOR

ACC, SIZE = "acc-accuracy", "size-size_mb"
OBJECTIVES = [ObjectiveSpec(metric=ACC, higher_is_better=True, kind="accuracy"),
              ObjectiveSpec(metric=SIZE, higher_is_better=False, unit="MB", kind="size")]


class Measured:
    def __init__(self, value: float, ci_low: float | None = None, ci_high: float | None = None) -> None:
        self.value, self.ci_low, self.ci_high = value, ci_low, ci_high


def front(*points: tuple[float, float]) -> list[TrialRecord]:
    return [TrialRecord(number=i, state="COMPLETE", feasible=True, objectives={ACC: a, SIZE: s}) for i, (a, s) in enumerate(points)]


def test_the_front_never_loses_a_point_a_full_evaluation_would_have_kept() -> None:
    current = front((0.90, 400.0), (0.70, 100.0))
    # Full evaluation: 0.80 at 100 MB would join the front (it beats trial 1). Its slice read 0.72 with
    # an upper bound of 0.86: optimistic (0.86, 100) is not dominated, so the trial goes on.
    kept = optimistic_point(OBJECTIVES, {ACC: Measured(0.72, 0.58, 0.86), SIZE: Measured(100.0)})
    assert kept == [0.86, 100.0] and front_that_dominates(kept, OBJECTIVES, current) is None
    # Even the bound of a hopeless slice (0.55 [0.40, 0.69] at 120 MB) sits under trial 1: stopped.
    hopeless = optimistic_point(OBJECTIVES, {ACC: Measured(0.55, 0.40, 0.69), SIZE: Measured(120.0)})
    assert front_that_dominates(hopeless, OBJECTIVES, current).number == 1  # type: ignore[union-attr]
    # A point cheaper than the whole front is always kept, however bad its slice.
    cheap = optimistic_point(OBJECTIVES, {ACC: Measured(0.1, 0.0, 0.3), SIZE: Measured(50.0)})
    assert front_that_dominates(cheap, OBJECTIVES, current) is None
    # A data metric without an interval gives no optimistic bound: never stopped on it.
    assert optimistic_point(OBJECTIVES, {ACC: Measured(0.5), SIZE: Measured(120.0)}) is None


@pytest.fixture()
def built(tmp_path: Path, tiny_model: Path, tone_file: Path) -> tuple[RunContext, EvalModel]:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["data_configs"][0]["eval_dataset_size"] = 90
    size = {**EVALUATOR["metrics"][2], "name": "size", "sub_types": [{"name": "size_mb", "priority": 2}]}
    config["evaluators"] = {"e": {"metrics": [{**EVALUATOR["metrics"][0], "name": "acc"}, size]}}
    config["engine"].update({"evaluator": "e", "evaluate_input_model": False})
    result = autotune.run(config)
    ctx = RunContext(load_config(config))
    ctx.preflight()
    return ctx, EvalModel.from_folder(result.report_dir / "model", key=result.record.model_key)  # type: ignore[union-attr]


def test_survivors_get_exactly_the_full_evaluation_and_a_dominated_slice_stops(built: tuple[RunContext, EvalModel]) -> None:
    from autotune.config.schema import MultiFidelityConfig

    ctx, model = built
    evaluator = ctx.evaluator()
    full = evaluator.evaluate(model)
    rule = FidelityRule(ctx, evaluator, MultiFidelityConfig(first_rows=30), OBJECTIVES)
    survived = rule.evaluate(model, front((0.0, 1e9)))  # a front it clearly reaches
    assert {k: m.to_dict() for k, m in survived.items()} == {k: m.to_dict() for k, m in full.items()}
    with pytest.raises(SliceStopped, match="first 30 validation rows.*dominated by trial 0"):
        rule.evaluate(model, front((1.0, 0.0)))  # perfect and free: nothing can reach it
