"""Merge a LoRA adapter into its full-precision base and save a safetensors HF folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from autotune.context import PassContext
from autotune.models.handle import ModelHandle
from autotune.models.loading import load_causal_lm, load_tokenizer
from autotune.passes.base import Pass, PassParams, register_pass


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
        # Always merge into the full-precision base: merging into 4-bit weights (QLoRA) and
        # re-saving loses accuracy.
        base = load_causal_lm(model.base.path, trust_remote_code=ctx.trust_remote_code)
        merged = PeftModel.from_pretrained(base, str(model.path)).merge_and_unload()
        merged.save_pretrained(str(output), safe_serialization=True)
        load_tokenizer(model.path, trust_remote_code=ctx.trust_remote_code).save_pretrained(str(output))
        generation = model.base.path / "generation_config.json"
        if generation.is_file() and not (output / "generation_config.json").is_file():
            shutil.copy(generation, output / "generation_config.json")
