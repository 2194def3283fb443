"""DropLayers: the blocks chosen, the smaller folder in transformers and onnxruntime-genai, and what validate refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autotune
from autotune.config_checks import load_config
from autotune.context import PassContext
from autotune.data import load_data
from autotune.errors import ConfigError
from autotune.models.handle import ModelHandle
from autotune.passes.drop_layers import DropLayers, DropLayersParams, write_pruned_folder
from tests.conftest import make_tiny_llama, tiny_config

LAYERS = 6
PROMPT_IDS = [5, 17, 42, 99, 3, 64, 128, 7]


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory: pytest.TempPathFactory, tone_rows: list[dict[str, str]]) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("deep") / "six", [r["phrase"] for r in tone_rows], num_hidden_layers=LAYERS)


def with_identity_blocks(source: Path, folder: Path, blocks: list[int]) -> Path:
    """A copy of ``source`` whose ``blocks`` add nothing to the residual stream (o_proj and down_proj zeroed)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    for block in blocks:
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            tensors[f"model.layers.{block}.{name}.weight"].zero_()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def data_config(model: Path, data: Path) -> Any:
    config = load_config(tiny_config(model, data, data.parent))
    return load_data(config.data_configs[0])


def run_pass(model: Path, data: Path, output: Path, **params: Any) -> dict[str, Any]:
    output.mkdir(parents=True)
    ctx = PassContext(provider="CPUExecutionProvider", work_dir=output.parent, data=data_config(model, data),
                      origin="passes.depth")
    DropLayers().run(ModelHandle(kind="hf", path=model, key="k"), DropLayersParams(**params), ctx, output)
    return json.loads((output / "drop_layers.json").read_text())


@pytest.mark.parametrize(("method", "identity"), [("angular_run", [2, 3]), ("block_influence", [1, 4])])
def test_the_blocks_that_leave_their_input_unchanged_are_the_ones_dropped(
        tmp_path: Path, six_layers: Path, tone_file: Path, method: str, identity: list[int]) -> None:
    model = with_identity_blocks(six_layers, tmp_path / "model", identity)
    record = run_pass(model, tone_file, tmp_path / "out", n_drop=2, method=method, calibration_rows=8)
    assert record["dropped"] == identity
    assert record["kept_layers"] == LAYERS - 2 and record["calibration_rows"] == 8
    scores = {int(k): v for k, v in record["scores"].items()}
    best = identity[0] if method == "angular_run" else identity
    assert all(scores[k] < 1e-3 for k in ([best] if method == "angular_run" else best))
    assert all(v > 1e-3 for k, v in scores.items() if k not in ([best] if method == "angular_run" else best))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_hidden_layers"] == LAYERS - 2
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_n_drop_zero_writes_the_input_unchanged_without_reading_data(tmp_path: Path, six_layers: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ctx = PassContext(provider="CPUExecutionProvider", work_dir=tmp_path, data=None)
    assert not DropLayers().reads_data(DropLayersParams(n_drop=0))
    DropLayers().run(ModelHandle(kind="hf", path=six_layers, key="k"), DropLayersParams(n_drop=0), ctx, out)
    assert (out / "model.safetensors").read_bytes() == (six_layers / "model.safetensors").read_bytes()
    assert json.loads((out / "drop_layers.json").read_text())["dropped"] == []
    # the cache key of n_drop 0 holds none of the settings that only pruning uses
    assert DropLayersParams(n_drop=0, method="block_influence").resolved() == DropLayersParams(n_drop=0).resolved()


def full_logits_skipping(model_dir: Path, skipped: list[int]) -> np.ndarray:
    """The full model's logits with ``skipped`` blocks passing their input through."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def through(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    for block in skipped:
        model.model.layers[block].register_forward_hook(through, with_kwargs=True)
    with torch.no_grad():
        return model(input_ids=torch.tensor([PROMPT_IDS]), use_cache=False).logits[0].numpy()


def test_the_pruned_folder_gives_the_logits_of_the_full_model_skipping_those_blocks_in_transformers_and_genai(
        tmp_path: Path, six_layers: Path) -> None:
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM

    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    dropped = [1, 4]  # not contiguous: every later block is renumbered
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    write_pruned_folder(six_layers, pruned, dropped)
    expected = full_logits_skipping(six_layers, dropped)
    assert np.abs(expected - full_logits_skipping(six_layers, [])).max() > 1e-3  # the skipped blocks do change the logits

    model = AutoModelForCausalLM.from_pretrained(str(pruned), dtype=torch.float32).eval()
    assert len(model.model.layers) == LAYERS - 2
    with torch.no_grad():
        got = model(input_ids=torch.tensor([PROMPT_IDS]), use_cache=False).logits[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)

    onnx_dir = tmp_path / "onnx"
    build_onnx(pruned, onnx_dir, ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=tmp_path / "work")
    assert json.loads((onnx_dir / "genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"] == LAYERS - 2
    genai = og.Model(str(onnx_dir))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=len(PROMPT_IDS) + 2)
    generator = og.Generator(genai, params)
    generator.append_tokens(PROMPT_IDS)
    logits = np.asarray(generator.get_output("logits"))[0]
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-3)


def depth_config(model: Path, data: Path, work: Path, n_drop: Any) -> dict[str, Any]:
    config = tiny_config(model, data, work)
    config["passes"] = {"depth": {"type": "DropLayers", "n_drop": n_drop, "calibration_rows": 8}, **config["passes"]}
    if isinstance(n_drop, list):
        config["engine"]["search_strategy"] = {"sampler": "grid"}
        config["evaluators"] = {"acc": {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy"}]}]}}
    return config


def test_validate_refuses_a_model_outside_the_llama_family(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # Phi-3: a family the model builder exports (so only the depth pass is refused), with fused qkv_proj/gate_up_proj.
    from tests.models.test_families import make_family_model

    phi3 = make_family_model(tmp_path / "phi3", "phi3", tiny_model)
    config = depth_config(phi3, tone_file, tmp_path, 1)
    config["passes"]["lora"]["target_modules"] = ["qkv_proj"]  # Phi-3's own
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "passes.depth.type"
    assert "Phi3ForCausalLM" in info.value.message and "LlamaForCausalLM" in info.value.message


def test_validate_refuses_n_drop_that_leaves_no_block_for_every_searched_value(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    load_config(depth_config(tiny_model, tone_file, tmp_path, 1))  # 1 of 2 blocks: accepted
    for n_drop in (2, [0, 1, 2]):
        with pytest.raises(ConfigError) as info:
            load_config(depth_config(tiny_model, tone_file, tmp_path, n_drop))
        assert info.value.where == "passes.depth.n_drop"
        assert "would leave no decoder block: the input model has 2" in info.value.message


def test_a_run_drops_a_block_fine_tunes_and_builds_the_smaller_model(tmp_path: Path, six_layers: Path, tone_file: Path) -> None:
    result = autotune.run(depth_config(six_layers, tone_file, tmp_path, 2))
    assert [p.type for p in result.record.passes] == ["DropLayers", "LoRA", "MergeAdapterWeights", "ModelBuilder"]
    genai = json.loads((tmp_path / "out" / "model" / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["num_hidden_layers"] == LAYERS - 2
