"""The Pareto set over a study's feasible completed trials, and the trials whose latency could change it."""

from __future__ import annotations

from typing import Any

from autotune.records import StudyView, TrialRecord

__all__ = ["NOISE_FLOOR", "STRUCTURE_KINDS", "current_objectives", "dominates", "latency_uncertainty", "pareto_indices", "pareto_set",
           "remeasure_candidates", "shared_objectives"]

# The least relative uncertainty assumed of a latency measured once (the re-measure flags a spread above it).
NOISE_FLOOR = 0.10


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    """a dominates b: no worse in every objective and better in at least one."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        if (x > y) if up else (x < y):
            better = True
    return better


def pareto_indices(points: list[list[float]], maximize: list[bool]) -> list[int]:
    """Indices of the non-dominated points (identical points are all kept), in input order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)]


def current_objectives(record: TrialRecord) -> dict[str, float]:
    """The record's objectives with any value re-measured after the study (interleaved, alone) in place."""
    return {k: (record.remeasured[k].value if k in record.remeasured else v) for k, v in record.objectives.items()}


# Objective kinds a model's structure decides (autotune.evaluation.structure): one value per structure key.
STRUCTURE_KINDS = ("latency", "size", "memory")


def shared_objectives(records: list[TrialRecord], objectives: list[Any]) -> list[dict[str, float]]:
    """Each record's current objectives, with every speed, size and memory objective of trials that share a
    structure key taken from the first of them (lowest trial number): one graph has one such value, so trials of
    one structure are compared on their other objectives only, whatever two readings of it said (a cache race,
    a measurement from before structure keys)."""
    values = [current_objectives(r) for r in records]
    first: dict[str, dict[str, float]] = {}
    for record, value in sorted(zip(records, values, strict=True), key=lambda pair: pair[0].number):
        if record.structure_key is not None:
            first.setdefault(record.structure_key, value)
    for record, value in zip(records, values, strict=True):
        if record.structure_key is not None:
            twin = first[record.structure_key]
            value.update({o.metric: twin[o.metric] for o in objectives if o.kind in STRUCTURE_KINDS and o.metric in twin})
    return values


def pareto_set(view: StudyView) -> list[TrialRecord]:
    """The non-dominated feasible trials, by their current objectives: a latency re-measured alone
    replaces the one measured during the study, so a trial that contention had pushed off joins again;
    trials of one structure share their speed and size (:func:`shared_objectives`)."""
    feasible = [r for r in view.completed() if r.feasible is not False]
    maximize = [o.higher_is_better for o in view.objectives]
    shared = shared_objectives(feasible, view.objectives)
    points = [[values[o.metric] for o in view.objectives] for values in shared]
    return [feasible[i] for i in pareto_indices(points, maximize)]


def latency_uncertainty(record: TrialRecord, metric: str) -> tuple[float, float]:
    """(below, above): the true value of ``metric``, alone, lies in [stored / below, stored * above].
    Re-measured: its own spread over the rounds. Measured during the study: the noise of its repeats
    (twice the coefficient of variation, at least :data:`NOISE_FLOOR`) and, when it was measured with a
    share of the cores (``run --jobs``), a contention of up to cores / share jobs at once, which only
    ever makes a latency look worse."""
    measured = record.remeasured.get(metric) or record.metrics.get(metric)
    if measured is None:
        return 1 + NOISE_FLOOR, 1 + NOISE_FLOOR
    details = measured.details
    if metric in record.remeasured:
        spread = 1 + max(float(details.get("spread") or 0.0) / (abs(measured.value) or 1.0), NOISE_FLOOR)
        return spread, spread
    noise = 1 + max(2 * float(details.get("cv") or 0.0), NOISE_FLOOR)
    share, cpus = details.get("cpu_share"), details.get("cpus")
    contention = cpus / share if isinstance(share, int) and isinstance(cpus, int) and share > 0 else 1.0
    better = max(noise, contention)
    return (noise, better) if measured.higher_is_better else (better, noise)


def remeasure_candidates(view: StudyView) -> list[TrialRecord]:
    """Every feasible trial that some true latency within its measurement's uncertainty could put on the
    Pareto set: those no other trial dominates for sure, with the other's latency at its worst and its
    own at its best (:func:`latency_uncertainty`); the other objectives count as measured. A superset of
    :func:`pareto_set`, whatever contention inflated a latency measured during the study."""
    feasible = [r for r in view.completed() if r.feasible is not False]
    objectives = view.objectives
    maximize = [o.higher_is_better for o in objectives]

    shared = {r.number: v for r, v in zip(feasible, shared_objectives(feasible, objectives), strict=True)}

    def bound(record: TrialRecord, *, best: bool) -> list[float]:
        values = shared[record.number]
        out = []
        for o in objectives:
            value = values[o.metric]
            if o.kind == "latency":
                below, above = latency_uncertainty(record, o.metric)
                value = (value * above if o.higher_is_better else value / below) if best else \
                    (value / below if o.higher_is_better else value * above)
            out.append(value)
        return out

    best = [bound(r, best=True) for r in feasible]
    worst = [bound(r, best=False) for r in feasible]
    exact = [[shared[r.number][o.metric] for o in objectives] for r in feasible]

    def beats(j: int, i: int) -> bool:
        # Twins of one structure carry one measurement: no noise between them to allow for.
        twins = feasible[i].structure_key is not None and feasible[i].structure_key == feasible[j].structure_key
        return dominates(exact[j], exact[i], maximize) if twins else dominates(worst[j], best[i], maximize)

    return [r for i, r in enumerate(feasible) if not any(beats(j, i) for j in range(len(feasible)) if j != i)]
