"""Evaluators; importing this package registers the built-in ones."""

from autotune.evaluation import accuracy, custom, footprint, generation, harness, latency  # noqa: F401
from autotune.evaluation.base import (
    EVALUATOR_REGISTRY,
    EvalModel,
    Evaluator,
    MeasurementError,
    Metric,
    SubType,
    register_evaluator,
)

__all__ = ["EVALUATOR_REGISTRY", "EvalModel", "Evaluator", "MeasurementError", "Metric", "SubType", "get_evaluator",
           "register_evaluator"]


def get_evaluator(type_name: str, *, where: str) -> type[Evaluator]:
    """The metric type registered as ``type_name`` (any case; the built-ins are registered by this package's imports)."""
    return EVALUATOR_REGISTRY.lookup(type_name, where=where, what="metric type", label=lambda cls: cls.type_name)
