"""The metric-type interface (``MetricType``: one family of metrics, e.g. accuracy or latency), its registry, and the
typed metric value every metric type returns.

The names before 0.2 (``Evaluator``, ``EvaluatorParams``, ``register_evaluator``, ``EVALUATOR_REGISTRY``) still import,
with a ``DeprecationWarning``, for one release. "Evaluator" now means only the config's named set of metrics
(``evaluators:``) and what runs it (``autotune.evaluation.runner.ModelEvaluator``)."""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from autotune.errors import ConfigError, did_you_mean
from autotune.record_schema import MetricKind, MetricValue  # one definition each, shared with the stored records
from autotune.registry import Registry

# The one metric value type: what an evaluator returns is what the cache, the trial records and the reports hold
# (autotune.record_schema.MetricValue); ``Metric`` is its name in evaluator code.
Metric = MetricValue


@dataclass(frozen=True)
class SubType:
    """What one sub-type measures, declared once by its evaluator: every ``Metric`` it returns and
    every ``MetricSpec`` of the config take unit, direction and name from here."""

    unit: str
    higher_is_better: bool
    label: str
    kind: MetricKind = "other"  # what the study and the selection policies treat it as


class MeasurementError(RuntimeError):
    """A measurement that cannot be trusted (no decode step timed, say): the metric fails, and with it
    the trial, with this message as its reason, rather than record a meaningless best score."""


@dataclass
class EvalModel:
    """A model to evaluate: an ONNX folder (onnxruntime-genai) or an HF folder (PyTorch)."""

    path: Path
    kind: str  # "onnx" | "hf"
    key: str

    @classmethod
    def from_folder(cls, path: Path, key: str | None = None) -> EvalModel:
        from autotune.errors import ModelError

        if (path / "genai_config.json").is_file():
            kind = "onnx"
        elif (path / "config.json").is_file():
            kind = "hf"
        else:
            raise ModelError(str(path), "not a model folder (no genai_config.json or config.json)")
        if key is None:
            from autotune.models.handle import FileHasher

            key = FileHasher(None).folder(path)
        return cls(path=path, kind=kind, key=key)


@dataclass
class EvalContext:
    provider: str
    data: Any = None  # autotune.data.Dataset
    trust_remote_code: bool = False
    # The folder relative paths in user_config resolve against (the config file's).
    base_dir: Path = field(default_factory=Path.cwd)
    # The sub-types the config asks for, with their metadata (a custom evaluator's come from here).
    sub_types: dict[str, SubType] = field(default_factory=dict)
    # Shared by the metrics of one model's evaluation: one measurement can serve several metrics
    # (latency's fresh process also measures peak memory for the footprint metric).
    shared: dict[str, Any] = field(default_factory=dict)


class MetricTypeParams(BaseModel):
    """Base of each evaluator's ``user_config`` model."""

    model_config = ConfigDict(extra="forbid")


class MetricType(ABC):
    """Measures one family of metrics.

    ``SUB_TYPES`` declares each sub-type's metadata once (unit, direction, readable label, kind);
    ``version`` is part of this evaluator's cache key: bump it when a change alters what it measures,
    and only its cached results miss. ``run_after`` orders metric types within one evaluation (a
    type listed there runs first, so a measurement it shares is reused rather than repeated)."""

    type_name: ClassVar[str]
    Params: ClassVar[type[MetricTypeParams]] = MetricTypeParams
    SUB_TYPES: ClassVar[dict[str, SubType]] = {}
    ALIASES: ClassVar[dict[str, str]] = {}
    needs_data: ClassVar[bool] = False
    version: ClassVar[int] = 1
    run_after: ClassVar[tuple[str, ...]] = ()
    # What it measures depends on the model's structure only (speed, memory), not on its weights' values: one
    # measurement serves every model of one structure key (autotune.evaluation.structure).
    per_structure: ClassVar[bool] = False

    @abstractmethod
    def evaluate(self, model: EvalModel, params: Any, ctx: EvalContext) -> dict[str, Metric]:
        """Every sub-type's metric for ``model``."""

    @classmethod
    def check_template(cls, template: Any, *, where: str) -> None:
        """Refuse (a one-line ConfigError at ``where``) a data config's template this metric cannot score;
        checked before anything runs. Default: any template."""
        return None

    @classmethod
    def check_inputs(cls, params: Any, *, where: str, base_dir: Path, sub_types: list[Any]) -> None:
        """Refuse (a one-line ConfigError under ``where``) inputs outside the config this metric reads, before
        anything runs (``validate`` and the run's preflight): the lm_eval metric's tasks. Default: none."""
        return None

    @classmethod
    def cache_inputs(cls, params: Any, *, base_dir: Path, sub_types: list[str]) -> Any:
        """What outside the config a measurement depends on (file contents), for its cache key; ``sub_types``: the
        names the config asks for. Default: nothing."""
        return None

    @classmethod
    def sub_type(cls, name: str, *, where: str) -> str:
        canonical = cls.ALIASES.get(name, name)
        if cls.SUB_TYPES and canonical not in cls.SUB_TYPES:
            hint = did_you_mean(name, list(cls.SUB_TYPES) + list(cls.ALIASES))
            raise ConfigError(where, f"unknown {cls.type_name} sub-type \"{name}\"{hint}")
        return canonical

    @classmethod
    def describe(cls, name: str, *, higher_is_better: bool | None = None) -> SubType:
        """The metadata of sub-type ``name`` (canonical); an evaluator without fixed sub-types (custom)
        gets no unit and the configured direction (default: higher is better)."""
        declared = cls.SUB_TYPES.get(name)
        if declared is None:
            return SubType("", True if higher_is_better is None else higher_is_better, name)
        return declared

    def metric(self, name: str, value: float, ctx: EvalContext | None = None, **fields: Any) -> Metric:
        """A ``Metric`` for sub-type ``name`` with its declared unit, direction and label."""
        info = (ctx.sub_types.get(name) if ctx else None) or self.describe(name)
        return Metric(name=name, value=float(value), unit=info.unit, higher_is_better=info.higher_is_better, label=info.label,
                      **fields)


METRIC_TYPES: Registry[type[MetricType]] = Registry("metric type")


def register_metric_type(*names: str) -> Callable[[type[MetricType]], type[MetricType]]:
    """Class decorator: register an evaluator under its ``type_name`` and extra names."""

    def wrap(cls: type[MetricType]) -> type[MetricType]:
        for name in (cls.type_name, *names):
            METRIC_TYPES.add(name, cls)
        return cls

    return wrap


def environment() -> dict[str, str]:
    """Versions and machine recorded beside every measurement."""
    import importlib.metadata as md

    info = {"cpu": cpu_model(), "machine": platform.machine(), "python": platform.python_version()}
    for pkg in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "onnxruntime-genai-cuda", "torch", "transformers", "peft"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    import os

    info["cpu_count"] = str(os.cpu_count())
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def deprecated_names(module: str, aliases: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``aliases`` (old name -> new name in ``namespace``) with a
    ``DeprecationWarning``: an old name still imports, for one release, and is the same object."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            import warnings

            warnings.warn(f"{module}.{name} is deprecated; use {aliases[name]} (it will be removed in 0.3)",
                          DeprecationWarning, stacklevel=2)
            return namespace[aliases[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


# Deprecated names (0.1) -> their replacements.
__getattr__ = deprecated_names("autotune.evaluation", {
    "Evaluator": "MetricType", "EvaluatorParams": "MetricTypeParams", "register_evaluator": "register_metric_type",
    "EVALUATOR_REGISTRY": "METRIC_TYPES"}, globals())
