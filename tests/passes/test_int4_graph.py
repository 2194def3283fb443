"""Issue 14: every int4 option shows in the graph as claimed (block size and bits on MatMulNBits, excluded
nodes still float MatMul, mixed-precision layers at 8 bits, the tied embedding on the 4-bit LM head),
calibration reads training rows only, and the passes run as alternatives of a study's quant group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TONES, generate_one, make_tiny_llama, tiny_config
from tests.passes.test_int4_support import dataset, fp32_build, run_pass

EXCLUDED = "/model/layers.0/mlp/down_proj/MatMul"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("int4-graph")
    rows = [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]
    model = make_tiny_llama(root / "tied", [r["phrase"] for r in rows], tie_word_embeddings=True)
    return {"root": root, "model": model, "fp32": fp32_build(model, root / "fp32"), "data": dataset(model, root)}


def graph(folder: Path) -> Any:
    import onnx

    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def nbits(model: Any) -> dict[str, dict[str, int]]:
    """MatMulNBits node name -> its integer attributes."""
    return {n.name: {a.name: a.i for a in n.attribute} for n in model.graph.node if n.op_type == "MatMulNBits"}


def float_matmuls(model: Any) -> set[str]:
    weights = {t.name for t in model.graph.initializer}
    return {n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights}


@pytest.mark.parametrize(("pass_type", "params"), [
    ("OnnxGptqQuantization", {"block_size": 16, "calibration_rows": 8}),
    ("OnnxGptqQuantization", {"block_size": 64, "calibration_rows": 8, "is_symmetric": False, "accuracy_level": 4}),
    ("OnnxMixedPrecisionQuantization", {"algorithm": "k_quant", "block_size": 32, "calibration_rows": 8}),
])
def test_block_size_and_bits_show_on_every_matmul(setup: dict[str, Any], pass_type: str, params: dict[str, Any]) -> None:
    out = run_pass(pass_type, params, setup["fp32"], setup["root"] / f"bs-{pass_type}-{params['block_size']}", setup["data"])
    model = graph(out)
    quantized = nbits(model)
    high = set(json.loads((out / "quant_stats.json").read_text())["kept_high"])
    body = {name: attrs for name, attrs in quantized.items() if name.removesuffix("_Q4").removesuffix("_Q8") not in high}
    assert len(body) >= 10 and not float_matmuls(model)
    assert {(a["bits"], a["block_size"]) for a in body.values()} == {(4, params["block_size"])}
    if params.get("accuracy_level"):
        assert {a["accuracy_level"] for a in body.values()} == {params["accuracy_level"]}
    # The tied embedding reads the LM head's 4-bit blocks; no fp32 copy of the table is left.
    gathers = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(gathers) == 1 and {a.name: a.i for a in gathers[0].attribute}["block_size"] in {params["block_size"], 32}
    assert not [t for t in model.graph.initializer if t.data_type == 1 and list(t.dims) in ([64, 512], [512, 64])]
    assert len(generate_one(out)) == 1


@pytest.mark.parametrize("pass_type", ["OnnxGptqQuantization", "OnnxMixedPrecisionQuantization"])
def test_excluded_nodes_stay_float(setup: dict[str, Any], pass_type: str) -> None:
    params: dict[str, Any] = {"nodes_to_exclude": [EXCLUDED], "calibration_rows": 8}
    out = run_pass(pass_type, params, setup["fp32"], setup["root"] / f"ex-{pass_type}", setup["data"])
    model = graph(out)
    assert float_matmuls(model) == {EXCLUDED}
    assert f"{EXCLUDED}_Q4" not in nbits(model) and len(nbits(model)) >= 10


@pytest.mark.parametrize(("unit", "high", "int8_level"), [("layers", "int8", None), ("layers", "fp32", None), ("bytes", "int8", 0)])
def test_mixed_precision_keeps_the_most_sensitive_layers_high(setup: dict[str, Any], unit: str, high: str,
                                                              int8_level: int | None) -> None:
    params: dict[str, Any] = {"budget": 0.3, "budget_unit": unit, "high_precision": high, "calibration_rows": 8}
    if int8_level is not None:
        params["int8_accuracy_level"] = int8_level
    out = run_pass("OnnxMixedPrecisionQuantization", params, setup["fp32"], setup["root"] / f"mixed-{unit}-{high}", setup["data"])
    stats = json.loads((out / "quant_stats.json").read_text())
    scores, kept = stats["sensitivity"], stats["kept_high"]
    assert kept and all(scores[k] >= max(scores[o] for o in scores if o not in kept) for k in kept if unit == "layers")
    model = graph(out)
    if unit == "layers":
        assert len(kept) == round(0.3 * len(scores))
    else:  # the kept layers' weights fit in 30% of all weights
        import onnx

        from autotune.quant.sensitivity import weight_sizes

        sizes = weight_sizes(onnx.load(str(setup["fp32"] / "model.onnx"), load_external_data=False))
        assert sum(sizes[k] for k in kept) <= 0.3 * sum(sizes.values())
    if high == "int8":
        assert {name.removesuffix("_Q8") for name, a in nbits(model).items() if a["bits"] == 8} == set(kept)
        assert not float_matmuls(model)
        # ONNX Runtime's CPU 8-bit MatMulNBits is fast only with int8 activations (level 4 unless set; issue 21
        # item 4); an int8_accuracy_level the config gives is honoured (issue 28 item 11; 0: the attribute's default)
        expected = 4 if int8_level is None else int8_level
        assert {a.get("accuracy_level", 0) for a in nbits(model).values() if a["bits"] == 8} == {expected}
        assert stats["int8_accuracy_level"] == expected
    else:
        assert float_matmuls(model) == set(kept)
    assert {a["bits"] for name, a in nbits(model).items() if name.removesuffix("_Q4").removesuffix("_Q8") not in kept} == {4}
    assert stats["seconds"] > 0 and stats["peak_rss_mb"] > 0 and stats["calibration_rows"] == 8
    assert len(generate_one(out)) == 1


def test_int8_accuracy_level_is_4_on_cpu_unless_given_and_enters_the_key_only_when_given() -> None:
    from autotune.passes.onnx_mixed_precision_quantization import MixedPrecisionParams
    from autotune.passes.weight_only_pass import int8_accuracy_level

    assert int8_accuracy_level("CPUExecutionProvider", 0) == 4 and int8_accuracy_level("CUDAExecutionProvider", 2) == 2
    assert int8_accuracy_level("CPUExecutionProvider", 0, 0) == 0 and int8_accuracy_level("CUDAExecutionProvider", 2, 1) == 1
    assert "int8_accuracy_level" not in MixedPrecisionParams().resolved()  # unset: the cache key and record as before
    assert MixedPrecisionParams(int8_accuracy_level=0).resolved()["int8_accuracy_level"] == 0  # given: another key
    assert "int8_accuracy_level" not in MixedPrecisionParams(int8_accuracy_level=0, high_precision="fp32").resolved()


def test_builder_quantization_options_show_in_the_graph(setup: dict[str, Any]) -> None:
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    out = setup["root"] / "builder"
    params = ModelBuilderParams(precision="int4", block_size=16, nodes_to_exclude=["/model/layers.1/attn/o_proj/MatMul"],
                                matmul_mixed_precision="last_matmul:int8")
    build_onnx(setup["model"], out, params, provider="CPUExecutionProvider", work_dir=setup["root"] / "builder-work")
    model = graph(out)
    quantized = nbits(model)
    assert float_matmuls(model) == {"/model/layers.1/attn/o_proj/MatMul"}
    head = [a for name, a in quantized.items() if name.startswith("/lm_head/")]
    assert [a["bits"] for a in head] == [8]
    assert {(a["bits"], a["block_size"]) for name, a in quantized.items() if not name.startswith("/lm_head/")} == {(4, 16)}


def test_calibration_reads_templated_training_rows_only(setup: dict[str, Any]) -> None:
    import onnx

    from autotune.data import encode_example
    from autotune.models.loading import load_tokenizer
    from autotune.quant.calibration import calibration_feeds, calibration_rows

    data = setup["data"]
    rows = calibration_rows(data, 10_000)
    prompts = {data.template.prompt(r) for r in rows}
    assert len(rows) == len(data.train) and prompts == {data.template.prompt(r) for r in data.train}
    assert not prompts & {data.template.prompt(r) for r in data.eval}
    feeds = calibration_feeds(setup["fp32"], onnx.load(str(setup["fp32"] / "model.onnx"), load_external_data=False), data, 3)
    tokenizer = load_tokenizer(setup["fp32"])
    for feed, row in zip(feeds, rows[:3], strict=True):  # prompt + answer + EOS, exactly as LoRA trains on it
        expected, _ = encode_example(tokenizer, data.template.prompt(row), data.template.answer(row), max_len=data.source_max_len)
        assert feed["input_ids"][0].tolist() == expected
        assert "### The tone is:\n" + data.template.answer(row) in tokenizer.decode(expected)


def test_int4_passes_run_as_alternatives_of_a_study_quant_group(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import optuna

    import autotune

    config = tiny_config(tiny_model, tone_file, tmp_path)
    del config["passes"]["build"]
    config["passes"]["lora"]["training_args"]["max_steps"] = 1
    config["passes"]["quant"] = [
        {"type": "OnnxGptqQuantization", "calibration_rows": 8, "damp_percent": [0.01, 0.1]},
        {"type": "OnnxBlockWiseRtnQuantization"},
        {"type": "OnnxMixedPrecisionQuantization", "calibration_rows": 8, "budget": 0.2},
    ]
    config["evaluators"] = {"acc": {"metrics": [{"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
                                                 "user_config": {"perplexity": False}}]}}
    config["engine"].update({"evaluator": "acc", "evaluate_input_model": False, "search_strategy": {"sampler": "grid"}})
    autotune.run(config)
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.params["quant.pass"] for t in study.trials} == {"OnnxGptqQuantization", "OnnxBlockWiseRtnQuantization",
                                                               "OnnxMixedPrecisionQuantization"}


def test_a_zero_budget_is_a_config_error(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.config_checks import load_config
    from autotune.errors import ConfigError
    from autotune.plan import check_passes

    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["build"] = {"type": "OnnxMixedPrecisionQuantization", "budget": 0}
    with pytest.raises(ConfigError) as info:
        check_passes(load_config(config))
    assert info.value.where.endswith("build.budget") and "budget of 0" in info.value.message


@pytest.mark.parametrize(("quant", "where"), [({"type": "OnnxHqqQuantization"}, "build.type"),
                                              ({"type": "OnnxMixedPrecisionQuantization", "algorithm": "hqq"}, "build.algorithm")])
def test_hqq_is_refused_at_validate_with_its_reason(tmp_path: Path, tiny_model: Path, tone_file: Path, quant: dict[str, Any],
                                                    where: str) -> None:
    # Issue 21 item 5: ONNX Runtime's HQQ lost 49 points on a fine-tuned SmolLM2; it is withdrawn, not run.
    from autotune.config_checks import load_config
    from autotune.errors import ConfigError
    from autotune.plan import check_passes

    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["build"] = quant
    with pytest.raises(ConfigError) as info:
        check_passes(load_config(config))
    assert info.value.where.endswith(where) and "HQQ is withdrawn" in info.value.message and "\n" not in info.value.message
