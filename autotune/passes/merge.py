"""Merge a LoRA adapter into its full-precision base and save a safetensors HF folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from autotune.context import PassContext
from autotune.models.handle import ModelHandle
from autotune.models.loading import load_causal_lm, load_tokenizer
from autotune.passes.base import Pass, PassParams, register_pass
from autotune.passes.qlora import ADAPTER_META, dequantized_base

# What ``tokenizer.save_pretrained`` writes, copied as files: loading a tokenizer only to save it
# again costs ~0.5 s for SmolLM2's.
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json"}


class MergeParams(PassParams):
    pass


@register_pass("merge", "MergeAdapter")
class MergeAdapterWeights(Pass):
    type_name = "MergeAdapterWeights"
    Params = MergeParams
    accepts = ("adapter",)
    output_kind = "hf"

    def run(self, model: ModelHandle, params: PassParams, ctx: PassContext, output: Path) -> None:
        from peft import PeftModel

        assert model.base is not None, "an adapter handle carries its base model"
        # Always merge at full precision. A QLoRA adapter was trained against the 4-bit base, so it
        # is merged into that base dequantized to fp32 (never into 4-bit weights, which loses accuracy).
        meta = model.path / ADAPTER_META
        if meta.is_file():
            meta_values = json.loads(meta.read_text())
            base = dequantized_base(model.base.path, meta_values["base_quantization"], trust_remote_code=ctx.trust_remote_code,
                                    device=meta_values.get("device", "cpu"))
        else:
            base = load_causal_lm(model.base.path, trust_remote_code=ctx.trust_remote_code)
        merged = PeftModel.from_pretrained(base, str(model.path)).merge_and_unload()
        merged.save_pretrained(str(output), safe_serialization=True)
        tokenizer_files = [f for f in model.path.iterdir() if f.name in TOKENIZER_FILES]
        for file in tokenizer_files:
            shutil.copy2(file, output / file.name)
        if not any(f.name.startswith("tokenizer") for f in tokenizer_files):
            # not saved by autotune's LoRA pass: let transformers read and write whatever it has
            load_tokenizer(model.path, trust_remote_code=ctx.trust_remote_code).save_pretrained(str(output))
        generation = model.base.path / "generation_config.json"
        if generation.is_file() and not (output / "generation_config.json").is_file():
            shutil.copy(generation, output / "generation_config.json")
