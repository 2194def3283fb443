"""Evaluate a model with a configured evaluator: every metric cached by (model, metric config, provider, data)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.cache import Cache, hash_key
from autotune.config.errors import validate_model
from autotune.config.schema import EvaluatorConfig, GoalConfig, RunConfig
from autotune.errors import ConfigError
from autotune.evaluation import get_metric_type
from autotune.evaluation.base import EvalContext, EvalModel, Metric, MetricType, SubType, environment
from autotune.evaluation.goals import Bound, resolve_goal

log = logging.getLogger("autotune")
# The layout of a cached evaluation; what one evaluator measures is versioned by its own ``version``.
EVALUATION_VERSION = 1


@dataclass(frozen=True)
class MetricSpec:
    key: str  # "<metric name>-<sub-type>", Olive's naming
    metric_index: int
    sub_type: str
    higher_is_better: bool
    priority: int
    goal: GoalConfig | None
    unit: str
    label: str = ""  # readable, e.g. "decode p50 (ms/token)"
    kind: str = "other"  # accuracy | latency | size | memory | other, as the evaluator declares it


def metric_specs(evaluator: EvaluatorConfig, *, where: str = "evaluators") -> list[MetricSpec]:
    specs: list[MetricSpec] = []
    for i, metric in enumerate(evaluator.metrics):
        mpath = f"{where}.metrics[{i}]"
        cls = get_metric_type(metric.type, where=f"{mpath}.type")
        validate_model(cls.Params, metric.user_config, f"{mpath}.user_config")
        for j, sub in enumerate(metric.sub_types):
            name = cls.sub_type(sub.name, where=f"{mpath}.sub_types[{j}].name")
            info = cls.describe(name, higher_is_better=sub.higher_is_better)
            hib = info.higher_is_better if sub.higher_is_better is None else sub.higher_is_better
            specs.append(MetricSpec(f"{metric.name}-{name}", i, name, hib, sub.priority, sub.goal, info.unit, info.label, info.kind))
    keys = [s.key for s in specs]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(where, f"metric '{key}' is defined twice")
    return specs


class ModelEvaluator:
    """Evaluates models for one run config and evaluator, through the evaluation cache."""

    def __init__(self, config: RunConfig, *, cache: Cache, data_loader: Any, evaluator_name: str | None = None,
                 use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self.config = config
        self.cache = cache
        self.data_loader = data_loader
        name = evaluator_name or config.engine.evaluator
        if not name or name not in config.evaluators:
            raise ConfigError("engine.evaluator", "no evaluator configured")
        self.name = name
        # The config's named set of metrics (evaluators.<name>), not a metric type.
        self.metric_set = config.evaluators[name]
        self.specs = metric_specs(self.metric_set, where=f"evaluators.{name}")

    def _reads_data(self, index: int) -> bool:
        """Metric ``index`` reads data rows (its value depends on the data and the split)."""
        metric = self.metric_set.metrics[index]
        return metric.data_config is not None or get_metric_type(metric.type, where="").needs_data

    def _data_for(self, index: int) -> Any:
        return self.data_loader(self.data_name(index)) if self._reads_data(index) else None

    def metric_indices(self) -> set[int]:
        """Every metric of the set, by index."""
        return set(range(len(self.metric_set.metrics)))

    def all_cached(self, model: Any) -> bool:
        """Whether every metric of ``model`` is in the evaluation cache, as this evaluator measures now."""
        return all(self.cache.get_json(self.cache_key(i, model, self._data_for(i))) is not None for i in self.metric_indices())

    def data_name(self, index: int) -> str:
        """The data config metric ``index`` reads (named, or the only one)."""
        from autotune.data import resolve_data_name

        return resolve_data_name(self.config, self.metric_set.metrics[index].data_config,
                                 where=f"evaluators.{self.name}.metrics[{index}].data_config", missing="name a data config")

    def data_names(self) -> list[str]:
        """Every data config this evaluator reads (for the run's preflight)."""
        return [self.data_name(i) for i in range(len(self.metric_set.metrics)) if self._reads_data(i)]

    def cache_key(self, index: int, model: EvalModel, data: Any) -> str:
        """What changes a measurement: the evaluator type, its version and user_config, the data, the model
        and the provider. Priorities and goals only change how results are used, so they stay out."""
        metric = self.metric_set.metrics[index]
        cls = get_metric_type(metric.type, where="")
        structure = self.structure_of(model) if cls.per_structure else None
        key: dict[str, Any] = {
            "evaluation": EVALUATION_VERSION, "type": cls.type_name, "version": cls.version,
            # a speed or memory metric is keyed by what it depends on: the model's structure, when it has one
            **({"structure": structure} if structure else {"model": model.key}),
            "user_config": metric.user_config, "provider": self.config.engine.provider, "data": getattr(data, "key", None),
            "kind": model.kind,
        }
        params = validate_model(cls.Params, metric.user_config, f"evaluators.{self.name}.metrics[{index}].user_config")
        inputs = cls.cache_inputs(params, base_dir=self.config.config_dir, sub_types=[s.name for s in metric.sub_types])
        if inputs is not None:  # absent otherwise: every other metric type keeps its cached results
            key["inputs"] = inputs
        return hash_key(key)

    def structure_of(self, model: EvalModel) -> str | None:
        """The model's structure key on this run's provider and thread share (None: not an ONNX folder)."""
        from autotune.evaluation.structure import structure_key
        from autotune.threads import session_threads

        return structure_key(model.path, provider=self.config.engine.provider, session={"threads": session_threads()})

    def _order(self) -> list[int]:
        """Metric indices in the order to measure them: a type named in another's ``run_after`` first."""
        types = [get_metric_type(m.type, where="") for m in self.metric_set.metrics]
        return sorted(range(len(types)), key=lambda i: any(t.type_name in types[i].run_after for t in types))

    def _sub_types(self, cls: type[MetricType], index: int) -> dict[str, SubType]:
        out = {}
        for sub in self.metric_set.metrics[index].sub_types:
            name = cls.sub_type(sub.name, where="")
            out[name] = cls.describe(name, higher_is_better=sub.higher_is_better)
        return out

    def evaluate(self, model: EvalModel, *, only: set[int] | None = None) -> dict[str, Metric]:
        """Every metric of the evaluator (or the metrics at indices ``only``) for ``model``."""
        provider = self.config.engine.provider
        results: dict[str, Metric] = {}
        shared: dict[str, Any] = {}  # one model's evaluation: measurements the metrics share
        for index in self._order():
            if only is not None and index not in only:
                continue
            metric = self.metric_set.metrics[index]
            cls = get_metric_type(metric.type, where="")
            data = self._data_for(index)
            key = self.cache_key(index, model, data)
            cached = self.cache.get_json(key) if self.use_cache else None
            if cached is not None:
                measured = {k: Metric.model_validate(v) for k, v in cached["metrics"].items()}
                log.debug("metric %s: cache hit", metric.name)
            else:
                params = validate_model(cls.Params, metric.user_config, f"evaluators.{self.name}.metrics[{index}].user_config")
                began = time.perf_counter()
                ctx = EvalContext(provider=provider, data=data, trust_remote_code=self.config.input_model.trust_remote_code,
                                  base_dir=self.config.config_dir, sub_types=self._sub_types(cls, index), shared=shared)
                measured = cls().evaluate(model, params, ctx)
                seconds = time.perf_counter() - began
                structure = self.structure_of(model) if cls.per_structure else None
                if structure:  # which structure, measured on which model: the trials that share it say so
                    for metric_value in measured.values():
                        metric_value.details.update({"structure_key": structure, "measured_on": model.key})
                log.info("metric %-10s measured in %.1f s", metric.name, seconds)
                self.cache.put_json(key, {"metrics": {k: v.model_dump(mode="json") for k, v in measured.items()}, "seconds": seconds})
            for spec in self.specs:
                if spec.metric_index == index:
                    if spec.sub_type not in measured:
                        raise ConfigError(f"evaluators.{self.name}.metrics[{index}]", f"the evaluator returned no '{spec.sub_type}'")
                    results[spec.key] = measured[spec.sub_type]
        # In the config's order, whatever ran first.
        return {spec.key: results[spec.key] for spec in self.specs if only is None or spec.metric_index in only}

    def data_metric_indices(self) -> set[int]:
        """The metrics that read data rows (whose value depends on the split)."""
        return {i for i in self.metric_indices() if self._reads_data(i)}

    def bounds(self, baseline: dict[str, Metric] | None, *, relative: bool = True) -> list[Bound]:
        """Each goal as a bound; ``relative=False`` leaves out the goals relative to the baseline."""
        out = []
        for spec in self.specs:
            if spec.goal is None or (not relative and spec.goal.type != "threshold"):
                continue
            base = baseline[spec.key].value if baseline and spec.key in baseline else None
            try:
                out.append(resolve_goal(spec.key, spec.goal.type, spec.goal.value, spec.higher_is_better, base))
            except ValueError as exc:
                raise ConfigError(f"evaluators.{self.name}", str(exc)) from None
        return out


def metrics_record(metrics: dict[str, Metric], baseline: dict[str, Metric] | None, bounds: list[Bound]) -> dict[str, Any]:
    return {
        "metrics": {k: v.model_dump(mode="json") for k, v in metrics.items()},
        "baseline": {k: v.model_dump(mode="json") for k, v in (baseline or {}).items()},
        "goals": [
            {"metric": b.metric, "bound": b.describe(), "met": b.violation(metrics[b.metric].value) <= 0}
            for b in bounds if b.metric in metrics
        ],
        "environment": environment(),
    }


def evaluate_run(config: RunConfig, pipeline: Any, result: Any, model_dir: Path) -> dict[str, Any] | None:
    """Evaluate a single run's final model and its baseline; None when no evaluator is configured."""
    if not config.engine.evaluator:
        return None
    evaluator = ModelEvaluator(config, cache=pipeline.cache, data_loader=pipeline.data)
    final = EvalModel(path=result.model.path, kind=result.model.kind, key=result.model.key)
    metrics = evaluator.evaluate(final)
    baseline = None
    if config.engine.evaluate_input_model:
        source = result.input_model
        baseline = evaluator.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
    return metrics_record(metrics, baseline, evaluator.bounds(baseline))
