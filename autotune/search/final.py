"""Measurements after the trials, for the trials that may be chosen: the latency of every trial that could
be on the Pareto set (:func:`autotune.selection.pareto.remeasure_candidates`) re-measured interleaved
(A B C A B C ..., so machine drift hits all alike), and the test split.

The test split is touched here only, after every objective and before nothing that selects: its
rows never reach a trial's objectives, so a study's choice cannot depend on them.
"""

from __future__ import annotations

import logging
import statistics
from typing import TYPE_CHECKING, Any

from autotune.errors import UserError
from autotune.evaluation.base import EvalModel
from autotune.records import MetricValue, StudyView, TrialRecord, write_final, write_final_baseline

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["evaluate_test", "intervals_separate", "remeasure_latency"]

log = logging.getLogger("autotune")
# A spread (max - min across rounds) above this share of the median is flagged as noisy.
NOISY_SPREAD = 0.10


def _model(ctx: RunContext, record: TrialRecord, rebuild: Any) -> EvalModel | None:
    if record.model_key is None:
        return None
    got = ctx.cache.get(record.model_key) or (rebuild(record) if rebuild is not None else None)
    return EvalModel.from_folder(got[0], key=record.model_key) if got is not None else None


def _baseline_model(view: StudyView, ctx: RunContext, base: str | None = None) -> EvalModel | None:
    """The like-for-like baseline (the input model, or the base ``base``, as fp32 ONNX), when the study measured one."""
    if view.meta.baseline_kind != "onnx-fp32" or not view.meta.baseline:
        return None
    try:
        built = ctx.pipeline.run_baseline_build(base).model  # a cache hit, unless evicted
    except UserError as exc:  # e.g. the input model is not on this machine: its first value stays
        log.warning("baseline latency not re-measured: %s", exc)
        return None
    return EvalModel(path=built.path, kind=built.kind, key=built.key)


def remeasure_latency(view: StudyView, ctx: RunContext, records: list[TrialRecord], *, rounds: int, rebuild: Any = None) -> None:
    """Re-measure every latency metric of ``records`` and of the baseline in up to ``rounds`` interleaved rounds
    (fresh, uncached; fewer when after a round every model's interval is apart from the others',
    :func:`intervals_separate`); the median of the rounds replaces the first value in selection and in every ratio
    to the baseline; the rounds, the spread and the first value are kept."""
    # One trial has nothing to be ranked against; its study (like a single run) keeps its first values.
    if rounds <= 0 or len(records) < 2 or ctx.config.engine.evaluator is None:
        return
    evaluator = ctx.evaluator(use_cache=False)
    latency = {s.metric_index for s in evaluator.specs if s.kind == "latency"}
    if not latency:
        return
    # (trial number, or None for the baseline; its record; its model), for those whose model is at hand
    # (a base model's name for its baseline when the study searches the base model)
    entries: list[tuple[int | str | None, TrialRecord | None, EvalModel]] = []
    for record in records:
        model = _model(ctx, record, rebuild)
        if model is not None:
            entries.append((record.number, record, model))
    trials = len(entries)
    bases = [b.name for b in view.meta.bases if b.name in view.meta.base_baselines and any(r.base == b.name for r in records)]
    for base in bases or [None]:
        baseline = _baseline_model(view, ctx, base)
        if baseline is not None:
            entries.append((base, None, baseline))
    # One measurement per structure key: models of one structure run alike, so they are measured once per round
    # and every trial of it takes that value (the same graph cannot be told apart by noise).
    groups: dict[str, list[tuple[int | str | None, TrialRecord | None, EvalModel]]] = {}
    for entry in entries:
        groups.setdefault(evaluator.structure_of(entry[2]) or f"model:{entry[2].key}", []).append(entry)
    if len(groups) < 2:
        log.info("latency not re-measured: the %d model(s) that could be on the Pareto set share one structure", len(entries))
        return
    log.info("re-measuring the latency of %d trial(s) that could be on the Pareto set%s (%d structure(s)), %d rounds interleaved",
             trials, f" and {len(entries) - trials} baseline(s)" if len(entries) > trials else "", len(groups), rounds)
    values: dict[str, dict[str, list[MetricValue]]] = {structure: {} for structure in groups}
    done = 0
    for done in range(1, rounds + 1):
        # One fresh process per structure per round (latency only: memory is not measured again).
        for structure, members in groups.items():
            for key, metric in evaluator.evaluate(members[0][2], only=latency).items():
                values[structure].setdefault(key, []).append(metric)
        # Only the objectives order the Pareto set: a tracked latency (priority -1, e.g. time to first token)
        # whose intervals overlap does not need more rounds; with no latency objective, every latency metric counts.
        ranked = {o.metric for o in view.meta.objectives} & {k for by_key in values.values() for k in by_key}
        if done < rounds and intervals_separate(values, keys=ranked or None):
            log.info("latency re-measure: every structure's interval is apart from the others' after %d of %d rounds; "
                     "the rest are not needed", done, rounds)
            break
    for structure, members in groups.items():
        for number, record, _ in members:
            if record is None:
                base = number if isinstance(number, str) else None
                measured = view.meta.base_baselines.get(base, view.meta.baseline) if base is not None else view.meta.baseline
                remeasured = _medians(values[structure], measured, done)
                measured.update({k: v for k, v in remeasured.items() if k in measured})
                if base is None or (view.meta.bases and view.meta.bases[0].name == base):  # the study's default baseline
                    view.meta.baseline.update({k: v for k, v in remeasured.items() if k in view.meta.baseline})
                write_final_baseline(view.study, remeasured, base=base)
            else:
                record.remeasured = _medians(values[structure], record.metrics, done)
                write_final(view.study, record.number, remeasured=record.remeasured)


def intervals_separate(values: dict[Any, dict[str, list[MetricValue]]], *, keys: set[str] | None = None) -> bool:
    """Whether, for every metric measured with an interval (of ``keys``, when given), each model's interval (the
    span of its rounds' 95 % intervals so far) overlaps no other model's: then more rounds cannot change the
    ranking. False when any such metric lacks an interval in some round, and when no metric has one."""
    keyed: dict[str, list[tuple[float, float]]] = {}
    for by_key in values.values():
        for key, measured in by_key.items():
            if keys is not None and key not in keys:
                continue
            if any(m.ci_low is None or m.ci_high is None for m in measured):
                if any(m.ci_low is not None for m in measured):
                    return False
                continue
            keyed.setdefault(key, []).append((min(m.ci_low for m in measured), max(m.ci_high for m in measured)))  # type: ignore[type-var]
    if not keyed:
        return False
    for spans in keyed.values():
        ordered = sorted(spans)
        if any(later[0] <= earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False)):
            return False
    return True


def _first_value(metric: MetricValue | None) -> float | None:
    """The value measured first (during the study), also when ``metric`` was itself re-measured before."""
    if metric is None:
        return None
    return metric.details.get("first_value", metric.value) if metric.details.get("interleaved") else metric.value


def _medians(values: dict[str, list[MetricValue]], first_values: dict[str, MetricValue], rounds: int) -> dict[str, MetricValue]:
    remeasured = {}
    for key, measured in values.items():
        rounds_values = [m.value for m in measured]
        median = statistics.median(rounds_values)
        spread = max(rounds_values) - min(rounds_values)
        first = measured[0]
        noisy = bool(median) and spread > NOISY_SPREAD * median
        flag = f"re-measured spread {spread:.3g} {first.unit} over {rounds} rounds" if noisy else None
        # The median's interval is the span of the rounds' 95 % intervals (as intervals_separate ranks them): it
        # holds every round's value, so the median too; the first round's alone need not hold it.
        intervals = [[m.ci_low, m.ci_high] for m in measured]
        spanned = all(low is not None and high is not None for low, high in intervals)
        remeasured[key] = first.model_copy(update={
            "value": median, "flag": flag or first.flag,
            "ci_low": min(low for low, _ in intervals) if spanned else None,
            "ci_high": max(high for _, high in intervals) if spanned else None,
            "details": {**first.details, "rounds": rounds_values, "spread": spread, "interleaved": True,
                        "first_value": _first_value(first_values.get(key)),
                        **({"round_intervals": intervals} if spanned else {})}})
    return remeasured


def evaluate_test(view: StudyView, ctx: RunContext, records: list[TrialRecord], *, rebuild: Any = None) -> None:
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
        record.test_metrics = {k: m for k, m in measured.items()}
        write_final(view.study, record.number, test_metrics=record.test_metrics)
