"""Paired uncertainty: two models scored on the same rows, compared by a bootstrap of their difference.

Two accuracy values whose intervals overlap can still differ reliably (they err on the same rows), and
two whose point values differ may not: only the per-row outcomes tell. Evaluators store them as a
string of 0/1 per row with a fingerprint of the rows (``details.correct``, ``details.rows_sha256``); a continuous
score (ROUGE-L, chrF, ...) as a list of per-row values (``details.scores``).
"""

from __future__ import annotations

from dataclasses import dataclass

from autotune.evaluation.metrics import bootstrap_interval
from autotune.records import MetricValue

__all__ = ["PairedDifference", "paired_difference"]

RESAMPLES = 4000
SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """a - b on the same rows: the mean difference and its 95% percentile-bootstrap interval."""

    difference: float
    low: float
    high: float
    n: int

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0: one model is better on these rows beyond resampling noise."""
        return self.low > 0 or self.high < 0


def outcomes(metric: MetricValue | None) -> tuple[str, list[float]] | None:
    """(rows fingerprint, per-row values: 0/1 or a continuous score) of a metric that stored them, else None."""
    if metric is None:
        return None
    scores, rows = metric.details.get("scores"), metric.details.get("rows_sha256")
    if isinstance(scores, list) and scores and rows and all(isinstance(s, (int, float)) for s in scores):
        return rows, [float(s) for s in scores]
    correct = metric.details.get("correct")
    if not isinstance(correct, str) or not rows or not correct:
        return None
    return rows, [1.0 if c == "1" else 0.0 for c in correct]


def paired_difference(a: MetricValue | None, b: MetricValue | None, *, resamples: int = RESAMPLES,
                      seed: int = SEED) -> PairedDifference | None:
    """The paired bootstrap interval of a - b, or None when the two were not scored on the same rows."""
    import numpy as np

    left, right = outcomes(a), outcomes(b)
    if left is None or right is None or left[0] != right[0] or len(left[1]) != len(right[1]):
        return None
    diff = np.asarray(left[1], dtype=np.float64) - np.asarray(right[1], dtype=np.float64)
    # Resample rows: the unit both models share.
    low, high = bootstrap_interval([diff], lambda d: d.mean(axis=1), resamples=resamples, seed=seed)
    return PairedDifference(float(diff.mean()), low, high, len(diff))
