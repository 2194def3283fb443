"""Measurements after the trials, for the trials that may be chosen: the Pareto set's latency
re-measured interleaved (A B C A B C ..., so machine drift hits all alike), and the test split.

The test split is touched here only, after every objective and before nothing that selects: its
rows never reach a trial's objectives, so a study's choice cannot depend on them.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from autotune.evaluation.base import EvalModel
from autotune.records import MetricValue, StudyView, TrialRecord, write_final

__all__ = ["evaluate_test", "remeasure_latency"]

log = logging.getLogger("autotune")
# A spread (max - min across rounds) above this share of the median is flagged as noisy.
NOISY_SPREAD = 0.10


def _model(ctx: Any, record: TrialRecord, rebuild: Any) -> EvalModel | None:
    if record.model_key is None:
        return None
    got = ctx.cache.get(record.model_key) or (rebuild(record) if rebuild is not None else None)
    return EvalModel.from_folder(got[0], key=record.model_key) if got is not None else None


def remeasure_latency(view: StudyView, ctx: Any, records: list[TrialRecord], *, rounds: int, rebuild: Any = None) -> None:
    """Re-measure every latency metric of ``records`` in ``rounds`` interleaved rounds (fresh, uncached);
    the median of the rounds replaces the first value in selection, the rounds and spread are kept."""
    if rounds <= 0 or len(records) < 2 or ctx.config.engine.evaluator is None:
        return
    evaluator = ctx.evaluator(use_cache=False)
    latency = {s.metric_index for s in evaluator.specs if s.kind == "latency"}
    if not latency:
        return
    models = [(r, _model(ctx, r, rebuild)) for r in records]
    models = [(r, m) for r, m in models if m is not None]
    log.info("re-measuring the latency of %d Pareto trial(s), %d rounds interleaved", len(models), rounds)
    values: dict[int, dict[str, list[MetricValue]]] = {r.number: {} for r, _ in models}
    for _ in range(rounds):
        for record, model in models:
            for key, metric in evaluator.evaluate(model, only=latency).items():
                values[record.number].setdefault(key, []).append(MetricValue.model_validate(metric.to_dict()))
    for record, _ in models:
        remeasured = {}
        for key, measured in values[record.number].items():
            rounds_values = [m.value for m in measured]
            median = statistics.median(rounds_values)
            spread = max(rounds_values) - min(rounds_values)
            first = measured[0]
            noisy = bool(median) and spread > NOISY_SPREAD * median
            flag = f"re-measured spread {spread:.3g} {first.unit} over {rounds} rounds" if noisy else None
            remeasured[key] = first.model_copy(update={
                "value": median, "flag": flag or first.flag,
                "details": {**first.details, "rounds": rounds_values, "spread": spread, "interleaved": True,
                            "first_value": record.metrics[key].value if key in record.metrics else None}})
        record.remeasured = remeasured
        write_final(view.study, record.number, remeasured=remeasured)


def evaluate_test(view: StudyView, ctx: Any, records: list[TrialRecord], *, rebuild: Any = None) -> None:
    """Score ``records`` (once each) on the test split with the metrics that read data rows."""
    if ctx.config.engine.evaluator is None or not any(d.test for d in view.meta.data.values()):
        return
    evaluator = ctx.evaluator()
    evaluator.data_loader = lambda name: ctx.pipeline.data(name).on_test()
    data_metrics = evaluator.data_metric_indices()
    if not data_metrics:
        return
    todo = [r for r in records if not r.test_metrics]
    if todo:
        log.info("scoring %d trial(s) on the test split (the Pareto set and the selected model)", len(todo))
    for record in todo:
        model = _model(ctx, record, rebuild)
        if model is None:
            continue
        measured = evaluator.evaluate(model, only=data_metrics)
        record.test_metrics = {k: MetricValue.model_validate(m.to_dict()) for k, m in measured.items()}
        write_final(view.study, record.number, test_metrics=record.test_metrics)
