"""Shared pieces of the int4 tests: a tiny model with a peaked next-token distribution, its fp32 ONNX build,
the data set, running a quantization pass directly, and the next-token agreement check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from autotune.testing import held_out_logprobs
from tests.conftest import TONES, make_tiny_llama, tiny_config

# A quantized model passes when it agrees with its fp32 build on the fixed prompts this well. Measured on
# the tiny model (scaled 3x/10x): int4 block 16/32 (RTN, GPTQ, HQQ, mixed) gives top-1 1.0 and KL <= 0.02; a
# quantizer writing random weights or zero scales gives top-1 <= 0.21 and KL >= 3.
MIN_TOP1 = 0.9
MAX_KL = 0.1
N_PROMPTS = 24
LINEAR_SCALE, EMBED_SCALE = 3.0, 10.0


def sharp_tiny_model(folder: Path, *, tied: bool = True) -> Path:
    """The tests' tiny Llama with its weights scaled up: at the default init (std 0.02) every next-token
    distribution is near uniform, so a zeroed model would agree with it; scaled, they are peaked."""
    import torch
    from transformers import LlamaForCausalLM

    rows = [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]
    make_tiny_llama(folder, [r["phrase"] for r in rows], tie_word_embeddings=tied)
    model = LlamaForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.mul_(LINEAR_SCALE if "embed" not in name else EMBED_SCALE)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def fp32_build(model: Path, out: Path) -> Path:
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    work = out.parent / f"{out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    build_onnx(model, out, ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=work)
    return out


def dataset(model: Path, root: Path) -> Any:
    from autotune.config_checks import load_config
    from autotune.data import load_data

    return load_data(load_config(tiny_config(model, TONES, root)).data_configs[0])


def run_pass(pass_type: str, params: dict[str, Any], source: Path, out: Path, data: Any) -> Path:
    """Run a registered pass on an fp32 ONNX folder, as the pipeline would (its own work folder)."""
    from autotune.context import PassContext
    from autotune.models.handle import ModelHandle
    from autotune.passes import get_pass

    cls = get_pass(pass_type, path="test")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = out.parent / f"{out.name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cls().run(ModelHandle(kind="onnx", path=source, key=""), cls.Params(**params),
              PassContext(provider="CPUExecutionProvider", work_dir=work, data=data), out)
    return out


def next_token_logprobs(folder: Path, data: Any, n: int = N_PROMPTS) -> np.ndarray:
    """Log-probabilities [n, vocab] of the next token after each of ``n`` fixed held-out phrases. The phrase alone:
    full prompts all end in the same template tokens, and a random-weight model's next token depends mostly on
    the last one; phrases end in different words."""
    return np.concatenate(held_out_logprobs(folder, data, rows=n, field="phrase", last_only=True))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean KL(reference || candidate)) of two sets of next-token log-probabilities."""
    top1 = float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean())
    kl = float((np.exp(reference) * (reference - candidate)).sum(axis=1).mean())
    return top1, kl


def agrees(reference: np.ndarray, candidate: np.ndarray) -> bool:
    top1, kl = agreement(reference, candidate)
    return top1 >= MIN_TOP1 and kl <= MAX_KL
