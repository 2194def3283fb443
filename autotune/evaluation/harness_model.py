"""lm-evaluation-harness's LM interface on what a trial built: an ONNX folder on the trial's execution provider
or the HF reference in PyTorch, through the same scoring backends as every other metric.

Tokenisation follows lm-eval's own ``HFLM`` (``lm_eval.models.huggingface``) so a task scores the same requests
on both: the tokenizer's default special tokens unless the text already starts with BOS, trailing context
spaces moved into the continuation, an empty context replaced by the prefix token (BOS, else EOS), and each
(context, continuation) left-truncated to the model's context length. Log-likelihoods are teacher-forced in
batches (:meth:`autotune.evaluation.backends.Backend.forced_logprobs`); ``generate_until`` decodes greedily one
request at a time through onnxruntime-genai (PyTorch for the reference), stopping at the task's ``until``
strings and EOS, and cuts the text at the first stop string as HFLM does.

Imported only when an ``lm_eval`` metric runs: lm-eval is the optional extra ``autotune[lm-eval]``.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from autotune.errors import ConfigError
from autotune.evaluation.backends import Backend

__all__ = ["HarnessLM", "SamplingRefused"]

DEFAULT_MAX_GEN_TOKS = 256  # HFLM's default when a task names none


class SamplingRefused(ConfigError):
    """A task asks for sampled generations; the metric decodes greedily, and says so rather than ignore it."""


class HarnessLM(TemplateLM):
    """One model as lm-eval sees it. ``where`` names the metric in errors; ``batch_size``: sequences per
    teacher-forced pass."""

    def __init__(self, backend: Backend, *, batch_size: int = 16, where: str = "evaluators", max_length: int | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.batch_size = batch_size
        self.where = where
        self.max_length = min(max_length, backend.max_length) if max_length else backend.max_length

    # -- tokenisation, as HFLM ---------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = list(self.tokenizer.encode(string, **special))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        def render(history: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)

        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:  # a template without a system role, as HFLM retries
            return render([m for m in chat_history if m["role"] != "system"])

    # -- scoring -----------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = []
        for _, context, continuation in requests:
            if len(continuation) > self.max_length:
                raise ConfigError(self.where, f"a continuation of {len(continuation)} tokens is longer than the model's "
                                              f"context ({self.max_length} tokens)")
            whole = (context + continuation)[-(self.max_length + 1):]  # HFLM's left truncation of the context
            pairs.append((whole[: len(whole) - len(continuation)], continuation))
        results = self.backend.forced_logprobs(pairs, batch_rows=self.batch_size)
        for (strings, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", strings, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[int, tuple[list[int], list[int]]]] = []
        for index, (text,) in enumerate(req.args for req in requests):
            for window in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)):
                windows.append((index, window))
        scored = self.backend.forced_logprobs([w for _, w in windows], batch_rows=self.batch_size)
        totals = [0.0] * len(requests)
        for (index, _), (logprob, _) in zip(windows, scored, strict=True):
            totals[index] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        eos_text = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        out: list[str] = []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = check_generation_kwargs(gen_kwargs, where=self.where, max_length=self.max_length)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = int(kwargs.pop("max_gen_toks"))
            prompt = self.tok_encode(context, left_truncate_len=self.max_length - max_new) or [self.prefix_token_id]
            stops = [s for s in until if s]

            def stop(tokens: list[int], stops: list[str] = stops) -> bool:
                text = self.tokenizer.decode(tokens, skip_special_tokens=False)
                return any(s in text for s in stops)

            tokens, _, _ = self.backend.generate(prompt, max_new, stop=stop)
            text = postprocess_generated_text(self.tokenizer.decode(tokens, skip_special_tokens=True), until, None)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out


# Generation settings that change nothing in a greedy decode (top-k/top-p only filter what sampling draws from).
_GREEDY_NEUTRAL = {"do_sample": False, "temperature": 0.0, "top_k": None, "top_p": None, "num_beams": 1, "repetition_penalty": 1.0}


def check_generation_kwargs(gen_kwargs: dict[str, Any], *, where: str, task: str | None = None,
                            max_length: int | None = None) -> dict[str, Any]:
    """lm-eval's normalised generation kwargs of a ``generate_until`` request, refused (one line) where the greedy
    decode here would not do what they ask: sampling, beams, a penalty, a setting it does not know, or more new
    tokens than the context holds."""
    kwargs = normalize_gen_kwargs(dict(gen_kwargs), DEFAULT_MAX_GEN_TOKS)
    of = f"task '{task}'" if task else "a task"
    if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
        raise SamplingRefused(where, f"{of} asks for sampled generations (generation_kwargs do_sample/temperature); this metric "
                                     "decodes greedily: set do_sample: false in the task's YAML")
    for name, value in kwargs.items():
        if name in ("until", "max_gen_toks"):
            continue
        if name not in _GREEDY_NEUTRAL:
            raise SamplingRefused(where, f"{of} sets generation_kwargs.{name}, which this metric's greedy decode does not apply")
        if name in ("num_beams", "repetition_penalty") and value is not None and float(value) != _GREEDY_NEUTRAL[name]:
            raise SamplingRefused(where, f"{of} sets generation_kwargs.{name}: {value}; this metric decodes greedily, one beam, "
                                         "no penalty")
    if max_length is not None and int(kwargs["max_gen_toks"]) >= max_length:
        raise ConfigError(where, f"{of} generates up to {kwargs['max_gen_toks']} tokens, not fewer than the context "
                                 f"({max_length} tokens) holds")
    return kwargs
