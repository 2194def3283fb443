"""Fixtures: a tiny Llama (hidden 64, 2 layers) with a small BPE tokenizer, and small data files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TONES = ROOT / "configs" / "data" / "tones.jsonl"
SHARED_TONES = ROOT.parent / "shared" / "data" / "tone-classification.jsonl"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def make_tiny_llama(folder: Path, texts: list[str], *, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([*texts, TEMPLATE, "joy surprise fear sadness"], trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    folder.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tone_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tone_rows: list[dict[str, str]]) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", [r["phrase"] for r in tone_rows])


@pytest.fixture()
def tone_file(tmp_path: Path, tone_rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "tones.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in tone_rows[:200]) + "\n")
    return path


def generate_one(model_dir: Path, prompt: str = "### Text: the storm is coming\n### The tone is:\n") -> list[int]:
    """Load an ONNX folder with onnxruntime-genai as a user would and generate one token."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=48, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(og.Tokenizer(model).encode(prompt))
    generator.generate_next_token()
    return list(generator.get_next_tokens())


def tiny_config(model: Path, data: Path, work: Path, **overrides: Any) -> dict[str, Any]:
    """A small single-run config dict over the tiny model (tests tweak it)."""
    config: dict[str, Any] = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"params": {"data_name": "json", "data_files": str(data), "split": "train"}},
            "pre_process_data_config": {"params": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE, "source_max_len": 64}},
            "eval_dataset_size": 40,
        }],
        "passes": {
            "lora": {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                     "training_args": {"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2}},
            "merge": {"type": "MergeAdapterWeights"},
            "build": {"type": "ModelBuilder", "precision": "int4", "block_size": 32},
        },
        "engine": {"search_strategy": False, "cache_dir": str(work / "cache"), "output_dir": str(work / "out")},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose prerequisite is missing, but fail it under CI=true: a broken install must not pass CI green."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a test prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)
