"""Search-space parsing: native Optuna distributions, conditionals, grids without duplicates."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.plan import build_plan
from autotune.search.sampling import grid_points
from autotune.space import Categorical, FloatRange, IntRange, parse_spec


def test_lists_are_categorical_and_ranges_are_native_distributions() -> None:
    cat = parse_spec([8, 16, 32], path="p", list_typed=False)
    assert isinstance(cat, Categorical)
    assert isinstance(cat.distribution(), optuna.distributions.CategoricalDistribution)
    ints = parse_spec({"low": 4, "high": 64, "step": 4}, path="p", list_typed=False)
    assert ints == IntRange(4, 64, 4, False)
    assert isinstance(ints.distribution(), optuna.distributions.IntDistribution)
    lr = parse_spec({"low": 1e-5, "high": 1e-3, "log": True}, path="p", list_typed=False)
    assert lr == FloatRange(1e-5, 1e-3, None, True)
    dist = lr.distribution()
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log


def test_a_list_of_strings_is_a_value_for_a_list_parameter_and_a_list_of_lists_a_choice() -> None:
    assert parse_spec(["q_proj", "v_proj"], path="p", list_typed=True) is None
    spec = parse_spec([["q_proj"], ["q_proj", "v_proj"], "all-linear"], path="p", list_typed=True)
    assert isinstance(spec, Categorical) and len(spec.choices) == 3


@pytest.mark.parametrize(("value", "message"), [
    ({"low": 5, "high": 1}, "greater than high"),
    ({"low": 1, "high": 5, "step": -1}, "positive step"),
    ({"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
    ([], "non-empty"),
    ([1, 1], "listed twice"),
])
def test_impossible_spaces_are_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(value, path="passes.lora.r", list_typed=False)


def _config(tmp_path: Path, build: dict) -> dict:
    return {
        "input_model": {"type": "HfModel", "model_path": str(tmp_path)},
        "passes": {"build": {"type": "ModelBuilder", **build}},
        "engine": {"search_strategy": {"sampler": "grid"}},
    }


def test_block_size_applies_only_to_quantized_precisions(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, {"precision": ["int4", "fp32"], "block_size": [32, 128]}))
    points = grid_points(build_plan(config))
    assert {"build.precision": "fp32"} in points
    assert not any(p.get("build.precision") == "fp32" and "build.block_size" in p for p in points)
    assert len(points) == 3  # int4 x {32, 128} + fp32, no duplicate fp32 points
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)


def test_fp16_on_cpu_in_a_space_is_refused_before_any_trial(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16"):
        load_config(_config(tmp_path, {"precision": ["int4", "fp16"]}))


def test_searchable_values_uses_the_pass_default_space(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, {"precision": "SEARCHABLE_VALUES"}))
    step = build_plan(config)[0]
    assert step.space["precision"] == Categorical(("int4", "int8", "fp32"))


def test_reusable_space_by_name(tmp_path: Path) -> None:
    raw = _config(tmp_path, {"precision": "int4"})
    raw["engine"]["search_strategy"]["search_space"] = "quantization"
    step = build_plan(load_config(raw))[0]
    assert set(step.space) == {"precision", "block_size", "accuracy_level"}


def test_unknown_sampler_is_a_clear_error(tmp_path: Path) -> None:
    raw = _config(tmp_path, {"precision": "int4"})
    raw["engine"]["search_strategy"]["sampler"] = "bayes"
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    assert info.value.where == "engine.search_strategy.sampler"


def test_alpha_as_a_multiple_of_r(tmp_path: Path) -> None:
    raw = _config(tmp_path, {"precision": "int4"})
    raw["passes"] = {"lora": {"type": "LoRA", "r": [8, 16], "alpha_ratio": [1.0, 2.0], "alpha": [16, 32]},
                     "merge": {"type": "MergeAdapterWeights"}, **raw["passes"]}
    raw["data_configs"] = [{"name": "d", "data_name": "json", "data_files": str(tmp_path / "d.jsonl"), "text_template": "{a} {b}"}]
    steps = build_plan(load_config(raw))
    points = grid_points(steps)
    assert all("lora.alpha" not in p for p in points)  # alpha_ratio is always set here, so alpha never applies
    assert len(points) == 4
    params = steps[0].params({"lora.r": 16, "lora.alpha_ratio": 2.0})
    assert params.effective_alpha == 32.0
    assert "alpha" not in params.resolved() and params.resolved()["alpha_ratio"] == 2.0
