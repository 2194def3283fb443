"""Metric types (accuracy, latency, footprint, generation, lm_eval, custom); importing this package registers the
built-in ones. The config's evaluators (named sets of metrics) are run by :mod:`autotune.evaluation.runner`."""

from typing import Any

from autotune.evaluation import accuracy, custom, footprint, generation, harness, latency  # noqa: F401
from autotune.evaluation import base as _base
from autotune.evaluation.base import (
    METRIC_TYPES,
    EvalModel,
    MeasurementError,
    Metric,
    MetricType,
    MetricTypeParams,
    SubType,
    register_metric_type,
)

__all__ = ["METRIC_TYPES", "EvalModel", "MeasurementError", "Metric", "MetricType", "MetricTypeParams", "SubType",
           "get_metric_type", "register_metric_type"]


def get_metric_type(type_name: str, *, where: str) -> type[MetricType]:
    """The metric type registered as ``type_name`` (any case; the built-ins are registered by this package's imports)."""
    return METRIC_TYPES.lookup(type_name, where=where, what="metric type", label=lambda cls: cls.type_name)


def __getattr__(name: str) -> Any:
    """The deprecated names (``Evaluator``, ``get_evaluator``, ...), with a warning, for one release."""
    if name == "get_evaluator":
        import warnings

        warnings.warn("autotune.evaluation.get_evaluator is deprecated; use get_metric_type (it will be removed in 0.3)",
                      DeprecationWarning, stacklevel=2)
        return get_metric_type
    return _base.__getattr__(name)
