"""The evaluator interface: one registry that refuses a duplicate name, sub-type metadata declared once,
and a version per evaluator in the evaluation cache key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.evaluation import get_metric_type
from autotune.evaluation.base import (
    METRIC_TYPES,
    EvalContext,
    EvalModel,
    Metric,
    MetricType,
    SubType,
    register_metric_type,
)
from autotune.evaluation.footprint import FootprintMetricType
from autotune.evaluation.latency import LatencyMetricType
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline
from autotune.registry import DuplicateNameError
from tests.conftest import tiny_config


def test_a_second_evaluator_under_a_taken_name_is_refused() -> None:
    get_metric_type("accuracy", where="")  # the built-ins are registered

    class Impostor(MetricType):
        type_name = "latency"

        def evaluate(self, model: EvalModel, params: Any, ctx: EvalContext) -> dict[str, Metric]:
            return {}

    with pytest.raises(DuplicateNameError, match="latency"):
        register_metric_type()(Impostor)
    assert METRIC_TYPES.get("latency") is LatencyMetricType
    Impostor.type_name = "impostor_unique_name"
    with pytest.raises(DuplicateNameError, match="size"):  # an alias of footprint is taken too
        register_metric_type("size")(Impostor)


def evaluator_for(tmp_path: Path, tiny_model: Path, tone_file: Path) -> ModelEvaluator:
    raw = tiny_config(tiny_model, tone_file, tmp_path)
    raw["evaluators"] = {"all": {"metrics": [
        {"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}]},
        {"name": "lat", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}]},
        {"name": "mem", "type": "footprint", "sub_types": [{"name": "size_mb"}, {"name": "memory", "higher_is_better": True}]},
        {"name": "mine", "type": "custom", "sub_types": [{"name": "anything", "higher_is_better": False}],
         "user_config": {"function": "x.py:f"}},
    ]}}
    raw["engine"]["evaluator"] = "all"
    config = load_config(raw, base_dir=tmp_path)
    cache = Cache(config.engine.cache_dir)
    return ModelEvaluator(config, cache=cache, data_loader=Pipeline(config, cache=cache).data)


def test_bumping_one_evaluators_version_changes_only_its_cache_key(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    evaluator = evaluator_for(tmp_path, tiny_model, tone_file)
    model = EvalModel(path=tiny_model, kind="hf", key="m")

    def keys() -> list[str]:
        return [evaluator.cache_key(i, model, evaluator._data_for(i)) for i in range(4)]

    before = keys()
    assert keys() == before  # stable
    monkeypatch.setattr(LatencyMetricType, "version", LatencyMetricType.version + 1)
    after = keys()
    assert [b == a for b, a in zip(before, after, strict=True)] == [True, False, True, True]


def test_sub_type_metadata_is_declared_once_and_reaches_specs_and_metrics(tmp_path: Path, tiny_model: Path,
                                                                           tone_file: Path) -> None:
    specs = {s.key: s for s in evaluator_for(tmp_path, tiny_model, tone_file).specs}
    decode = specs["lat-decode_ms_per_token_p50"]
    assert (decode.unit, decode.higher_is_better, decode.label, decode.kind) == ("ms/token", False, "decode p50 (ms/token)", "latency")
    assert specs["mem-size_mb"].kind == "size" and specs["mem-peak_rss_mb"].kind == "memory"
    assert specs["mem-peak_rss_mb"].higher_is_better is True  # the config's override wins in the spec
    assert specs["acc-accuracy"].kind == "accuracy"
    custom = specs["mine-anything"]
    assert (custom.unit, custom.higher_is_better, custom.kind) == ("", False, "other")
    # Every sub-type is declared as a SubType, and a Metric built by the evaluator carries it.
    for cls in {c for _, c in METRIC_TYPES.items()}:
        assert all(isinstance(v, SubType) for v in cls.SUB_TYPES.values())
    metric = FootprintMetricType().metric("size_mb", 12.5)
    assert (metric.unit, metric.higher_is_better, metric.label) == ("MB", False, "size on disk (MB)")
    assert Metric.model_validate({k: v for k, v in metric.model_dump().items() if k != "label"}).label is None  # older records load


def test_the_old_metric_type_names_still_import_with_a_deprecation_warning() -> None:
    import autotune.evaluation as evaluation
    from autotune.evaluation import base

    for old, new in {"Evaluator": "MetricType", "EvaluatorParams": "MetricTypeParams",
                     "register_evaluator": "register_metric_type", "EVALUATOR_REGISTRY": "METRIC_TYPES"}.items():
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new}"):
            assert getattr(evaluation, old) is getattr(base, new)
    with pytest.warns(DeprecationWarning, match="get_evaluator is deprecated"):
        assert evaluation.get_evaluator is evaluation.get_metric_type
    with pytest.raises(AttributeError):
        evaluation.NoSuchName  # noqa: B018
    import importlib

    for module, old in [("accuracy", "AccuracyEvaluator"), ("latency", "LatencyEvaluator"), ("footprint", "FootprintEvaluator"),
                        ("generation", "GenerationEvaluator"), ("harness", "LmEvalEvaluator"), ("custom", "CustomEvaluator")]:
        mod = importlib.import_module(f"autotune.evaluation.{module}")
        new = old.replace("Evaluator", "MetricType")
        with pytest.warns(DeprecationWarning, match=f"autotune.evaluation.{module}.{old} is deprecated; use {new}"):
            assert getattr(mod, old) is getattr(mod, new) and issubclass(getattr(mod, new), base.MetricType)
