"""The Pareto set over a study's feasible completed trials, and the trials whose latency could change it."""

from __future__ import annotations

from autotune.records import StudyView, TrialRecord

__all__ = ["NOISE_FLOOR", "current_objectives", "dominates", "latency_uncertainty", "pareto_indices", "pareto_set",
           "remeasure_candidates"]

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


def pareto_set(view: StudyView) -> list[TrialRecord]:
    """The non-dominated feasible trials, by their current objectives: a latency re-measured alone
    replaces the one measured during the study, so a trial that contention had pushed off joins again."""
    feasible = [r for r in view.completed() if r.feasible is not False]
    maximize = [o.higher_is_better for o in view.objectives]
    points = [[current_objectives(r)[o.metric] for o in view.objectives] for r in feasible]
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

    def bound(record: TrialRecord, *, best: bool) -> list[float]:
        values = current_objectives(record)
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
    return [r for i, r in enumerate(feasible)
            if not any(dominates(worst[j], best[i], maximize) for j in range(len(feasible)) if j != i)]
