"""The config loader: every accepted shape gives the same typed values; every mistake is one line naming its key.

These tests only load configs (no training, no model building). Passes are validated by
``autotune.plan.build_plan``/``check_passes`` as part of ``load_config``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.config.schema import RunConfig
from autotune.config_checks import load_config
from autotune.data import load_data
from autotune.errors import ConfigError, DataError, UserError
from autotune.passes.lora import LoRAParams
from autotune.passes.model_builder import ModelBuilderParams
from autotune.plan import build_plan
from autotune.space import Categorical, FloatRange, IntRange

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


# --------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "tones.jsonl"
    rows = [{"phrase": f"phrase {i}", "tone": ["joy", "fear"][i % 2]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_config(model_dir: Path) -> dict[str, Any]:
    """A small valid config: flat data config, pass parameters under ``config``, single run on CPU."""
    return {
        "input_model": {"type": "HfModel", "model_path": str(model_dir)},
        "data_configs": [{
            "name": "tones",
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": "tones.jsonl", "split": "train"},
            "pre_process_data_config": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE, "source_max_len": 64},
        }],
        "passes": {
            "lora": {"type": "LoRA", "config": {"lora_r": 4, "lora_alpha": 8}},
            "merge": {"type": "MergeAdapterWeights"},
            "build": {"type": "ModelBuilder", "config": {"precision": "int4", "int4_block_size": 32}},
        },
        "engine": {"search_strategy": False},
    }


def load(raw: dict[str, Any], base: Path) -> RunConfig:
    return load_config(copy.deepcopy(raw), base_dir=base)


def step_params(config: RunConfig, name: str) -> Any:
    steps = {s.name: s for s in build_plan(config)}
    return steps[name].params()


def _walk(cfg: Any, path: str) -> tuple[Any, Any]:
    """Parent container and last key of ``a/b/0/c`` (digits index lists)."""
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
    node = cfg
    for key in keys[:-1]:
        node = node[key]
    return node, keys[-1]


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        node, key = _walk(cfg, path)
        if isinstance(node, list) and key == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[key] = copy.deepcopy(value)

    return mutate


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        node, key = _walk(cfg, path)
        del node[key]

    return mutate


def both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        for m in mutations:
            m(cfg)

    return mutate


SEARCH = put("engine/search_strategy", {"sampler": "random"})


def assert_one_line(exc: UserError, where: str) -> None:
    assert exc.where == where
    assert str(exc) == f"{where}: {exc.message}"
    assert "\n" not in str(exc)
    assert "Traceback" not in str(exc)


# --------------------------------------------------------------------------------------------------
# accepted shapes


def test_base_config_loads_with_typed_values(tmp_path: Path, model_dir: Path) -> None:
    config = load(base_config(model_dir), tmp_path)
    assert config.input_model.type == "HfModel"
    assert config.input_model.model_path == model_dir
    assert config.input_model.gguf_file is None
    data = config.data_configs[0]
    assert data.data_files == [tmp_path / "tones.jsonl"]
    assert data.source_max_len == 64
    assert data.text_template == TEMPLATE
    assert list(config.passes) == ["lora", "merge", "build"]
    assert config.engine.search_strategy is None
    assert config.engine.provider == "CPUExecutionProvider"
    # Defaults resolve against the config's folder, not the working folder.
    assert config.engine.cache_dir == tmp_path / "cache"
    assert config.engine.output_dir == tmp_path / "results" / "run"
    assert config.config_dir == tmp_path


def test_seed_input_model_shape(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["input_model"] = {
        "type": "PyTorchModel",
        "config": {"hf_config": {"model_name": "model", "task": "text-generation",
                                 "model_loading_args": {"trust_remote_code": True, "torch_dtype": "auto"}}},
    }
    model = load(raw, tmp_path).input_model
    assert model.type == "HfModel"
    assert model.model_path == model_dir  # relative to the config's folder
    assert model.task == "text-generation"
    assert model.trust_remote_code is True


def test_hf_model_shape_defaults(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["input_model"] = {"type": "HfModel", "model_path": "model"}
    model = load(raw, tmp_path).input_model
    assert (model.type, model.model_path, model.trust_remote_code) == ("HfModel", model_dir, False)


def test_input_model_type_defaults_to_hf(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["input_model"] = {"model_path": str(model_dir)}
    assert load(raw, tmp_path).input_model.type == "HfModel"


@pytest.mark.parametrize(
    "input_model",
    [
        {"type": "GGUFModel", "model_path": "ggufs", "gguf_file": "tiny.Q4_1.gguf"},
        {"type": "HfModel", "model_path": "ggufs", "gguf_file": "tiny.Q4_1.gguf"},
        {"type": "GGUFModel", "model_path": "ggufs/tiny.Q4_1.gguf"},
        {"model_path": "ggufs/tiny.Q4_1.gguf"},
        {"type": "PyTorchModel", "config": {"hf_config": {"model_name": "ggufs/tiny.Q4_1.gguf"}}},
    ],
    ids=["folder+file", "hf-with-file", "gguf-path", "untyped-gguf-path", "seed-shape-gguf-path"],
)
def test_gguf_shapes(tmp_path: Path, model_dir: Path, input_model: dict[str, Any]) -> None:
    (tmp_path / "ggufs").mkdir()
    raw = base_config(model_dir)
    raw["input_model"] = input_model
    model = load(raw, tmp_path).input_model
    assert model.type == "GGUFModel"
    assert model.model_path == tmp_path / "ggufs"
    assert model.gguf_file == "tiny.Q4_1.gguf"


def test_gguf_file_beside_config(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["input_model"] = {"model_path": "tiny.gguf"}
    model = load(raw, tmp_path).input_model
    assert (model.type, model.model_path, model.gguf_file) == ("GGUFModel", tmp_path, "tiny.gguf")


def test_demo_hub_id_is_not_resolved_as_a_path(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["input_model"] = {"model_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert str(load(raw, tmp_path).input_model.model_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_data_config_params_nested_or_flat_are_equal(tmp_path: Path, model_dir: Path) -> None:
    flat = base_config(model_dir)
    nested = base_config(model_dir)
    data = nested["data_configs"][0]
    data["load_dataset_config"] = {"type": "huggingface_dataset", "params": data["load_dataset_config"]}
    data["pre_process_data_config"] = {"type": "text_generation_huggingface_pre_process", "params": data["pre_process_data_config"]}
    a, b = load(flat, tmp_path).data_configs[0], load(nested, tmp_path).data_configs[0]
    assert a == b
    assert b.text_cols == ["phrase", "tone"]
    assert b.data_name == "json"
    assert b.data_files == [tmp_path / "tones.jsonl"]


def test_data_files_list_and_absolute_paths(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["data_configs"][0]["load_dataset_config"]["data_files"] = ["a.jsonl", str(tmp_path / "sub" / "b.jsonl"), "../c.jsonl"]
    data = load(raw, tmp_path).data_configs[0]
    assert data.data_files == [tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl", tmp_path.parent / "c.jsonl"]


def test_pass_params_under_config_or_beside_type(tmp_path: Path, model_dir: Path) -> None:
    under = base_config(model_dir)
    beside = base_config(model_dir)
    beside["passes"]["lora"] = {"type": "LoRA", "lora_r": 4, "lora_alpha": 8}
    beside["passes"]["build"] = {"type": "ModelBuilder", "precision": "int4", "int4_block_size": 32}
    a, b = load(under, tmp_path), load(beside, tmp_path)
    assert a.passes["lora"].origin == "passes.lora.config"
    assert b.passes["lora"].origin == "passes.lora"
    for name in ("lora", "merge", "build"):
        assert step_params(a, name) == step_params(b, name)


@pytest.mark.parametrize("keys", [("lora_r", "lora_alpha"), ("r", "alpha")])
def test_lora_rank_spellings(tmp_path: Path, model_dir: Path, keys: tuple[str, str]) -> None:
    raw = base_config(model_dir)
    raw["passes"]["lora"]["config"] = {keys[0]: 12, keys[1]: 24, "lora_dropout": 0.1}
    params = step_params(load(raw, tmp_path), "lora")
    assert isinstance(params, LoRAParams)
    assert (params.r, params.alpha, params.lora_dropout) == (12, 24.0, 0.1)


def test_lora_learning_rate_lifted_from_training_args(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["passes"]["lora"]["config"]["training_args"] = {"learning_rate": 1e-3, "max_steps": 5, "group_by_length": True}
    params = step_params(load(raw, tmp_path), "lora")
    assert params.learning_rate == 1e-3
    assert params.training_args.max_steps == 5
    assert "learning_rate" not in params.training_args.model_dump()


@pytest.mark.parametrize("key", ["int4_block_size", "block_size"])
def test_model_builder_block_size_spellings(tmp_path: Path, model_dir: Path, key: str) -> None:
    raw = base_config(model_dir)
    raw["passes"]["build"]["config"] = {"precision": "int4", key: 128, "int4_accuracy_level": 4}
    params = step_params(load(raw, tmp_path), "build")
    assert isinstance(params, ModelBuilderParams)
    assert (params.precision, params.block_size, params.accuracy_level) == ("int4", 128, 4)
    assert "block_size=128" in params.extra_options()


@pytest.mark.parametrize("name_it", [True, False], ids=["named", "single-data-config"])
def test_eval_dataset_size_on_lora_moves_to_data_config(tmp_path: Path, model_dir: Path, name_it: bool) -> None:
    raw = base_config(model_dir)
    raw["passes"]["lora"]["config"]["eval_dataset_size"] = 0.3
    if name_it:
        raw["passes"]["lora"]["config"]["train_data_config"] = "tones"
    config = load(raw, tmp_path)
    assert config.data_configs[0].eval_dataset_size == 0.3
    assert step_params(config, "lora").r == 4  # not a LoRA parameter: no unknown-key error


def test_eval_dataset_size_default_and_on_data_config(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    assert load(raw, tmp_path).data_configs[0].eval_dataset_size == 0.2
    raw["data_configs"][0]["eval_dataset_size"] = 40
    raw["passes"]["lora"]["config"]["eval_dataset_size"] = 40  # agreeing is fine
    assert load(raw, tmp_path).data_configs[0].eval_dataset_size == 40


@pytest.mark.parametrize("nested", [True, False], ids=["under-config", "beside-type"])
def test_local_system_accelerators_give_providers(tmp_path: Path, model_dir: Path, nested: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import autotune.device

    # The conversion is under test, not this machine: here the [gpu] extra is taken as installed.
    monkeypatch.setattr(autotune.device, "check_provider", lambda provider, where="": None)
    raw = base_config(model_dir)
    del raw["engine"]
    body = {"accelerators": [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}
    raw["systems"] = {"local": {"type": "LocalSystem", **({"config": body} if nested else body)}}
    raw["host"] = "local"
    raw["target"] = "local"
    raw["search_strategy"] = False
    # fp16 is refused on CPU, accepted on CUDA.
    raw["passes"]["build"]["config"]["precision"] = "fp16"
    config = load(raw, tmp_path)
    assert config.engine.execution_providers == ["CUDAExecutionProvider"]
    assert config.engine.provider == "CUDAExecutionProvider"
    assert step_params(config, "build").precision == "fp16"


def test_engine_providers_win_over_systems(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["systems"] = {"local": {"type": "LocalSystem", "config": {"accelerators": [{"execution_providers": ["CUDAExecutionProvider"]}]}}}
    raw["engine"]["execution_providers"] = ["CPUExecutionProvider"]
    assert load(raw, tmp_path).engine.provider == "CPUExecutionProvider"


def test_olive_top_level_engine_keys(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    del raw["engine"]
    raw.update({
        "search_strategy": {"execution_order": "joint", "sampler": "random", "max_samples": 3, "seed": 7},
        "output_dir": "out",
        "cache_dir": "/abs/cache",
        "log_severity_level": 3,
        "evaluate_input_model": False,
        "clean_cache": True,
        "description": "a run",
    })
    engine = load(raw, tmp_path).engine
    assert engine.search_strategy is not None
    assert (engine.search_strategy.sampler, engine.search_strategy.max_samples, engine.search_strategy.seed) == ("random", 3, 7)
    assert engine.output_dir == tmp_path / "out"
    assert engine.cache_dir == Path("/abs/cache")
    assert engine.log_severity_level == 3
    assert engine.evaluate_input_model is False


def test_olive_older_search_strategy(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["engine"]["search_strategy"] = {
        "execution_order": "joint", "search_algorithm": "exhaustive", "search_algorithm_config": {"num_samples": 5, "seed": 3},
    }
    strategy = load(raw, tmp_path).engine.search_strategy
    assert strategy is not None
    assert (strategy.sampler, strategy.max_samples, strategy.seed) == ("grid", 5, 3)


def test_search_strategy_true_means_defaults(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["engine"]["search_strategy"] = True
    strategy = load(raw, tmp_path).engine.search_strategy
    assert strategy is not None and strategy.sampler == "tpe" and strategy.max_samples is None


def test_search_spaces_become_specs(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["engine"]["search_strategy"] = {"sampler": "tpe"}
    raw["passes"]["lora"]["config"] = {
        "lora_r": [4, 8],
        "lora_alpha": {"low": 8, "high": 32, "step": 8},
        "learning_rate": {"low": 1e-4, "high": 1e-3, "log": True},
        "target_modules": [["q_proj", "v_proj"], "all-linear"],
        "lora_dropout": 0.1,
    }
    raw["passes"]["build"]["config"] = {"precision": {"choices": ["int4", "int8"]}}
    steps = {s.name: s for s in build_plan(load(raw, tmp_path))}
    lora = steps["lora"]
    assert lora.space["r"] == Categorical((4, 8))
    assert lora.space["alpha"] == IntRange(8, 32, 8)
    assert lora.space["learning_rate"] == FloatRange(1e-4, 1e-3, None, True)
    assert lora.space["target_modules"] == Categorical((("q_proj", "v_proj"), "all-linear"))
    assert lora.fixed["lora_dropout"] == 0.1
    assert steps["build"].space["precision"] == Categorical(("int4", "int8"))
    # A sampled point gives validated params in the pass's own types.
    params = lora.params({"lora.r": 8, "lora.target_modules": "q_proj,v_proj"})
    assert (params.r, params.target_modules) == (8, ["q_proj", "v_proj"])


def test_pass_type_is_case_insensitive_and_aliases(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["passes"] = {"lora": {"type": "lora"}, "merge": {"type": "merge"}, "build": {"type": "OnnxConversion"}}
    steps = build_plan(load(raw, tmp_path))
    assert [s.pass_cls.type_name for s in steps] == ["LoRA", "MergeAdapterWeights", "ModelBuilder"]


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    raw = base_config(model_dir)
    raw["input_model"]["model_path"] = "../model"
    raw["data_configs"][0]["load_dataset_config"]["data_files"] = "data/tones.jsonl"
    raw["engine"].update({"cache_dir": "../cache", "output_dir": "out/run"})
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.config_dir == folder
    assert config.input_model.model_path == model_dir
    assert config.data_configs[0].data_files == [folder / "data" / "tones.jsonl"]
    assert config.engine.cache_dir == tmp_path / "cache"
    assert config.engine.output_dir == folder / "out" / "run"


def test_relative_config_path_argument(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(base_config(model_dir), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    config = load_config("run.yaml")
    assert config.config_dir == tmp_path
    assert config.data_configs[0].data_files == [tmp_path / "tones.jsonl"]


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".JSON"])
def test_yaml_and_json_files_give_the_same_config(tmp_path: Path, model_dir: Path, suffix: str) -> None:
    raw = base_config(model_dir)
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(raw, indent=2) if suffix.lower() == ".json" else yaml.safe_dump(raw, sort_keys=False))
    from_file = load_config(path)
    from_dict = load(raw, tmp_path)
    assert from_file.model_dump() == from_dict.model_dump()


def test_seed_olive_shape_file_loads() -> None:
    config = load_config(ROOT / "configs" / "seed_olive_shape.yaml")
    assert config.input_model.type == "HfModel"
    assert str(config.input_model.model_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config.input_model.trust_remote_code is False
    data = config.data_configs[0]
    assert data.name == "dataset_default_train"
    assert data.data_files == [ROOT / "configs" / "data" / "tones.jsonl"]
    assert data.eval_dataset_size == 0.3  # moved from the LoRA pass
    assert data.use_attention_mask is False
    assert data.source_max_len == 1024
    assert list(config.passes) == ["lora", "merge", "builder"]
    steps = {s.name: s for s in build_plan(config)}
    lora = steps["lora"].params()
    assert (lora.r, lora.alpha, lora.lora_dropout, lora.learning_rate) == (16, 32.0, 0.1, 1e-4)
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]  # a Llama's names (the seed had Phi-3's qkv_proj)
    assert lora.training_args.max_steps == 30
    assert steps["lora"].data_name == "dataset_default_train"
    assert steps["builder"].params().precision == "int4"
    assert config.engine.search_strategy is None
    assert config.engine.execution_providers == ["CPUExecutionProvider"]
    assert config.engine.log_severity_level == 0
    assert config.engine.cache_dir == ROOT / "cache"
    assert config.engine.output_dir == ROOT / "results" / "seed-shape"


def test_smollm2_tone_single_file_loads_with_named_evaluator() -> None:
    config = load_config(ROOT / "configs" / "smollm2_tone_single.yaml")
    assert config.engine.evaluator == "tone_eval"
    metrics = config.evaluators["tone_eval"].metrics
    assert [m.name for m in metrics] == ["accuracy", "latency", "footprint"]
    accuracy = metrics[0].sub_types[0]
    assert accuracy.goal is not None and (accuracy.goal.type, accuracy.goal.value) == ("min-improvement", 0.05)
    data = config.data_configs[0]
    assert (data.name, data.eval_dataset_size, data.source_max_len) == ("tones", 160, 128)
    steps = {s.name: s for s in build_plan(config)}
    assert (steps["lora"].params().r, steps["build"].params().block_size) == (16, 32)
    assert config.engine.output_dir == ROOT / "results" / "smollm2-tone-single"


def _write_evaluator(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(body)


ACCURACY_ONLY = "metrics:\n  - name: accuracy\n    type: accuracy\n    sub_types: [{name: accuracy, priority: 1}]\n"


@pytest.mark.parametrize("where", ["beside", "above"])
def test_evaluator_by_name_is_found_beside_or_above_the_config(tmp_path: Path, model_dir: Path, where: str) -> None:
    folder = tmp_path / "configs"
    _write_evaluator((folder if where == "beside" else tmp_path) / "evaluators", "my-eval", ACCURACY_ONLY)
    raw = base_config(model_dir)
    raw["evaluators"] = {"main": "my-eval"}
    folder.mkdir(exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    assert config.engine.evaluator == "main"  # the only evaluator is the default
    assert [m.name for m in config.evaluators["main"].metrics] == ["accuracy"]


def test_engine_evaluator_names_a_file(tmp_path: Path, model_dir: Path) -> None:
    _write_evaluator(tmp_path / "evaluators", "my-eval", ACCURACY_ONLY)
    raw = base_config(model_dir)
    raw["engine"]["evaluator"] = "my-eval"
    config = load(raw, tmp_path)
    assert config.engine.evaluator == "my-eval"
    assert config.evaluators["my-eval"].metrics[0].sub_types[0].name == "accuracy"


def test_inline_evaluator(tmp_path: Path, model_dir: Path) -> None:
    raw = base_config(model_dir)
    raw["evaluators"] = {"e": yaml.safe_load(ACCURACY_ONLY)}
    config = load(raw, tmp_path)
    assert config.engine.evaluator == "e"
    assert config.evaluators["e"].metrics[0].type == "accuracy"


def test_load_config_does_not_read_data_or_model(tmp_path: Path) -> None:
    raw = base_config(tmp_path / "no-such-model")
    raw["data_configs"][0]["load_dataset_config"]["data_files"] = "no-such-data.jsonl"
    config = load(raw, tmp_path)
    assert config.data_configs[0].data_files == [tmp_path / "no-such-data.jsonl"]


# --------------------------------------------------------------------------------------------------
# mistakes: one line, the exact key path


def seed(hf_config: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The seed sample's input model shape around ``hf_config``."""
    return put("input_model", {"type": "PyTorchModel", "config": {"hf_config": hf_config}})


LORA_BESIDE = put("passes/lora", {"type": "LoRA", "r": "x"})
NESTED_DATA = put("data_configs/0/pre_process_data_config", {"params": {"text_template": TEMPLATE, "source_max_len": "long"}})
TWO_DATA = put("data_configs/1", {"name": "other", "load_dataset_config": {"data_name": "csv", "data_files": "o.csv"},
                                  "pre_process_data_config": {"text_template": "{a} {b}"}})

# (id, mutation, where, message start); every one is a ConfigError
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # pass parameters: types, ranges, spellings
    ("lora_r-not-int", put("passes/lora/config/lora_r", "x"), "passes.lora.config.lora_r", 'expected an integer, got "x"'),
    ("r-beside-type-not-int", LORA_BESIDE, "passes.lora.r", 'expected an integer, got "x"'),
    ("lora_r-float", put("passes/lora/config/lora_r", 4.5), "passes.lora.config.lora_r", "expected an integer, got 4.5"),
    ("lora_alpha-negative", put("passes/lora/config/lora_alpha", -1), "passes.lora.config.lora_alpha",
     "expected a number greater than 0, got -1"),
    ("lora_rr", put("passes/lora/config/lora_rr", 4), "passes.lora.config.lora_rr", "unknown key; did you mean 'lora_r'?"),
    ("lora-alpah-beside", put("passes/lora", {"type": "LoRA", "alpah": 4}), "passes.lora.alpah",
     "unknown key; did you mean 'alpha'?"),
    ("r-twice", put("passes/lora/config/r", 8), "passes.lora.config.r", "'r' is given twice (as 'lora_r' and 'r')"),
    ("target_modules-int", put("passes/lora/config/target_modules", 5), "passes.lora.config.target_modules",
     "expected a list, got 5"),
    ("training-arg-misspelt", put("passes/lora/config/training_args", {"max_stepz": 3}), "passes.lora.config.training_args.max_stepz",
     "unknown training argument; did you mean 'max_steps'?"),
    ("training-arg-type", put("passes/lora/config/training_args", {"max_steps": "x"}), "passes.lora.config.training_args.max_steps",
     'expected an integer, got "x"'),
    ("learning-rate-twice",
     both(put("passes/lora/config/learning_rate", 1e-3), put("passes/lora/config/training_args", {"learning_rate": 1e-3})),
     "passes.lora.config.training_args.learning_rate", "is also set as 'learning_rate'"),
    ("train_data_config-unknown", put("passes/lora/config/train_data_config", "nope"), "passes.lora.config.train_data_config",
     "no data config named 'nope'"),
    ("train_data_config-ambiguous", TWO_DATA, "passes.lora.config.train_data_config", "name the data config to train on"),
    ("int4_block_size-33", put("passes/build/config/int4_block_size", 33), "passes.build.config.int4_block_size",
     "expected one of 16, 32, 64, 128 or 256, got 33"),
    ("precision-unknown", put("passes/build/config/precision", "int2"), "passes.build.config.precision", "expected one of"),
    ("fp16-on-cpu", put("passes/build/config/precision", "fp16"), "passes.build.config.precision",
     "fp16 is not supported on CPUExecutionProvider"),
    # pass structure
    ("pass-type-misspelt", put("passes/lora/type", "Lorra"), "passes.lora.type", "unknown pass type \"Lorra\"; did you mean 'LoRA'?"),
    ("pass-type-unknown", put("passes/build/type", "Quantize"), "passes.build.type", 'unknown pass type "Quantize" (known: '),
    ("pass-type-missing", put("passes/merge", {}), "passes.merge.type", "required key is missing"),
    ("pass-not-mapping", put("passes/merge", "MergeAdapterWeights"), "passes.merge", "expected a mapping"),
    ("passes-a-list", put("passes", [{"type": "LoRA"}]), "passes", "expected a mapping"),
    ("config-and-beside", put("passes/lora/r", 4), "passes.lora.r",
     "put pass parameters either under 'config' or beside 'type', not both"),
    ("pass-order", put("passes", {"merge": {"type": "MergeAdapterWeights"}}), "passes.merge.type",
     "MergeAdapterWeights takes a LoRA adapter but the input model gives a Hugging Face model"),
    # search spaces
    ("space-without-search", put("passes/lora/config/lora_r", [4, 8]), "passes.lora.config.lora_r",
     "is a search space but engine.search_strategy is false"),
    ("range-low-above-high", both(SEARCH, put("passes/lora/config/lora_r", {"low": 8, "high": 4})), "passes.lora.config.lora_r",
     "low (8) is greater than high (4)"),
    ("range-negative-step", both(SEARCH, put("passes/lora/config/lora_r", {"low": 4, "high": 16, "step": -4})),
     "passes.lora.config.lora_r.step", "expected a positive step, got -4"),
    ("range-log-from-zero", both(SEARCH, put("passes/lora/config/learning_rate", {"low": 0, "high": 1e-3, "log": True})),
     "passes.lora.config.learning_rate.low", "a log range needs low > 0"),
    ("range-high-missing", both(SEARCH, put("passes/lora/config/lora_alpha", {"low": 4})), "passes.lora.config.lora_alpha.high",
     "required key is missing"),
    ("choice-twice", both(SEARCH, put("passes/lora/config/lora_r", [4, 4])), "passes.lora.config.lora_r", "choice 4 is listed twice"),
    ("choice-wrong-type", both(SEARCH, put("passes/lora/config/lora_r", [4, "x"])), "passes.lora.config.lora_r",
     'expected an integer, got "x"'),
    ("choice-out-of-range", both(SEARCH, put("passes/build/config/int4_block_size", [32, 33])), "passes.build.config.int4_block_size",
     "expected one of 16, 32, 64, 128 or 256, got 33"),
    ("not-searchable", both(SEARCH, put("passes/lora/config/validation_size", [8, 16])), "passes.lora.config.validation_size",
     "this parameter is not searchable"),
    ("sampler-unknown", put("engine/search_strategy", {"sampler": "bayes"}), "engine.search_strategy.sampler",
     "expected one of 'tpe', 'nsga2', 'random', 'grid', 'gp' or 'auto', got \"bayes\""),
    ("olive-search-algorithm-unknown", put("engine/search_strategy", {"search_algorithm": "bayes"}),
     "engine.search_strategy.search_algorithm",
     "expected one of"),
    ("olive-num-samples-zero", put("engine/search_strategy", {"search_algorithm": "tpe", "search_algorithm_config": {"num_samples": 0}}),
     "engine.search_strategy.search_algorithm_config.num_samples", "expected a number greater than 0, got 0"),
    ("olive-algorithm-config-misspelt", put("engine/search_strategy", {"search_algorithm_config": {"num_sample": 3}}),
     "engine.search_strategy.search_algorithm_config.num_sample", "unknown key; did you mean 'num_samples'?"),
    ("max_samples-zero", put("engine/search_strategy", {"max_samples": 0}), "engine.search_strategy.max_samples",
     "expected a number greater than 0, got 0"),
    ("search-strategy-misspelt-key", put("engine/search_strategy", {"samplr": "tpe"}), "engine.search_strategy.samplr",
     "unknown key; did you mean 'sampler'?"),
    # top level and engine
    ("top-key-misspelt", put("pases", {}), "pases", "unknown key; did you mean 'passes'?"),
    ("top-engine-key-misspelt", put("output_dri", "out"), "output_dri", "unknown key; did you mean 'output_dir'?"),
    ("engine-key-misspelt", put("engine/serch_strategy", False), "engine.serch_strategy",
     "unknown key; did you mean 'search_strategy'?"),
    ("engine-key-top-and-engine", put("search_strategy", False), "search_strategy",
     "is set both at the top level and under 'engine.search_strategy'"),
    ("engine-not-mapping", put("engine", ["x"]), "engine", "expected a mapping, got a list"),
    ("provider-unknown", put("engine/execution_providers", ["CPU"]), "engine.execution_providers[0]", "expected one of"),
    ("providers-not-list", put("engine/execution_providers", "CPUExecutionProvider"), "engine.execution_providers",
     'expected a list, got "CPUExecutionProvider"'),
    ("log-severity-out-of-range", put("engine/log_severity_level", 9), "engine.log_severity_level",
     "expected a number of at most 4, got 9"),
    ("selection-policy", put("engine/selection", {"policy": "best"}), "engine.selection.policy", "expected one of"),
    ("missing-input-model", drop("input_model"), "input_model", "required key is missing"),
    # systems
    ("azureml-system", put("systems", {"aml": {"type": "AzureML", "config": {"aml_compute": "gpu"}}}), "systems.aml.type",
     "AzureML systems are not supported"),
    ("system-type-unknown", put("systems", {"s": {"type": "Remote"}}), "systems.s.type", 'expected "LocalSystem", got "Remote"'),
    ("system-provider-unknown",
     put("systems", {"s": {"type": "LocalSystem", "config": {"accelerators": [{"execution_providers": ["CUDA"]}]}}}),
     "systems.s.config.accelerators[0].execution_providers[0]", "expected one of"),
    ("system-accelerators-not-list", put("systems", {"s": {"type": "LocalSystem", "config": {"accelerators": "cpu"}}}),
     "systems.s.config.accelerators", 'expected a list of accelerators, got "cpu"'),
    ("system-key-misspelt", put("systems", {"s": {"type": "LocalSystem", "config": {"acelerators": []}}}), "systems.s.config.acelerators",
     "unknown key; did you mean 'accelerators'?"),
    # input model
    ("input-type-misspelt", put("input_model/type", "HFModel"), "input_model.type", "expected one of"),
    ("input-key-misspelt", put("input_model/model_pth", "x"), "input_model.model_pth", "unknown key; did you mean 'model_path'?"),
    ("model-path-not-a-path", put("input_model/model_path", 5), "input_model.model_path", "expected a path, got 5"),
    ("trust-remote-code-type", put("input_model/trust_remote_code", "maybe"), "input_model.trust_remote_code",
     'expected true or false, got "maybe"'),
    ("gguf-model-without-file", put("input_model", {"type": "GGUFModel", "model_path": "model"}), "input_model.gguf_file",
     "a GGUFModel needs gguf_file"),
    ("seed-config-and-beside",
     put("input_model", {"type": "PyTorchModel", "config": {"hf_config": {"model_name": "m"}}, "model_path": "m"}),
     "input_model.model_path", "unknown key beside 'config'"),
    ("seed-loading-arg-misspelt",
     seed({"model_name": "m", "model_loading_args": {"trust_remote_cod": True}}),
     "input_model.config.hf_config.model_loading_args.trust_remote_cod", "unknown key; did you mean 'trust_remote_code'?"),
    ("seed-trust-remote-code-type",
     seed({"model_name": "m", "model_loading_args": {"trust_remote_code": "sure"}}),
     "input_model.config.hf_config.model_loading_args.trust_remote_code", 'expected true or false, got "sure"'),
    ("seed-task", seed({"model_name": "m", "task": "text-classification"}),
     "input_model.config.hf_config.task", "expected one of 'text-generation'"),
    # data configs
    ("data-nested-wrong-type", NESTED_DATA, "data_configs[0].pre_process_data_config.params.source_max_len",
     'expected an integer, got "long"'),
    ("data-flat-wrong-type", put("data_configs/0/pre_process_data_config/source_max_len", 0),
     "data_configs[0].pre_process_data_config.source_max_len", "expected a number greater than 0, got 0"),
    ("data-name-format", put("data_configs/0/load_dataset_config/data_name", "xml"), "data_configs[0].load_dataset_config.data_name",
     "expected one of 'json', 'csv' or 'parquet', got \"xml\""),
    ("data-key-misspelt", put("data_configs/0/text_tempalte", "x"), "data_configs[0].text_tempalte",
     "unknown key; did you mean 'text_template'?"),
    ("data-user-script", put("data_configs/0/user_script", "data.py"), "data_configs[0].user_script", "is not supported"),
    ("data-name-missing", drop("data_configs/0/name"), "data_configs[0].name", "required key is missing"),
    ("data-template-missing", drop("data_configs/0/pre_process_data_config/text_template"), "data_configs[0].text_template",
     "required key is missing"),
    ("data-name-twice", put("data_configs/1", {"name": "tones", "load_dataset_config": {"data_name": "json", "data_files": "x.jsonl"},
                                               "pre_process_data_config": {"text_template": TEMPLATE}}),
     "data_configs[1].name", "data config name 'tones' is used twice"),
    ("data-configs-not-list", put("data_configs", {"name": "tones"}), "data_configs", "expected a list"),
    ("eval-size-negative", put("data_configs/0/eval_dataset_size", -1), "data_configs[0].eval_dataset_size",
     "expected a number greater than 0, got -1"),
    ("eval-size-on-lora-wrong-type", put("passes/lora/config/eval_dataset_size", "x"), "passes.lora.config.eval_dataset_size",
     'expected a number, got "x"'),
    ("eval-size-disagrees", both(put("data_configs/0/eval_dataset_size", 40), put("passes/lora/config/eval_dataset_size", 0.3)),
     "passes.lora.config.eval_dataset_size", "disagrees with the data config's eval_dataset_size"),
    # evaluators
    ("evaluator-unknown-name", put("engine/evaluator", "no-such-evaluator-xyz"), "engine.evaluator",
     "no evaluator named 'no-such-evaluator-xyz'"),
    ("evaluator-ref-unknown", put("evaluators", {"e": "no-such-evaluator-xyz"}), "evaluators.e", "no evaluator named"),
    ("evaluator-inline-wrong-type",
     put("evaluators", {"e": {"metrics": [{"name": "a", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": "hi"}]}]}}),
     "evaluators.e.metrics[0].sub_types[0].priority", 'expected an integer, got "hi"'),
    ("evaluator-goal-type",
     put("evaluators", {"e": {"metrics": [{"name": "a", "type": "accuracy",
                                           "sub_types": [{"name": "a", "goal": {"type": "best", "value": 1}}]}]}}),
     "evaluators.e.metrics[0].sub_types[0].goal.type", "expected one of"),
]


@pytest.mark.parametrize(("mutate", "where", "start"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config(tmp_path: Path, model_dir: Path, mutate: Callable[[dict[str, Any]], None], where: str, start: str) -> None:
    raw = base_config(model_dir)
    mutate(raw)
    with pytest.raises(UserError) as info:
        load_config(raw, base_dir=tmp_path)
    exc = info.value
    assert type(exc) is ConfigError, str(exc)
    assert exc.where == where, str(exc)
    assert exc.message.startswith(start), str(exc)
    assert_one_line(exc, where)


def test_bad_case_ids_are_unique() -> None:
    ids = [c[0] for c in BAD]
    assert len(ids) == len(set(ids))


def test_error_in_named_evaluator_file_names_the_file(tmp_path: Path, model_dir: Path) -> None:
    bad = "metrics:\n  - {name: a, type: accuracy, sub_types: [{name: accuracy, priority: hi}]}\n"
    _write_evaluator(tmp_path / "evaluators", "broken", bad)
    raw = base_config(model_dir)
    raw["evaluators"] = {"e": "broken"}
    with pytest.raises(ConfigError) as info:
        load(raw, tmp_path)
    file = tmp_path / "evaluators" / "broken.yaml"
    assert_one_line(info.value, f"{file}: metrics[0].sub_types[0].priority")
    assert info.value.message == 'expected an integer, got "hi"'


# --------------------------------------------------------------------------------------------------
# mistakes in the file itself: the file is the ``where``


FILE_CASES: list[tuple[str, str, bytes, str]] = [
    ("yaml-unclosed-bracket", "run.yaml", b"input_model:\n  model_path: [a, b\npasses: {}\n", "invalid YAML at line "),
    ("yaml-bad-indent", "run.yaml", b"input_model:\n  model_path: m\n passes: {}\n", "invalid YAML at line 3"),
    ("yaml-tab", "run.yaml", b"input_model:\n\tmodel_path: m\n", "invalid YAML at line 2"),
    ("json-trailing-comma", "run.json", b'{\n  "input_model": {"model_path": "m"},\n}\n', "invalid JSON at line 3"),
    ("non-utf8", "run.yaml", b"input_model:\n  model_path: caf\xe9\n", "not UTF-8 text at line 2 (byte 30)"),
    ("top-level-list", "run.yaml", b"- input_model: {model_path: m}\n", "expected a mapping at the top of the config, got list"),
    ("top-level-scalar", "run.json", b'"hello"', "expected a mapping at the top of the config, got str"),
    ("empty", "run.yaml", b"# nothing here\n", "the config file is empty"),
]


@pytest.mark.parametrize(("name", "content", "start"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_file(tmp_path: Path, name: str, content: bytes, start: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message.startswith(start), str(info.value)
    assert_one_line(info.value, str(path))


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == "no such config file"
    assert_one_line(info.value, str(path))


def test_yaml_error_names_the_line_of_the_mistake(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("input_model:\n  model_path: m\npasses:\n  lora:\n    type: LoRA\n    r: [4, 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # PyYAML reports an unclosed flow sequence where it notices it: the end of the file.
    assert "line 7" in info.value.message
    assert_one_line(info.value, str(path))


# --------------------------------------------------------------------------------------------------
# data: load_config only resolves paths; load_data reads the files


def _data_config(tmp_path: Path, model_dir: Path, files: str, template: str = TEMPLATE, text_cols: list[str] | None = None) -> Any:
    raw = base_config(model_dir)
    raw["data_configs"][0] = {
        "name": "tones",
        "load_dataset_config": {"params": {"data_name": "json", "data_files": files}},
        "pre_process_data_config": {"params": {"text_template": template, **({"text_cols": text_cols} if text_cols else {})}},
        "eval_dataset_size": 4,
    }
    return load(raw, tmp_path).data_configs[0]


def test_load_data_reads_a_good_file(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    data = load_data(_data_config(tmp_path, model_dir, data_file.name), where="data_configs[0]")
    assert (len(data.train), len(data.eval)) == (8, 4)
    assert data.labels == ["fear", "joy"]
    assert data.template.answer_column == "tone"


def test_missing_data_file_is_a_data_error_naming_the_file(tmp_path: Path, model_dir: Path) -> None:
    config = _data_config(tmp_path, model_dir, "missing.jsonl")
    with pytest.raises(DataError) as info:
        load_data(config, where="data_configs[0]")
    assert_one_line(info.value, "data_configs[0].data_files")
    assert str(tmp_path / "missing.jsonl") in info.value.message


def test_template_column_missing_from_data(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config = _data_config(tmp_path, model_dir, data_file.name, template="### Text: {text}\n### The tone is:\n{tone}")
    with pytest.raises(DataError) as info:
        load_data(config, where="data_configs[0]")
    assert_one_line(info.value, "data_configs[0].text_template")
    assert info.value.message == "the template names column 'text' but the data has only ['phrase', 'tone']"


def test_text_cols_column_missing_from_data(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    config = _data_config(tmp_path, model_dir, data_file.name, text_cols=["phrase", "label"])
    with pytest.raises(DataError) as info:
        load_data(config, where="data_configs[0]")
    assert_one_line(info.value, "data_configs[0].text_cols")
    assert "'label'" in info.value.message


def test_template_without_placeholders(tmp_path: Path, model_dir: Path, data_file: Path) -> None:
    """Refused when the config loads (where the key was written), before any data file is read."""
    with pytest.raises(DataError) as info:
        _data_config(tmp_path, model_dir, data_file.name, template="no placeholders")
    assert_one_line(info.value, "data_configs[0].pre_process_data_config.params.text_template")


def test_non_utf8_data_file(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"phrase": "caf\xe9", "tone": "joy"}\n')
    with pytest.raises(DataError) as info:
        load_data(_data_config(tmp_path, model_dir, path.name), where="data_configs[0]")
    assert_one_line(info.value, str(path))
    assert info.value.message.startswith("not UTF-8 text")
