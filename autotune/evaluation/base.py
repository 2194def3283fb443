"""The Evaluator interface, its registry, and the typed metric record every evaluator returns."""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from autotune.errors import ConfigError, did_you_mean
from autotune.records import MetricKind  # one definition: what the study and the policies treat a metric as
from autotune.registry import Registry


@dataclass
class Metric:
    """One measured value with its unit and direction; accuracy carries n and a 95% interval."""

    name: str
    value: float
    unit: str
    higher_is_better: bool
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    flag: str | None = None  # set when the measurement is not trustworthy (e.g. high variation)
    details: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # readable, e.g. "decode p50 (ms/token)"; None in records older than it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})



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


class EvaluatorParams(BaseModel):
    """Base of each evaluator's ``user_config`` model."""

    model_config = ConfigDict(extra="forbid")


class Evaluator(ABC):
    """Measures one family of metrics.

    ``SUB_TYPES`` declares each sub-type's metadata once (unit, direction, readable label, kind);
    ``version`` is part of this evaluator's cache key: bump it when a change alters what it measures,
    and only its cached results miss. ``run_after`` orders metric types within one evaluation (a
    type listed there runs first, so a measurement it shares is reused rather than repeated)."""

    type_name: ClassVar[str]
    Params: ClassVar[type[EvaluatorParams]] = EvaluatorParams
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
        return Metric(name, float(value), info.unit, info.higher_is_better, label=info.label, **fields)


EVALUATOR_REGISTRY: Registry[type[Evaluator]] = Registry("metric type")


def register_evaluator(*names: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator: register an evaluator under its ``type_name`` and extra names."""

    def wrap(cls: type[Evaluator]) -> type[Evaluator]:
        for name in (cls.type_name, *names):
            EVALUATOR_REGISTRY.add(name, cls)
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
