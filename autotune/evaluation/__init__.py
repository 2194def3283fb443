"""Evaluators; importing this package registers the built-in ones."""

from autotune.evaluation import accuracy, custom, footprint, latency  # noqa: F401
from autotune.evaluation.base import (
    EVALUATOR_REGISTRY,
    EvalModel,
    Evaluator,
    MeasurementError,
    Metric,
    SubType,
    register_evaluator,
)

__all__ = ["EVALUATOR_REGISTRY", "EvalModel", "Evaluator", "MeasurementError", "Metric", "SubType", "register_evaluator"]
