"""Multi-fidelity evaluation: a slice of the validation rows stops a trial only when even the exact
optimistic bound of a metric with per-row outcomes cannot reach the front; a metric without an interval
is never a pruning ground; survivors get exactly the values of a full evaluation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autotune
from autotune.config.schema import MultiFidelityConfig
from autotune.config_checks import load_config
from autotune.evaluation.base import EvalModel
from autotune.records import ObjectiveSpec, TrialRecord
from autotune.run_context import RunContext
from autotune.search.fidelity import ALPHA, FidelityRule, SliceStopped, exact_bound, optimistic_point, slice_rules_out
from tests.conftest import tiny_config
from tests.search.test_study import EVALUATOR

ACC, SIZE = "acc-accuracy", "size-size_mb"
OBJECTIVES = [ObjectiveSpec(metric=ACC, higher_is_better=True, kind="accuracy", label="accuracy"),
              ObjectiveSpec(metric=SIZE, higher_is_better=False, unit="MB", kind="size", label="size (MB)")]


class Measured:
    def __init__(self, value: float, ci_low: float | None = None, ci_high: float | None = None, correct: str | None = None) -> None:
        self.value, self.ci_low, self.ci_high, self.n = value, ci_low, ci_high, len(correct) if correct else None
        self.details = {} if correct is None else {"correct": correct}


def accuracy(successes: int, rows: int) -> Measured:
    """An accuracy slice as the accuracy evaluator returns it: value, an interval and per-row outcomes."""
    return Measured(successes / rows, 0.0, 1.0, "1" * successes + "0" * (rows - successes))


def size(mb: float) -> dict[str, Measured]:
    return {SIZE: Measured(mb)}


def front(*points: tuple[float, float]) -> list[TrialRecord]:
    return [TrialRecord(number=i, state="COMPLETE", feasible=True, objectives={ACC: a, SIZE: s}) for i, (a, s) in enumerate(points)]


def test_the_exact_bound_matches_clopper_pearson_and_its_edges() -> None:
    # Clopper-Pearson 97.5% one-sided bounds (scipy.stats.beta.ppf(0.975, k + 1, n - k) and ppf(0.025, k, n - k + 1)).
    assert exact_bound(5, 30, upper=True) == pytest.approx(0.3472116988341438, abs=1e-12)
    assert exact_bound(5, 30, upper=False) == pytest.approx(0.0564216964680715, abs=1e-12)
    assert exact_bound(0, 30, upper=True) == pytest.approx(0.1157033082220278, abs=1e-12)
    assert exact_bound(900, 1000, upper=True) == pytest.approx(0.91789466564442, abs=1e-12)
    assert exact_bound(30, 30, upper=True) == 1.0 and exact_bound(0, 30, upper=False) == 0.0


def test_a_slice_whose_optimistic_bound_reaches_the_front_goes_on_to_the_full_evaluation() -> None:
    # 21 of 30 right (0.70): the exact upper bound is 0.85, above trial 1's 0.70 at the same size.
    assert slice_rules_out(OBJECTIVES, costs=size(100.0), sliced={ACC: accuracy(21, 30)}, front=front((0.9, 400.0), (0.7, 100.0))) is None


def test_a_slice_whose_optimistic_bound_is_dominated_by_a_front_point_is_pruned_with_the_reason() -> None:
    # 12 of 30 right (0.40): the upper bound 0.59 at 120 MB sits under trial 1 (0.70 at 100 MB).
    reason = slice_rules_out(OBJECTIVES, costs=size(120.0), sliced={ACC: accuracy(12, 30)}, front=front((0.9, 400.0), (0.7, 100.0)))
    assert reason is not None and "first 30 validation rows" in reason and "dominated by trial 1" in reason
    assert "accuracy 0.5" in reason and "acc-accuracy" not in reason  # labels, as in the trials table


def test_a_trial_cheaper_than_the_whole_front_is_never_pruned_however_bad_its_slice() -> None:
    assert slice_rules_out(OBJECTIVES, costs=size(50.0), sliced={ACC: accuracy(0, 30)}, front=front((0.9, 400.0), (0.7, 100.0))) is None


def test_a_slice_metric_without_an_interval_or_row_outcomes_is_never_a_pruning_ground() -> None:
    hopeless = front((1.0, 0.0))  # perfect and free: it dominates any point
    # A custom data metric: a point value, no interval, no outcomes.
    score = ObjectiveSpec(metric="mine-score", higher_is_better=True, kind="other")
    assert optimistic_point([score, OBJECTIVES[1]], costs=size(10.0), sliced={"mine-score": Measured(0.0)}) is None
    perfect = TrialRecord(number=0, state="COMPLETE", feasible=True, objectives={"mine-score": 1.0, SIZE: 0.0})
    assert slice_rules_out([score, OBJECTIVES[1]], costs=size(10.0), sliced={"mine-score": Measured(0.0)}, front=[perfect]) is None
    # An accuracy-kind metric without an interval (macro F1 carries the rows' outcomes, but they are not its value).
    assert slice_rules_out(OBJECTIVES, costs=size(10.0), sliced={ACC: Measured(0.2, correct="1" * 15 + "0" * 15)}, front=hopeless) is None
    # Outcomes whose mean is not the value are no ground either, even with an interval.
    assert slice_rules_out(OBJECTIVES, costs=size(10.0), sliced={ACC: Measured(0.2, 0.1, 0.3, "1" * 15 + "0" * 15)}, front=hopeless) is None


@pytest.mark.parametrize("rows", [30, 100])
def test_false_prune_rate_in_a_binomial_simulation_is_at_most_half_alpha(rows: int) -> None:
    """A trial exactly as good as a front point (true accuracy p, same size): a full evaluation would not
    be dominated, so every prune is false. Over 20,000 synthetic slices per p the observed rate stays
    within alpha/2 (2.5 %) up to Monte Carlo noise, at every p, including near 1 where Wilson's does not."""
    rng = np.random.default_rng(0)
    trials = 20_000
    slack = 3 * math.sqrt(ALPHA / 2 * (1 - ALPHA / 2) / trials)
    rates = {}
    for p in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        current = front((p, 100.0))
        pruned_at = {k: slice_rules_out(OBJECTIVES, costs=size(100.0), sliced={ACC: accuracy(k, rows)}, front=current) is not None
                     for k in range(rows + 1)}
        rates[p] = float(np.mean([pruned_at[int(k)] for k in rng.binomial(rows, p, trials)]))
    assert all(rate <= ALPHA / 2 + slack for rate in rates.values()), rates
    assert max(rates.values()) > 0.005, rates  # the rule does prune: the bound is not vacuous


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
          tone_rows: list[dict[str, str]]) -> tuple[dict[str, Any], EvalModel]:
    """One single run whose model both tests read (each changes its own copy of the config)."""
    root = tmp_path_factory.mktemp("fidelity")
    tone_file = root / "tones.jsonl"
    tone_file.write_text("\n".join(json.dumps(r) for r in tone_rows[:200]) + "\n")
    config = tiny_config(tiny_model, tone_file, root)
    config["data_configs"][0]["eval_dataset_size"] = 90
    size_metric = {**EVALUATOR["metrics"][2], "name": "size", "sub_types": [{"name": "size_mb", "priority": 2}]}
    config["evaluators"] = {"e": {"metrics": [{**EVALUATOR["metrics"][0], "name": "acc"}, size_metric]}}
    config["engine"].update({"evaluator": "e", "evaluate_input_model": False})
    result = autotune.run(config)
    return config, EvalModel.from_folder(result.report_dir / "model", key=result.record.model_key)  # type: ignore[union-attr]


def context(config: dict[str, Any]) -> RunContext:
    ctx = RunContext(load_config(config))
    ctx.preflight()
    return ctx


def test_survivors_get_exactly_the_full_evaluation_and_a_dominated_slice_stops(built: tuple[dict[str, Any], EvalModel]) -> None:
    config, model = built
    ctx = context(config)
    evaluator = ctx.evaluator()
    full = evaluator.evaluate(model)
    rule = FidelityRule(ctx, evaluator, MultiFidelityConfig(first_rows=30), OBJECTIVES)
    survived = rule.evaluate(model, front((0.0, 1e9)))  # a front it clearly reaches
    assert {k: m.model_dump() for k, m in survived.items()} == {k: m.model_dump() for k, m in full.items()}
    with pytest.raises(SliceStopped, match="first 30 validation rows.*dominated by trial 0"):
        rule.evaluate(model, front((1.0, 0.0)))  # perfect and free: nothing can reach it


CONSTANT_METRIC = "def score(model_dir, data):\n    return {'score': 0.1}\n"


def test_a_custom_data_metric_is_never_pruned_on_its_slice_value(built: tuple[dict[str, Any], EvalModel], tmp_path: Path) -> None:
    config, model = copy.deepcopy(built[0]), built[1]
    (tmp_path / "mine.py").write_text(CONSTANT_METRIC)
    custom = {"name": "mine", "type": "custom", "data_config": "tones", "sub_types": [{"name": "score", "priority": 1}],
              "user_config": {"function": f"{tmp_path / 'mine.py'}:score"}}
    config["evaluators"]["e"]["metrics"] = [custom, config["evaluators"]["e"]["metrics"][1]]
    ctx = context(config)
    evaluator = ctx.evaluator()
    objectives = [ObjectiveSpec(metric="mine-score", higher_is_better=True), OBJECTIVES[1]]
    rule = FidelityRule(ctx, evaluator, MultiFidelityConfig(first_rows=30), objectives)
    perfect = TrialRecord(number=0, state="COMPLETE", feasible=True, objectives={"mine-score": 1.0, SIZE: 0.0})
    metrics = rule.evaluate(model, [perfect])  # its slice value 0.1 is dominated, but it has no interval: full evaluation
    assert metrics["mine-score"].value == 0.1 and SIZE in metrics


def test_a_study_prunes_a_dominated_trial_on_its_slice_and_counts_it_toward_max_samples(
        tmp_path: Path, tiny_model: Path, tone_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Study level: a grid of three builds (int4, int8, fp32), multi-fidelity on, max_samples 2. The first model
    answers every validation row right, the others every row wrong (the accuracy evaluator's per-row outcomes are
    replaced; the tiny model's own accuracy is near chance and would not separate them). Trial 0 completes and is
    the front; trial 1 (int8: larger) is scored on the first 30 rows only, its optimistic bound (0.116) is dominated
    by trial 0, so it is PRUNED with that reason; a pruned trial counts toward max_samples, so the study stops at 2
    and the third point stays queued."""

    import optuna

    from autotune.evaluation.accuracy import AccuracyMetricType
    from autotune.evaluation.metrics import wilson_interval
    from autotune.records import read_record
    from autotune.search.stopping import counted
    from tests.search.test_study import load

    real = AccuracyMetricType.evaluate
    scored: list[tuple[str, int]] = []  # (model folder, rows) of each accuracy evaluation

    def all_right_or_all_wrong(self: Any, model: Any, params: Any, ctx: Any) -> dict[str, Any]:
        metrics = real(self, model, params, ctx)
        scored.append((str(model.path), metrics["accuracy"].n))
        right = str(model.path) == scored[0][0]
        n = metrics["accuracy"].n
        low, high = wilson_interval(n if right else 0, n)
        details = {**metrics["accuracy"].details, "correct": ("1" if right else "0") * n}
        metrics["accuracy"] = metrics["accuracy"].model_copy(update={"value": 1.0 if right else 0.0, "ci_low": low, "ci_high": high,
                                                                       "details": details})
        return metrics

    monkeypatch.setattr(AccuracyMetricType, "evaluate", all_right_or_all_wrong)
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"] = {"build": {"type": "ModelBuilder", "precision": ["int4", "int8", "fp32"], "algo_config": "default"}}
    config["data_configs"][0]["eval_dataset_size"] = 90
    size_metric = {**EVALUATOR["metrics"][2], "name": "size", "sub_types": [{"name": "size_mb", "priority": 2}]}
    config["evaluators"] = {"e": {"metrics": [{**EVALUATOR["metrics"][0], "name": "acc"}, size_metric]}}
    config["engine"].update({"evaluator": "e", "evaluate_input_model": False, "pytorch_reference": False,
                             "selection": {"remeasure_rounds": 0},
                             "search_strategy": {"sampler": "grid", "seed": 0, "max_samples": 2,
                                                 "multi_fidelity": {"enabled": True, "first_rows": 30}}})
    autotune.run(config)
    study = load(tmp_path)
    states = optuna.trial.TrialState
    # each grid point as queued (a trial still waiting has no params yet)
    assert [(t.system_attrs["fixed_params"]["build.precision"], t.state) for t in study.trials] == [
        ("int4", states.COMPLETE), ("int8", states.PRUNED), ("fp32", states.WAITING)]
    complete, pruned = read_record(study.trials[0]), read_record(study.trials[1])
    assert complete.objectives[ACC] == 1.0 and pruned.state == "PRUNED"
    assert pruned.prune_reason is not None and "first 30 validation rows" in pruned.prune_reason
    assert "dominated by trial 0 of the Pareto front" in pruned.prune_reason
    assert f"accuracy {exact_bound(0, 30, upper=True):.4g}" in pruned.prune_reason and not pruned.objectives
    # trial 0 on every row; trial 1 on its slice only (no full evaluation after the prune)
    assert [n for _, n in scored] == [90, 30] and len({path for path, _ in scored}) == 2
    assert counted(study.trials[1])  # unlike a duplicate point: it counts, and the study stopped at max_samples 2
