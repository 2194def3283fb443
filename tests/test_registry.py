"""One registry type for passes, evaluators and policies: a name registered twice is an error."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.registry import DuplicateNameError, Registry


def test_a_second_registration_under_a_taken_name_is_refused_case_insensitively() -> None:
    registry: Registry[Any] = Registry("thing")
    registry.add("Alpha", object)
    with pytest.raises(DuplicateNameError, match="thing 'alpha' is already registered"):
        registry.add("alpha", int)
    assert registry.get("ALPHA") is object and registry.names() == ["Alpha"]
    assert registry.suggestion("alpah") == "; did you mean 'Alpha'?"


def test_a_pass_an_evaluator_and_a_policy_cannot_replace_a_built_in() -> None:
    import autotune.evaluation  # noqa: F401  (the built-in evaluators)
    from autotune.evaluation.base import MetricType, register_metric_type
    from autotune.passes import Pass, get_pass, register_pass
    from autotune.selection import Policy, register_policy

    lora = get_pass("LoRA", path="passes.lora.type")

    class Impostor(Pass):
        type_name = "LoRA"

    with pytest.raises(DuplicateNameError):
        register_pass()(Impostor)  # type: ignore[type-abstract]
    assert get_pass("lora", path="x") is lora

    class FakeAccuracy(MetricType):
        type_name = "accuracy"

    with pytest.raises(DuplicateNameError):
        register_metric_type()(FakeAccuracy)  # type: ignore[type-abstract]

    class Greedy(Policy):
        name = "knee"

    with pytest.raises(DuplicateNameError):
        register_policy(Greedy)  # type: ignore[type-abstract]


def test_the_config_schema_validates_policies_against_the_registry() -> None:
    from autotune.config.schema import SelectionConfig
    from autotune.selection import POLICIES

    assert {"max-accuracy", "min-latency", "knee", "weighted"} <= set(POLICIES.names())
    with pytest.raises(ValueError, match="expected one of"):
        SelectionConfig(policy="best")
