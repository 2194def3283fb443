"""A generation metric's rows as a user reads them: each row's input, reference and prediction with every
score's per-row value, from a trial's stored metrics (the generation evaluator keeps the texts once, on its
first text score, and each score's values in ``details.scores`` over the same ``rows_sha256``).

The card and the report show the best and worst rows by the first objective scored per row;
``best/predictions.jsonl`` holds every row of the selected model (test split where there is one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from autotune.records import MetricValue

__all__ = ["best_and_worst", "prediction_rows", "predictions_jsonl", "ranking_metric", "shown_predictions"]


def prediction_rows(metrics: Mapping[str, MetricValue]) -> list[dict[str, Any]]:
    """Every scored row of the metric that kept its texts: ``input``, ``reference``, ``prediction`` and
    ``scores`` ({metric id: value} for each metric scored per row on the same rows); [] without texts."""
    texts = next(((key, m) for key, m in metrics.items() if isinstance(m.details.get("predictions"), list)), None)
    if texts is None:
        return []
    _, holder = texts
    rows: list[dict[str, Any]] = holder.details["predictions"]
    per_row = {key: m.details["scores"] for key, m in metrics.items()
               if m.details.get("rows_sha256") == holder.details.get("rows_sha256")
               and isinstance(m.details.get("scores"), list) and len(m.details["scores"]) == len(rows)}
    return [{**row, "scores": {key: values[i] for key, values in per_row.items()}} for i, row in enumerate(rows)]


def ranking_metric(rows: list[dict[str, Any]], objectives: list[str]) -> str | None:
    """The metric the rows are ranked by: the first objective with per-row scores, else the first such metric."""
    scored = list(rows[0]["scores"]) if rows else []
    return next((k for k in objectives if k in scored), scored[0] if scored else None)


def best_and_worst(rows: list[dict[str, Any]], key: str, *, higher_is_better: bool = True,
                   count: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``count`` best and ``count`` worst rows by score ``key`` (ties in row order; no row in both)."""
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["scores"][key] if higher_is_better else rows[i]["scores"][key], i))
    best = order[:count]
    worst = [i for i in reversed(order) if i not in best][:count]
    return [rows[i] for i in best], [rows[i] for i in worst]


def shown_predictions(metrics: Mapping[str, MetricValue], objectives: list[str]) -> dict[str, Any] | None:
    """What the card and the report show of a trial's validation rows: the best and worst by the first objective
    scored per row (``metric``, its ``label``, how many ``rows``, ``best``, ``worst``); None without texts."""
    rows = prediction_rows(metrics)
    key = ranking_metric(rows, objectives)
    if key is None:
        return None
    best, worst = best_and_worst(rows, key, higher_is_better=metrics[key].higher_is_better)
    return {"metric": key, "label": metrics[key].title, "rows": len(rows), "best": best, "worst": worst}


def predictions_jsonl(rows: list[dict[str, Any]], *, split: str) -> str:
    """One JSON object per row (``split``, ``row``, ``input``, ``reference``, ``prediction``, ``scores``)."""
    return "".join(json.dumps({"split": split, "row": i, **row}, ensure_ascii=False) + "\n" for i, row in enumerate(rows))
