"""Every model family the ONNX builder exports runs through the pipeline (issue 28 item 5): a tiny random
model of each (hidden 64, 2 layers, the tiny Llama's 512-token tokenizer), LoRA on the family's own module
names -> merge -> int4 (GPTQ on the training rows) -> accuracy on the int4 build and on the fp32 ONNX
baseline (the batched label scorer) -> generation through onnxruntime-genai. Mistral and the Gemmas have a
16-token sliding window, shorter than the prompts, so genai's window-sized KV caches evict while scoring.

A family the builder cannot export is refused at ``validate``, naming the architecture.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import autotune
from autotune.models.module_names import _safetensors_header
from tests.conftest import tiny_config

COMMON = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 256, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
WINDOW = 16  # the sliding window (Mistral, the Gemmas): shorter than every tone prompt (~20-60 tokens)

# family -> (transformers config class, its own settings, LoRA targets: the family's module names)
FAMILIES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "llama": ("LlamaConfig", {}, ["q_proj", "v_proj", "gate_proj"]),
    "mistral": ("MistralConfig", {"head_dim": 16, "sliding_window": WINDOW}, ["q_proj", "k_proj", "o_proj"]),  # every layer sliding
    "qwen2": ("Qwen2Config", {}, ["q_proj", "v_proj", "down_proj"]),  # q/k/v with biases
    "qwen3": ("Qwen3Config", {"head_dim": 16}, ["q_proj", "k_proj", "up_proj"]),  # q_norm/k_norm
    "phi3": ("Phi3Config", {"original_max_position_embeddings": 256}, ["qkv_proj", "gate_up_proj"]),  # fused projections
    "gemma2": ("Gemma2Config", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": WINDOW},
               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": WINDOW,
                                    "layer_types": ["sliding_attention", "full_attention"]}, ["q_proj", "v_proj", "down_proj"]),
}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
SLIDING = {"gemma2": [0], "gemma3": [0], "mistral": [0, 1]}  # genai_config's sliding_window.layers


@pytest.fixture()
def frozen_heap() -> Any:
    """The objects alive before the run (torch, transformers, peft: millions after import) kept out of the
    collector's walks during it, as the study does after its first trial: every full collection of the run
    (one after each pass, ~0.6 s each here) then walks only what the run allocates."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def make_family_model(folder: Path, family: str, tokenizer_from: Path, *, seed: int = 0) -> Path:
    """A tiny random ``family`` model in ``folder`` with the tokenizer files of ``tokenizer_from``."""
    import torch
    import transformers

    config_name, own, _ = FAMILIES[family]
    folder.mkdir(parents=True)
    for file in tokenizer_from.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(file, folder / file.name)
    vocab = json.loads((tokenizer_from / "config.json").read_text())["vocab_size"]
    config = getattr(transformers, config_name)(vocab_size=vocab, **COMMON, **own)
    config.architectures = [ARCHITECTURES[family]]
    torch.manual_seed(seed)
    getattr(transformers, ARCHITECTURES[family])(config).save_pretrained(folder, safe_serialization=True)
    return folder


def family_config(model: Path, data: Path, root: Path, targets: list[str]) -> dict[str, Any]:
    config = tiny_config(model, data, root)
    config["passes"]["lora"]["target_modules"] = targets
    config["passes"]["lora"]["training_args"].update({"max_steps": 1, "per_device_train_batch_size": 4})
    config["passes"]["lora"]["validation_size"] = 4
    config["passes"]["build"].update({"precision": "int4", "calibration_rows": 4})  # auto: GPTQ on the training rows
    config["data_configs"][0]["eval_dataset_size"] = 8
    config["evaluators"] = {"acc": {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
                                                 "user_config": {"perplexity": False}}]}}
    config["engine"].update({"evaluator": "acc", "pytorch_reference": True, "selection": {"remeasure_rounds": 0}})
    return config


def adapted_modules(adapter: Path) -> set[str]:
    """The leaf names of the modules a saved peft adapter holds LoRA weights for."""
    names = _safetensors_header(adapter / "adapter_model.safetensors")
    return {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in names if ".lora_" in key}


def tensor(folder: Path, name: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))[name]


@pytest.mark.slow
@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_lora_merge_int4_accuracy_and_generation(family: str, tmp_path: Path, tiny_model: Path,
                                                             tone_rows: list[dict[str, str]]) -> None:
    import onnx

    targets = FAMILIES[family][2]
    model = make_family_model(tmp_path / family, family, tiny_model)
    data = tmp_path / "tones.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tone_rows[:48]))
    result = autotune.run(family_config(model, data, tmp_path, targets))
    record = result.record
    assert record is not None and record.state == "COMPLETE", record
    assert [(p.name, p.cache_hit) for p in record.passes] == [("lora", False), ("merge", False), ("build", False)]

    # LoRA on the family's own module names, merged into those weights (and those only).
    assert adapted_modules(Path(record.artifacts["lora"]) / "model") == set(targets)
    merged = Path(record.artifacts["merge"]) / "model"
    first = targets[0]  # an attention projection of the family
    changed = f"model.layers.0.self_attn.{first}.weight"
    assert not np.array_equal(tensor(merged, changed), tensor(model, changed))
    assert np.array_equal(tensor(merged, "model.embed_tokens.weight"), tensor(model, "model.embed_tokens.weight"))

    # int4, and the sliding window recorded where the family has one.
    out = tmp_path / "out" / "model"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    stats = json.loads((out / "quant_stats.json").read_text())
    assert stats["algorithm"] == "gptq" and stats["calibration_rows"] == 4  # calibrated on the family's own graph
    decoder = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert (decoder.get("sliding_window") or {}).get("layers", []) == SLIDING.get(family, [])

    # Accuracy on the int4 build (per-row genai path) and on the fp32 ONNX baseline (batched scorer); the
    # baseline predicts row for row what the input model predicts in PyTorch.
    accuracy = record.metrics["accuracy-accuracy"]
    assert accuracy.n == 8 and 0.0 <= accuracy.value <= 1.0
    meta = result.view.meta
    assert meta.baseline_kind == "onnx-fp32"
    baseline, reference = meta.baseline["accuracy-accuracy"], meta.baseline_reference["accuracy-accuracy"]
    assert baseline.n == 8 and baseline.details["correct"] == reference.details["correct"]

    # Generation through onnxruntime-genai, as a user loads the folder: several decode steps past the prompt.
    import onnxruntime_genai as og

    genai_model = og.Model(str(out))
    prompt = og.Tokenizer(genai_model).encode("### Text: the storm is coming and we are all afraid\n### The tone is:\n")
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt) + 8, min_length=len(prompt) + 8, do_sample=False)
    generator = og.Generator(genai_model, params)
    generator.append_tokens(prompt)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert len(tokens) == 8


@pytest.mark.slow
def test_sliding_window_batched_scores_equal_the_per_row_genai_path(tmp_path: Path, tiny_model: Path,
                                                                     tone_rows: list[dict[str, str]]) -> None:
    """Gemma 2's fp32 build: the batched scorer (right-padded rows, the graph on full-length caches with the
    window as a mask) gives the scores of the per-row genai path on its window-sized caches (a fresh
    generator per label once a rewind would need evicted positions), for prompts and labels longer than
    the window."""
    from autotune.evaluation import scoring
    from autotune.evaluation.backends import GenaiBackend
    from autotune.evaluation.base import EvalModel
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    model = make_family_model(tmp_path / "gemma2", "gemma2", tiny_model)
    build_onnx(model, tmp_path / "fp32", ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=tmp_path / "work")
    backend = GenaiBackend(EvalModel(path=tmp_path / "fp32", kind="onnx", key=""), provider="CPUExecutionProvider")
    tok = backend.tokenizer
    prompts = [list(tok(f"### Text: {r['phrase']}\n### The tone is:\n")["input_ids"]) for r in tone_rows[:9]]
    prompts += [[5], list(tok("sad " * 20)["input_ids"])]
    assert min(len(p) for p in prompts) < WINDOW < max(len(p) for p in prompts)
    conts = [[*tok(label, add_special_tokens=False)["input_ids"], 0] for label in ("joy", "surprise", "fear", "sadness")]
    conts.append(list(range(7, 7 + 2 * WINDOW, 2)))  # a label longer than the window: the cache evicts within it
    old = [backend.continuation_logprobs(p, conts) for p in prompts]
    new = backend.score_labels(prompts, conts, batch_rows=4)
    assert isinstance(backend._scorer, scoring.OrtLabelScorer)
    for (old_scores, old_nll), (new_scores, new_nll) in zip(old, new, strict=True):
        np.testing.assert_allclose(new_scores, old_scores, atol=1e-4, rtol=0)
        assert new_nll == pytest.approx(old_nll, abs=1e-3)


def test_the_builders_architectures_are_read_from_the_installed_builder() -> None:
    from autotune.builder.support import architectures_in, builder_architectures

    supported = builder_architectures()
    assert set(ARCHITECTURES.values()) <= supported
    assert "GPT2LMHeadModel" not in supported and "OPTForCausalLM" not in supported
    source = 'if config.architectures[0] == "AForCausalLM" and x:\n    pass\nelif config.architectures[0] == "B":\n    pass\n' \
             'elif other[0] == "C":\n    pass\n'
    assert architectures_in(source) == {"AForCausalLM", "B"}


def test_validate_refuses_an_architecture_the_builder_cannot_export_and_writes_nothing(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    for file in tiny_model.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(file, folder / file.name)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(folder)
    config = tiny_config(folder, tone_file, tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "COLUMNS": "300"}
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "autotune.cli", "validate", "--config", str(path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: input_model: its architecture GPT2LMHeadModel is not one the model builder")
    assert "LlamaForCausalLM" in lines[0]  # what it does export
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
