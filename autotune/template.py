"""Prompt templates: how one row becomes the text a model is trained on and asked.

The template's last placeholder is the answer (``{tone}`` in ``"### Text: {phrase}\\n### The tone is:\\n{tone}"``);
everything before it is the prompt, and text after it (``"\\n<|end|>"`` in
``"<|user|>\\n{Question}<|end|>\\n<|assistant|>\\n{Best Answer}\\n<|end|>"``) is the answer's terminator:
trained as part of the answer (the model learns to stop), a stop rule for generation, stripped before
scoring. With ``chat_template: true`` the tokenizer's own chat template renders a user turn (the first of
``text_cols``) and an assistant turn (the second): what the template writes after the assistant's content
(``"<|im_end|>\\n"``) is the terminator. Training and every evaluator use :func:`encode_row` so a trained model
is asked exactly the prompt it learnt to answer.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autotune.config.schema import DataConfig
from autotune.errors import ConfigError, DataError

__all__ = ["CHAT_ANSWER", "Template", "encode_example", "encode_row", "stop_rule", "template_of"]

# Where a chat template's assistant content goes: rendered once with this in its place, the text before it
# is the prompt and the text after it the terminator (no real answer contains it).
CHAT_ANSWER = "\x00autotune-answer\x00"


@dataclass(frozen=True)
class Template:
    text: str
    columns: tuple[str, ...]
    answer_column: str
    prompt_text: str  # the template up to the answer placeholder
    terminator: str = ""  # the template after the answer placeholder ("" when the answer ends it)
    chat: bool = False  # rendered by the tokenizer's chat template (prompt and terminator depend on it)
    system_prompt: str | None = None  # a chat template's system turn

    @classmethod
    def parse(cls, text: str, *, where: str) -> Template:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise DataError(where, f"bad template: {exc}") from None
        columns = tuple(name for _, name, _, _ in parts if name is not None)
        if not columns or any(c == "" or c.isdigit() for c in columns):
            raise DataError(where, "the template needs named placeholders such as {phrase} and {tone}")
        answer = columns[-1]
        if list(columns).count(answer) > 1:
            raise DataError(where, f"the answer placeholder {{{answer}}} (the last one) appears more than once")
        if "{" + answer + "}" not in text:
            raise DataError(where, f"the answer placeholder {{{answer}}} cannot carry a format spec or conversion")
        placeholder = text.rindex("{" + answer + "}")
        prompt = text[:placeholder]
        # Text after the answer is its terminator (literal: no placeholder can follow the last one).
        terminator = text[placeholder + len(answer) + 2:].replace("{{", "{").replace("}}", "}")
        if not terminator.strip():
            terminator = ""  # trailing whitespace only: the answer ends the template
        return cls(text=text, columns=columns, answer_column=answer, prompt_text=prompt, terminator=terminator)

    @classmethod
    def chat_turns(cls, columns: list[str] | None, *, system_prompt: str | None, where: str) -> Template:
        """A user turn (``columns[0]``) and an assistant turn (``columns[1]``) in the tokenizer's chat template
        (``where``: the text_cols key, for errors)."""
        if not columns or len(columns) != 2 or len(set(columns)) != 2 or not all(isinstance(c, str) and c for c in columns):
            raise ConfigError(where, "chat_template: true needs text_cols: [prompt column, answer column] "
                                                  f"(two different columns), got {columns!r}")
        text = f"chat_template(system={system_prompt!r}, user={{{columns[0]}}}, assistant={{{columns[1]}}})"
        return cls(text=text, columns=tuple(columns), answer_column=columns[1], prompt_text="", chat=True,
                   system_prompt=system_prompt)

    def render(self, row: dict[str, Any], tokenizer: Any = None) -> tuple[str, str]:
        """(prompt, terminator) of ``row``: a chat template's through ``tokenizer``."""
        if not self.chat:
            return self.prompt_text.format(**{c: row.get(c, "") for c in self.columns if c != self.answer_column}), self.terminator
        if tokenizer is None:
            raise TypeError("a chat template renders through the model's tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("chat_template", "true, but the model's tokenizer has no chat template (set text_template instead)")
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [{"role": "user", "content": str(row.get(self.columns[0], ""))},
                     {"role": "assistant", "content": CHAT_ANSWER}]
        from jinja2 import TemplateError

        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except TemplateError as exc:  # the template's own refusal (e.g. no system role): the user's setting
            raise DataError("chat_template", f"the tokenizer's chat template refuses these turns: {str(exc)[:200]}"
                            + (" (it may not take a system_prompt)" if self.system_prompt else "")) from None
        if not isinstance(text, str) or text.count(CHAT_ANSWER) != 1:
            raise DataError("chat_template", "the tokenizer's chat template does not write the assistant turn's content once")
        prompt, terminator = text.split(CHAT_ANSWER)
        return prompt, terminator

    def check_tokenizer(self, tokenizer: Any, *, where: str) -> None:
        """A chat template renders through ``tokenizer`` (one-line error at ``<where>.chat_template`` if not);
        a text template needs nothing of it."""
        if not self.chat:
            return
        try:
            self.render({self.columns[0]: "x"}, tokenizer)
        except DataError as exc:
            raise DataError(f"{where}.{exc.where}", exc.message) from None

    def stop_text(self, tokenizer: Any = None) -> str | None:
        """What generation stops at besides EOS: the terminator without its surrounding whitespace (a
        model that learnt "\\n<|end|>" may write " <|end|>"), None without a terminator."""
        terminator = self.render({}, tokenizer)[1]
        eos = getattr(tokenizer, "eos_token", None) if self.chat else None
        if isinstance(eos, str) and eos and terminator.strip() != eos:
            # A chat template may end the turn and then write EOS ("<|end|>\n<|endoftext|>"): the turn's end is
            # the stop; EOS stops generation anyway, and decoded text never holds it.
            terminator = terminator.replace(eos, "")
        return (terminator.strip() or terminator) or None

    def prompt(self, row: dict[str, Any], tokenizer: Any = None) -> str:
        return self.render(row, tokenizer)[0]

    def answer(self, row: dict[str, Any]) -> str:
        """The reference answer (what a metric compares a generation with)."""
        return str(row[self.answer_column])

    def target(self, row: dict[str, Any], tokenizer: Any = None) -> str:
        """What training teaches after the prompt: the answer and its terminator."""
        return self.answer(row) + self.render(row, tokenizer)[1]

    def answer_ids(self, tokenizer: Any, answer: str) -> list[int]:
        """Token ids of ``answer`` as trained after a prompt: with its terminator, and EOS after a text
        template (a chat template's terminator ends the turn itself)."""
        prompt, terminator = self.render({}, tokenizer)
        if self.chat:  # tokenised after the prompt, as encode_row tokenises a whole conversation
            whole = list(tokenizer(prompt + answer + terminator, add_special_tokens=False)["input_ids"])
            before = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if whole[: len(before)] == before:
                return whole[len(before):]
        ids = list(tokenizer(answer + terminator, add_special_tokens=False)["input_ids"])
        eos = tokenizer.eos_token_id
        return ids if self.chat or eos is None else [*ids, eos]

    def cut(self, generated: str, tokenizer: Any = None) -> str:
        """A generation as a metric reads it: up to the terminator, without surrounding whitespace."""
        stop = self.stop_text(tokenizer)
        if stop and stop in generated:
            generated = generated[: generated.index(stop)]
        return generated.strip()


def template_of(config: DataConfig, *, where: str, template_where: str | None = None,
                path_of: Callable[[str], str] | None = None) -> Template:
    """The data config's template: its ``text_template``, or with ``chat_template: true`` the tokenizer's
    chat template over ``text_cols`` (never both: which one trains the model would be a guess). ``path_of``:
    where a key was written (the config loader's), else ``<where>.<key>``."""
    at = path_of or (lambda key: f"{where}.{key}")
    if config.chat_template:
        if config.text_template is not None:
            raise ConfigError(at("chat_template"), "true together with text_template: use one (the tokenizer's chat "
                                                 "template renders text_cols, or your text_template does)")
        return Template.chat_turns(config.text_cols, system_prompt=config.system_prompt, where=at("text_cols"))
    if config.system_prompt is not None:
        raise ConfigError(at("system_prompt"), "applies to chat_template: true only (write it into text_template instead)")
    if config.text_template is None:
        raise ConfigError(at("text_template"), "required key is missing (or set chat_template: true with text_cols: "
                                             "[prompt column, answer column])")
    return Template.parse(config.text_template, where=template_where or at("text_template"))


def stop_rule(tokenizer: Any, template: Template) -> Callable[[list[int]], bool] | None:
    """Whether the tokens generated so far have written the template's terminator (the answer is over), for
    :meth:`autotune.evaluation.backends.Backend.generate`'s ``stop``; None without a terminator (EOS ends it)."""
    stop = template.stop_text(tokenizer)
    if stop is None:
        return None
    eos = tokenizer.eos_token_id
    window = max(8, 2 * len(tokenizer(stop, add_special_tokens=False)["input_ids"]) + 4)

    def stops(tokens: list[int]) -> bool:
        return stop in tokenizer.decode([t for t in tokens[-window:] if t != eos], skip_special_tokens=False)

    return stops


def encode_row(tokenizer: Any, template: Template, row: dict[str, Any], *, max_len: int,
               with_answer: bool = True) -> tuple[list[int], int]:
    """Token ids of one row as training sees it (prompt, answer, terminator; with ``with_answer`` False the
    prompt alone, as generation sees it) and the prompt's length in tokens."""
    prompt, terminator = template.render(row, tokenizer)  # once: a chat template renders through jinja
    answer = template.answer(row) + terminator if with_answer else None
    return encode_example(tokenizer, prompt, answer, max_len=max_len, chat=template.chat)


def encode_example(tokenizer: Any, prompt: str, answer: str | None, *, max_len: int,
                   chat: bool = False) -> tuple[list[int], int]:
    """Token ids of prompt (+ answer + EOS) and the prompt's length in tokens.

    Prompt and answer are tokenised separately and joined, so the prompt tokens are identical
    whether or not the answer follows (evaluators score label continuations after the same ids).
    ``chat``: the prompt was rendered by a chat template, which writes its own BOS and ends the answer's
    turn itself: no special tokens added, no EOS appended, and the ids are the whole text's (what
    ``apply_chat_template`` gives) whenever its prompt tokens are the prompt's own.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
    if answer is None:
        return prompt_ids[-max_len:], min(len(prompt_ids), max_len)
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if chat:
        whole = list(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"])
        ids = whole if whole[: len(prompt_ids)] == prompt_ids else prompt_ids + answer_ids
    else:
        ids = prompt_ids + answer_ids + ([eos] if eos is not None else [])
    if len(ids) > max_len:  # keep the answer: cut the start of the prompt
        cut = len(ids) - max_len
        ids = ids[cut:]
        return ids, len(prompt_ids) - cut
    return ids, len(prompt_ids)
