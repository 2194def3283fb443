"""Trying a model: load an ONNX folder with onnxruntime-genai and stream its answer token by token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from autotune.errors import ModelError


def card_template(model_dir: Path) -> str | None:
    """The prompt part of the training template, from the folder's model card if it has one."""
    card = model_dir / "model_card.json"
    if not card.is_file():
        return None
    data = json.loads(card.read_text())
    configs = data.get("reproduce_config", {}).get("data_configs") or []
    return configs[0].get("text_template") if configs else None


class Generator:
    def __init__(self, model_dir: Path, *, template: str | None = None) -> None:
        if not (model_dir / "genai_config.json").is_file():
            raise ModelError(str(model_dir), "not an ONNX model folder (no genai_config.json)")
        import onnxruntime_genai as og

        from autotune.data import Template
        from autotune.models.loading import load_tokenizer

        self.og = og
        self.model = og.Model(str(model_dir))
        self.tokenizer = load_tokenizer(model_dir)
        text = template or card_template(model_dir)
        self.template = Template.parse(text, where="--template") if text else None

    def prompt(self, text: str) -> str:
        if self.template is None:
            return text
        columns = [c for c in self.template.columns if c != self.template.answer_column]
        return self.template.prompt({columns[0]: text} if columns else {})

    def stream(self, text: str, *, max_new_tokens: int, out: TextIO) -> str:
        ids = list(self.tokenizer(self.prompt(text), add_special_tokens=True)["input_ids"])
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        stream = self.og.Tokenizer(self.model).create_stream()
        pieces: list[str] = []
        eos = self.tokenizer.eos_token_id
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token == eos:
                break
            piece = stream.decode(token)
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        return "".join(pieces)


def answer(model_dir: Path, text: str, **kwargs: Any) -> str:
    import io

    return Generator(model_dir).stream(text, out=io.StringIO(), **kwargs).strip()
