"""The final latency re-measure covers every trial whose latency could change the Pareto set: a trial whose
latency, measured during ``run --jobs`` with a share of the cores, looked worse than it is joins the front
once it is re-measured alone."""

from __future__ import annotations

from autotune.records import MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord
from autotune.selection import pareto_set
from autotune.selection.pareto import remeasure_candidates

OBJECTIVES = [
    ObjectiveSpec(metric="acc", higher_is_better=True, unit="ratio", kind="accuracy"),
    ObjectiveSpec(metric="lat", higher_is_better=False, unit="ms/token", kind="latency"),
]


def trial(number: int, acc: float, lat: float, *, cv: float = 0.01, share: int | None = None, cpus: int = 8) -> TrialRecord:
    latency = MetricValue(value=lat, unit="ms/token", higher_is_better=False, name="lat",
                          details={"cv": cv, "cpu_share": share, "cpus": cpus})
    return TrialRecord(number=number, state="COMPLETE", feasible=True, objectives={"acc": acc, "lat": lat},
                       metrics={"acc": MetricValue(value=acc, name="acc"), "lat": latency})


def study(records: list[TrialRecord]) -> StudyView:
    return StudyView("s", StudyMeta(mode="search", objectives=OBJECTIVES), records)


def test_a_trial_pushed_off_the_front_by_contention_is_re_measured_and_can_rejoin_it() -> None:
    records = [
        trial(0, 0.90, 40.0),  # most accurate, measured alone
        trial(1, 0.85, 25.0),  # measured alone
        # Measured by one of 2 jobs (4 of 8 cores): 30 ms/token under contention, 15 alone. As measured,
        # trial 1 dominates it (more accurate and faster), so the measured Pareto set leaves it out.
        trial(2, 0.80, 30.0, share=4),
        trial(3, 0.70, 100.0),  # slower than trial 1 by far more than any noise, and less accurate: never on the front
    ]
    view = study(records)
    assert [r.number for r in pareto_set(view)] == [0, 1]
    assert [r.number for r in remeasure_candidates(view)] == [0, 1, 2]
    # Re-measured alone, its latency puts it back on the Pareto set that selection reads.
    records[2].remeasured = {"lat": records[2].metrics["lat"].model_copy(update={"value": 15.0, "details": {"spread": 0.3}})}
    assert [r.number for r in pareto_set(view)] == [0, 1, 2]


def test_without_contention_only_trials_within_the_measured_noise_are_candidates() -> None:
    records = [
        trial(0, 0.90, 40.0),
        trial(1, 0.85, 25.0),
        trial(2, 0.80, 26.0, cv=0.02),  # 4% slower than trial 1: within the noise, so it could be faster
        trial(3, 0.80, 60.0, cv=0.02),  # 2.4x slower: dominated whatever the noise
        trial(4, 0.80, 28.0, cv=0.20),  # 12% slower, but its repeats vary by 20%: could be faster
    ]
    assert [r.number for r in remeasure_candidates(study(records))] == [0, 1, 2, 4]
