"""Every figure and table shows a trial at one value per metric, the re-measured latency where there is one
(issue 28), and a re-measured value carries an interval that contains it."""

from __future__ import annotations

import pytest

from autotune.records import MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord
from autotune.report.frames import trials_frame
from autotune.report.history_plots import history_figure
from autotune.report.pareto_plot import pareto_figure
from autotune.report.plot_common import pyplot
from autotune.report.trial_markers import tagged
from autotune.report.values import shown_metric
from autotune.search.final import _medians
from autotune.selection import pareto_set, select

ACC, LAT = "accuracy-accuracy", "latency-decode_ms_per_token_p50"
OBJECTIVES = {"acc": ObjectiveSpec(metric=ACC, higher_is_better=True, unit="ratio", kind="accuracy"),
              "lat": ObjectiveSpec(metric=LAT, higher_is_better=False, unit="ms/token", kind="latency")}


def latency(value: float, low: float, high: float, **details: object) -> MetricValue:
    return MetricValue(value=value, unit="ms/token", higher_is_better=False, name="decode_ms_per_token_p50",
                       ci_low=low, ci_high=high, details=dict(details))


def trial(number: int, acc: float, lat: float, again: float | None = None) -> TrialRecord:
    record = TrialRecord(number=number, state="COMPLETE", feasible=True, objectives={ACC: acc, LAT: lat},
                         metrics={ACC: MetricValue(value=acc, name="accuracy", n=200, ci_low=acc - 0.05, ci_high=acc + 0.04),
                                  LAT: latency(lat, lat * 0.97, lat * 1.03)})
    if again is not None:  # as the re-measure stores it: the median of its rounds, the span of their intervals
        record.remeasured = {LAT: latency(again, again * 0.9, again * 1.1, rounds=[again] * 3, spread=0.2, interleaved=True,
                                          first_value=lat, round_intervals=[[again * 0.9, again * 1.1]] * 3)}
    return record


@pytest.mark.parametrize("order", [("acc", "lat"), ("lat", "acc")])
def test_the_figures_plot_each_trial_where_the_tables_put_it(order: tuple[str, str]) -> None:
    # The study: trial 0 measured 9.1 ms/token, re-measured 10.0 (and selected); trial 6 9.7, re-measured 8.2.
    view = StudyView("s", StudyMeta(mode="search", objectives=[OBJECTIVES[k] for k in order]),
                     [trial(0, 0.90, 9.1, 10.0), trial(3, 0.80, 12.0), trial(6, 0.85, 9.7, 8.2)])
    selection = select(view)
    assert selection.record is not None and selection.record.number == 0
    table = trials_frame(view.records).set_index("number")
    pareto = trials_frame(pareto_set(view)).set_index("number")
    assert table.loc[0, LAT] == 10.0 and table.loc[6, LAT] == 8.2  # the table's one value: the re-measured one
    plt = pyplot()
    fig = pareto_figure(view, selection)
    try:
        ax = fig.axes[0]
        dots, rings, chosen = tagged(ax, "trials"), tagged(ax, "pareto"), tagged(ax, "selected")
        assert dots == {n: (table.loc[n, LAT], table.loc[n, ACC]) for n in table.index}
        assert rings == {n: (pareto.loc[n, LAT], pareto.loc[n, ACC]) for n in pareto.index} and set(rings) == {0, 6}
        assert chosen == {0: (table.loc[0, LAT], table.loc[0, ACC])}
    finally:
        plt.close(fig)
    fig = history_figure(view)
    try:
        first = view.objectives[0].metric
        assert tagged(fig.axes[0], "trials") == {n: (n, table.loc[n, first]) for n in table.index}
    finally:
        plt.close(fig)


def test_a_re_measured_value_lies_in_its_own_interval() -> None:
    # Three rounds; the first round's interval does not hold the median (the "9.998 [8.865, 9.210]").
    rounds = [latency(9.0, 8.865, 9.210), latency(9.998, 9.80, 10.20), latency(10.1, 9.90, 10.40)]
    again = _medians({LAT: rounds}, {LAT: latency(9.0, 8.865, 9.210)}, 3)[LAT]
    assert again.value == 9.998
    assert again.ci_low is not None and again.ci_high is not None and again.ci_low <= again.value <= again.ci_high
    assert (again.ci_low, again.ci_high) == (8.865, 10.40)  # the span of the rounds' intervals
    record = trial(0, 0.9, 9.0)
    record.remeasured = {LAT: again}
    assert shown_metric(record, LAT) == again
    # A study stored before this kept the first round's interval beside the median: it is not shown as the median's.
    record.remeasured = {LAT: latency(9.998, 8.865, 9.210, rounds=[9.0, 9.998, 10.1], interleaved=True)}
    shown = shown_metric(record, LAT)
    assert shown is not None and shown.value == 9.998 and shown.ci_low is None and shown.ci_high is None
