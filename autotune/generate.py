"""Trying a model: load an ONNX folder with onnxruntime-genai and stream its answer token by token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from autotune.errors import ModelError


def card_template(model_dir: Path) -> str | None:
    """The prompt part of the training template, from the folder's model card if it has one."""
    config = _card_data_config(model_dir)
    return config.get("text_template") if config else None


def _card_data_config(model_dir: Path) -> dict[str, Any] | None:
    """The first data config of the folder's model card (how the model was trained), if it has one."""
    card = model_dir / "model_card.json"
    if not card.is_file():
        return None
    data = json.loads(card.read_text())
    configs = data.get("reproduce_config", {}).get("data_configs") or []
    return configs[0] if configs else None


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
        config = _card_data_config(model_dir) if template is None else None
        if config and config.get("chat_template"):  # rendered as trained: the tokenizer's chat template
            self.template: Template | None = Template.chat_turns(config.get("text_cols"), system_prompt=config.get("system_prompt"),
                                                                 where="model_card.json: data_configs[0].text_cols")
        else:
            text = template or (config or {}).get("text_template")
            self.template = Template.parse(text, where="--template") if text else None

    def prompt(self, text: str) -> str:
        if self.template is None:
            return text
        columns = [c for c in self.template.columns if c != self.template.answer_column]
        return self.template.prompt({columns[0]: text} if columns else {}, self.tokenizer)

    def stream(self, text: str, *, max_new_tokens: int, out: TextIO) -> str:
        chat = self.template is not None and self.template.chat
        ids = list(self.tokenizer(self.prompt(text), add_special_tokens=not chat)["input_ids"])
        stop_text = self.template.stop_text(self.tokenizer) if self.template is not None else None
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        stream = self.og.Tokenizer(self.model).create_stream()
        pieces: list[str] = []
        written = 0
        eos = self.tokenizer.eos_token_id
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token == eos:
                break
            pieces.append(stream.decode(token))
            text = "".join(pieces)
            if stop_text and stop_text in text:  # the answer's terminator written: the answer is over
                break
            # Hold back a tail that may be the start of the terminator (never printed if it is).
            stop = stop_text or ""
            held = next((k for k in range(min(len(stop) - 1, len(text)), 0, -1) if stop.startswith(text[-k:])), 0)
            out.write(text[written:len(text) - held])
            out.flush()
            written = len(text) - held
        text = "".join(pieces)
        if stop_text and stop_text in text:
            text = text[: text.index(stop_text)]
        out.write(text[written:] + "\n")
        return text


def answer(model_dir: Path, text: str, **kwargs: Any) -> str:
    import io

    return Generator(model_dir).stream(text, out=io.StringIO(), **kwargs).strip()
