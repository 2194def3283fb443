"""A tiny Llama for tests and benchmarks: hidden 64, 2 layers, a 512-token byte-level BPE tokenizer.

Random weights (seeded), so it learns nothing useful; what it gives is a real Hugging Face folder
(safetensors, tokenizer files) that every pass and evaluator handles as it would a real model, in
seconds on a CPU. ``tests/conftest.py`` and ``bench/common.py`` both build it from here (the
benchmarks must not need pytest or the test tree). :func:`held_out_logprobs` reads what a quantized ONNX
build predicts, to compare it with its fp32 build (the int4/GPTQ tests and bench/gptq_cost.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TEMPLATE", "held_out_logprobs", "make_tiny_llama"]

# The tone data's prompt template (configs/data/tones.jsonl): its text is in the tokenizer's training set.
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def make_tiny_llama(folder: Path, texts: list[str], *, seed: int = 0, tie_word_embeddings: bool = False,
                    num_hidden_layers: int = 2) -> Path:
    """Write a tiny ``LlamaForCausalLM`` and its tokenizer (trained on ``texts``) into ``folder``; returns it."""
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
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=num_hidden_layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def held_out_logprobs(folder: Path, data: Any, *, rows: int, field: str | None = None, last_only: bool = False) -> list[np.ndarray]:
    """Next-token log-probabilities (float64) of the builder ONNX decoder in ``folder`` on the first ``rows``
    held-out rows of ``data`` (an :class:`autotune.data.Dataset`), one array [positions, vocab] per row.

    A row is its templated prompt + answer, or with ``field`` that column's text alone; ``last_only`` keeps
    the last position only ([1, vocab]). onnxruntime on CPU, the whole row in one call without KV cache.
    """
    import json

    import numpy as np
    import onnx
    import onnxruntime as ort

    from autotune.data import encode_example, encode_row
    from autotune.models.loading import load_tokenizer
    from autotune.quant.calibration import decoder_feed

    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = load_tokenizer(folder)
    out = []
    for row in data.eval[:rows]:
        ids = (encode_example(tokenizer, row[field], None, max_len=data.source_max_len)[0] if field
               else encode_row(tokenizer, data.template, row, max_len=data.source_max_len)[0])
        logits = session.run(["logits"], decoder_feed(inputs, ids, decoder["num_key_value_heads"], decoder["head_size"]))[0][0]
        logits = logits[-1:] if last_only else logits
        logits = logits.astype(np.float64)
        out.append(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))
    return out
