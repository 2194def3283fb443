"""LoRA targets are checked against the input model's module names at ``validate``, read without loading
its weights (safetensors headers, a GGUF's tensors), with peft's matching rule; a refused run writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.config_checks import load_config
from autotune.errors import ConfigError
from tests.conftest import tiny_config


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def write(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_validate_refuses_a_target_that_matches_no_module_and_run_writes_nothing(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["target_modules"] = ["no_such_proj"]
    path = write(config, tmp_path / "run.yaml")
    validated = cli("validate", "--config", str(path), cwd=tmp_path)
    assert validated.returncode == 2, validated.stdout + validated.stderr
    lines = validated.stderr.strip().splitlines()
    assert len(lines) == 1, validated.stderr
    assert lines[0].startswith("error: passes.lora.target_modules: 'no_such_proj' matches no module of this model")
    assert all(name in lines[0] for name in ("q_proj", "v_proj", "o_proj", "down_proj"))

    ran = cli("run", "--config", str(path), cwd=tmp_path)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "passes.lora.target_modules" in ran.stderr
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # no study.db, no logs: nothing half-written


def test_every_searched_choice_of_target_modules_is_checked(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["target_modules"] = [["q_proj", "v_proj"], ["model.layers.0.self_attn.q_proj"], ["q_proj", "qkv"]]
    config["engine"]["search_strategy"] = {"sampler": "grid"}
    config["evaluators"] = {"acc": {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy"}]}]}}
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "passes.lora.target_modules" and "'qkv' matches no module" in info.value.message
    # A dotted name matching the end of a module's full name, and all-linear, are peft's own: accepted.
    config["passes"]["lora"]["target_modules"] = [["model.layers.0.self_attn.q_proj"], ["self_attn.v_proj", "o_proj"], "all-linear"]
    load_config(config)


def test_the_matching_rule_is_pefts() -> None:
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    from autotune.passes.lora import target_matches, unmatched_target

    keys = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "lm_head", "model.layers.0.self_attn"]
    targets = ["q_proj", "self_attn.q_proj", "layers.0.self_attn.q_proj", "proj", "_proj", "lm_head", "head", "self_attn",
               "mlp.down_proj", "0.mlp", "model.layers.0.self_attn.q_proj", "elf_attn.q_proj"]
    for target in targets:
        for key in keys:
            expected = bool(check_target_module_exists(LoraConfig(target_modules=[target]), key))
            assert target_matches(target, key) == expected, (target, key)
    assert unmatched_target(["q_proj", "nope"], keys) == "nope" and unmatched_target("all-linear", keys) is None


def write_tiny_gguf(path: Path, *, hidden: int = 64, layers: int = 2, vocab: int = 32, ff: int = 128, heads: int = 4,
                    kv_heads: int = 2) -> Path:
    """A tiny Llama as a GGUF (f32 tensors, no tokenizer): enough for its config and tensor names."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    rng = np.random.default_rng(0)
    kv = hidden // heads * kv_heads
    writer.add_tensor("token_embd.weight", rng.standard_normal((vocab, hidden)).astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for block in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)),
                            ("ffn_down", (hidden, ff)), ("attn_norm", (hidden,)), ("ffn_norm", (hidden,))):
            writer.add_tensor(f"blk.{block}.{name}.weight", rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_input_is_checked_by_the_names_transformers_converts_its_tensors_to(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.models.module_names import module_names

    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    names = module_names(gguf_file)
    assert {"model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj", "lm_head"} <= names.names
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["input_model"] = {"type": "GGUFModel", "model_path": str(tmp_path), "gguf_file": "tiny.gguf"}
    config["passes"]["lora"]["target_modules"] = ["q_proj", "attn_q"]  # the GGUF's own name is not the model's
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "passes.lora.target_modules"
    assert info.value.message.startswith("'attn_q' matches no module") and "q_proj" in info.value.message


def test_a_tied_output_layer_counts_though_the_header_has_no_tensor_of_its_own(tmp_path: Path, tone_file: Path) -> None:
    from autotune.models.module_names import module_names
    from tests.conftest import make_tiny_llama

    tied = make_tiny_llama(tmp_path / "tied", ["a b c", "d e f"], tie_word_embeddings=True)
    assert "lm_head" in module_names(tied).names
    config = tiny_config(tied, tone_file, tmp_path)
    config["passes"]["lora"]["target_modules"] = ["q_proj", "lm_head"]
    load_config(config)


def test_a_hub_id_is_checked_once_found_in_the_cache_by_validate_and_by_run(tmp_path: Path, tiny_model: Path,
                                                                            tone_file: Path) -> None:
    from tests.models.test_hub import MAIN, REPO, add_snapshot
    from tests.models.test_hub import cli as hub_cli

    cache = tmp_path / "hf" / "hub"
    add_snapshot(cache, REPO, tiny_model, commit=MAIN, refs=["main"])
    config = tiny_config(Path(REPO), tone_file, tmp_path)
    config["input_model"] = {"type": "HfModel", "model_path": REPO}
    config["passes"]["lora"]["target_modules"] = ["q_proj", "no_such_proj"]
    path = write(config, tmp_path / "hub.yaml")
    for command in ("validate", "run"):
        proc = hub_cli(command, "--config", str(path), cache=cache, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "error: passes.lora.target_modules: 'no_such_proj' matches no module of this model" in proc.stderr
    assert not (tmp_path / "out").exists()
