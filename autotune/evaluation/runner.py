"""Evaluation of a run's final model and its baseline (filled in by the evaluators)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def evaluate_run(config: Any, pipeline: Any, result: Any, model_dir: Path) -> dict[str, Any] | None:
    if not config.engine.evaluator:
        return None
    return None
