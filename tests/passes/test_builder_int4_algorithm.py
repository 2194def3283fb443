"""The builder's int4 algorithm: ``algo_config: auto`` calibrates int4 by GPTQ when a data config is at hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import autotune
from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.plan import build_plan, check_passes, resolve
from tests.conftest import generate_one, tiny_config


def _build_step(config: dict):  # noqa: ANN202
    loaded = load_config(config)
    return {s.name: s for s in resolve(build_plan(loaded))}["build"], loaded


@pytest.mark.parametrize(("precision", "algorithm"), [("int4", "gptq"), ("int8", "default")])
def test_auto_calibrates_int4_by_gptq_and_rounds_int8(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                      precision: str, algorithm: str) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["build"]["precision"] = precision
    step, _ = _build_step(config)
    resolved = step.params().resolved()
    assert resolved["algo_config"] == algorithm  # the record and the cache key name what runs, never "auto"
    assert ("calibration_rows" in resolved) == (algorithm == "gptq")
    assert ("train_data_config" in resolved) == (algorithm == "gptq")


def test_fp32_and_an_explicit_algorithm_keep_their_keys_free_of_calibration(tmp_path: Path, tiny_model: Path,
                                                                             tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["build"]["precision"] = "fp32"
    step, _ = _build_step(config)
    assert step.params().resolved() == {"precision": "fp32", "exclude_embeds": False, "exclude_lm_head": False}
    config["passes"]["build"].update(precision="int4", algo_config="default")
    step, _ = _build_step(config)
    assert step.params().resolved()["algo_config"] == "default"
    assert "calibration_rows" not in step.params().resolved()


def test_gptq_refuses_int8_and_builder_only_options(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["build"].update(precision="int8", algo_config="gptq")
    with pytest.raises(ConfigError, match=r"passes\.build.*algo_config"):
        check_passes(load_config(config))
    config["passes"]["build"].update(precision="int4", algo_config="auto", matmul_mixed_precision="last_matmul:int8")
    with pytest.raises(ConfigError, match=r"matmul_mixed_precision"):
        check_passes(load_config(config))


@pytest.mark.slow
def test_a_config_that_says_int4_gets_a_gptq_model_genai_loads(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)  # build: ModelBuilder int4, no algo_config given
    autotune.run(config)
    model = tmp_path / "out" / "model"
    import onnx

    ops = {n.op_type for n in onnx.load(str(model / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    stats = json.loads((model / "quant_stats.json").read_text())
    assert stats["algorithm"] == "gptq" and stats["calibration_rows"] > 0
    assert len(generate_one(model)) == 1
