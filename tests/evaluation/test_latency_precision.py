"""Latency to a stated precision (issue 22 item 1): the stopping rule on synthetic timings, the median's
distribution-free interval, the re-measure's early end, and the interval on real measurements."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from autotune.evaluation.precision import median_ci, precise_enough, repeat_until_precise
from autotune.records import MetricValue
from autotune.search.final import intervals_separate
from tests.evaluation.test_fresh_process import evaluate


def test_the_median_interval_is_the_binomial_order_statistics() -> None:
    assert median_ci([5.0, 1.0, 4.0, 2.0, 3.0]) is None  # five values: no 95 % interval of the median exists
    assert median_ci([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == (1.0, 6.0)  # n = 6: x(1), x(6), coverage 1 - 2/64
    values = [float(v) for v in range(1, 21)]
    low, high = median_ci(values)  # type: ignore[misc]
    # n = 20: P(Binomial(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577, so x(6) and x(15)
    assert (low, high) == (6.0, 15.0)
    coverage = sum(math.comb(20, j) for j in range(6, 15)) / 2**20
    assert coverage >= 0.95


def test_the_interval_covers_the_true_median_at_least_95_percent_of_the_time() -> None:
    rng = random.Random(0)
    true_median = math.log(2)  # of an exponential(1): a skewed distribution, nothing assumed of its shape
    hits = 0
    for _ in range(2000):
        low, high = median_ci([rng.expovariate(1.0) for _ in range(15)])  # type: ignore[misc]
        hits += low <= true_median <= high
    assert hits / 2000 >= 0.94  # nominal 0.965 at n = 15 (binomial order statistics); 2000 draws


class Timings:
    """Synthetic per-repeat timings (log-normal around 10 ms), counted."""

    def __init__(self, spread: float, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.spread = spread
        self.calls = 0

    def once(self) -> float:
        self.calls += 1
        return 10.0 * math.exp(self.rng.gauss(0.0, self.spread))


def test_tight_timings_stop_at_the_minimum_repeats() -> None:
    timings = Timings(spread=0.002)
    values, why = repeat_until_precise(timings.once, min_repeats=6, max_repeats=40, max_seconds=1e9, precision=0.03)
    assert (len(values), why) == (6, "precise")
    assert precise_enough(values, 0.03)


def test_noisy_timings_run_to_the_repeat_cap() -> None:
    timings = Timings(spread=0.6)
    values, why = repeat_until_precise(timings.once, min_repeats=6, max_repeats=25, max_seconds=1e9, precision=0.03)
    assert (len(values), why) == (25, "max_repeats")
    assert not precise_enough(values, 0.03)


def test_noisy_timings_stop_at_the_seconds_cap() -> None:
    timings = Timings(spread=0.6)  # each repeat takes one second of the fake clock
    values, why = repeat_until_precise(timings.once, min_repeats=6, max_repeats=1000, max_seconds=10,
                                       precision=0.03, clock=lambda: float(timings.calls))
    assert (len(values), why) == (10, "max_seconds")


def test_moderate_timings_stop_once_precise_not_before() -> None:
    timings = Timings(spread=0.05, seed=3)
    values, why = repeat_until_precise(timings.once, min_repeats=6, max_repeats=200, max_seconds=1e9, precision=0.03)
    assert why == "precise" and 6 < len(values) < 200
    assert not precise_enough(values[:-1], 0.03)  # it stopped at the first repeat that met the rule


def test_precision_zero_is_a_fixed_count() -> None:
    values, why = repeat_until_precise(Timings(spread=0.6).once, min_repeats=4, max_repeats=40, max_seconds=1e9, precision=0)
    assert (len(values), why) == (4, "fixed")


def _metric(low: float, high: float) -> MetricValue:
    return MetricValue(value=(low + high) / 2, unit="ms/token", higher_is_better=False, ci_low=low, ci_high=high)


def test_the_remeasure_ends_early_only_when_every_interval_is_apart() -> None:
    key = "lat-decode_ms_per_token_p50"
    apart = {1: {key: [_metric(1.0, 1.1)]}, 2: {key: [_metric(2.0, 2.2)]}, None: {key: [_metric(3.0, 3.1)]}}
    assert intervals_separate(apart)
    overlapping = {1: {key: [_metric(1.0, 1.1)]}, 2: {key: [_metric(1.05, 1.2)]}}
    assert not intervals_separate(overlapping)
    # the span over the rounds counts: a later round that drifted into the other's interval keeps measuring
    drifted = {1: {key: [_metric(1.0, 1.1), _metric(1.9, 2.05)]}, 2: {key: [_metric(2.0, 2.2)]}}
    assert not intervals_separate(drifted)
    assert not intervals_separate({1: {key: [MetricValue(value=1.0, unit="ms", higher_is_better=False)]},
                                   2: {key: [MetricValue(value=2.0, unit="ms", higher_is_better=False)]}})
    # a tracked metric (not an objective) that overlaps does not keep the rounds going when only objectives count
    ttft = "lat-ttft_ms_p50"
    tracked = {1: {key: [_metric(1.0, 1.1)], ttft: [_metric(90.0, 100.0)]}, 2: {key: [_metric(2.0, 2.2)], ttft: [_metric(95.0, 99.0)]}}
    assert not intervals_separate(tracked)
    assert intervals_separate(tracked, keys={key})


LATENCY = {"name": "lat", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50"}],
           "user_config": {"prompt_tokens": 8, "generate_tokens": 32, "warmup": 2, "repeats": 6, "precision": 0.03,
                           "max_repeats": 60, "max_seconds": 10, "cv_threshold": 100}}


def test_the_reported_interval_is_a_real_interval_read_by_the_stopping_rule(tmp_path: Path, tiny_onnx: Path,
                                                                            tone_file: Path) -> None:
    # That the interval covers the true median at its stated rate is checked on synthetic timings above, where
    # the truth is known. Whether two processes agree is a property of the machine's load as much as of the
    # code (a CI run saw one of four processes 29 % slower), so it is measured in bench/, never asserted here.
    # On real measurements the checks are the ones that code decides: a real interval around the median, within
    # the repeats' range, and "precise" exactly when the reported interval met the stated precision.
    precision = LATENCY["user_config"]["precision"]
    for i in range(2):  # two fresh processes measuring the same model
        metric = evaluate(tmp_path / str(i), tiny_onnx, tone_file, [LATENCY])["lat-decode_ms_per_token_p50"]
        assert metric.details["min"] <= metric.ci_low < metric.value < metric.ci_high <= metric.details["max"]
        if metric.n == 6:  # x(1), x(n) at n = 6; a zero width fails above
            assert (metric.ci_low, metric.ci_high) == (metric.details["min"], metric.details["max"])
        assert metric.n == metric.details["repeats"] >= 6
        stopped_by, relative = metric.details["stopped_by"], metric.details["ci_relative"]
        assert stopped_by in {"precise", "max_repeats", "max_seconds"}
        assert (stopped_by == "precise") == (relative <= precision + 1e-9), (stopped_by, relative)


def test_latency_caps_below_the_minimum_are_refused() -> None:
    from pydantic import ValidationError

    from autotune.evaluation.latency import LatencyParams

    with pytest.raises(ValidationError, match="max_repeats"):
        LatencyParams(repeats=10, max_repeats=5)
