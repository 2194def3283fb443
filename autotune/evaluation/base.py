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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        return cls(**data)


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


class EvaluatorParams(BaseModel):
    """Base of each evaluator's ``user_config`` model."""

    model_config = ConfigDict(extra="forbid")


class Evaluator(ABC):
    """Measures one family of metrics. ``SUB_TYPES`` maps sub-type name -> (unit, higher_is_better)."""

    type_name: ClassVar[str]
    Params: ClassVar[type[EvaluatorParams]] = EvaluatorParams
    SUB_TYPES: ClassVar[dict[str, tuple[str, bool]]] = {}
    ALIASES: ClassVar[dict[str, str]] = {}
    needs_data: ClassVar[bool] = False

    @abstractmethod
    def evaluate(self, model: EvalModel, params: Any, ctx: EvalContext) -> dict[str, Metric]:
        """Every sub-type's metric for ``model``."""

    @classmethod
    def sub_type(cls, name: str, *, where: str) -> str:
        canonical = cls.ALIASES.get(name, name)
        if cls.SUB_TYPES and canonical not in cls.SUB_TYPES:
            hint = did_you_mean(name, list(cls.SUB_TYPES) + list(cls.ALIASES))
            raise ConfigError(where, f"unknown {cls.type_name} sub-type \"{name}\"{hint}")
        return canonical


EVALUATOR_REGISTRY: Registry[type[Evaluator]] = Registry("metric type")


def register_evaluator(*names: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator: register an evaluator under its ``type_name`` and extra names."""

    def wrap(cls: type[Evaluator]) -> type[Evaluator]:
        for name in (cls.type_name, *names):
            EVALUATOR_REGISTRY.add(name, cls)
        return cls

    return wrap


def get_evaluator(type_name: str, *, where: str) -> type[Evaluator]:
    import autotune.evaluation  # noqa: F401  (registers the built-in evaluators)

    cls = EVALUATOR_REGISTRY.get(type_name)
    if cls is None:
        known = sorted({c.type_name for _, c in EVALUATOR_REGISTRY.items()})
        raise ConfigError(where, f"unknown metric type \"{type_name}\"{did_you_mean(type_name, known)} (known: {', '.join(known)})")
    return cls


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
