"""Accuracy and macro-F1 as ``evaluate`` metrics, defined here because ``evaluate.load`` fetches its
metric scripts from the hub, which autotune never reaches at run time. Same formulas as the hub's
``accuracy`` and ``f1`` scripts (scikit-learn underneath)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def _metric_classes() -> tuple[type, type]:
    import datasets
    import evaluate
    from sklearn.metrics import accuracy_score, f1_score

    features = datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})

    class Accuracy(evaluate.Metric):
        def _info(self) -> Any:
            return evaluate.MetricInfo(description="Fraction of predictions equal to the reference.",
                                       citation="", inputs_description="", features=features)

        def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
            return {"accuracy": float(accuracy_score(references, predictions))}

    class MacroF1(evaluate.Metric):
        def _info(self) -> Any:
            return evaluate.MetricInfo(description="Unweighted mean of per-class F1.",
                                       citation="", inputs_description="", features=features)

        def _compute(self, predictions: list[int], references: list[int], labels: list[int] | None = None) -> dict[str, float]:
            return {"f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0))}

    return Accuracy, MacroF1


def classification_scores(predictions: list[int], references: list[int], n_labels: int) -> dict[str, float]:
    accuracy_cls, f1_cls = _metric_classes()
    # in memory: evaluate otherwise writes arrow files under ~/.cache for every compute
    accuracy = accuracy_cls(keep_in_memory=True).compute(predictions=predictions, references=references)["accuracy"]
    f1 = f1_cls(keep_in_memory=True).compute(predictions=predictions, references=references, labels=list(range(n_labels)))["f1"]
    return {"accuracy": accuracy, "macro_f1": f1}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: honest at small n and near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(columns: Sequence[Any], statistic: Callable[..., Any], *, resamples: int = 4000,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic`` over rows resampled with replacement.

    ``columns``: per-row numpy arrays of one length; ``statistic`` maps their resampled ``(k, n)`` arrays to
    one value per resample. Drawn 1000 resamples at a time, to bound memory on large splits."""
    import numpy as np

    n = len(columns[0])
    rng = np.random.default_rng(seed)
    stats = []
    for i in range(0, resamples, 1000):
        picks = rng.integers(0, n, size=(min(1000, resamples - i), n))
        stats.append(statistic(*(column[picks] for column in columns)))
    low, high = np.percentile(np.concatenate(stats), [2.5, 97.5])
    return float(low), float(high)
