"""Accuracy on the held-out split: label scoring by log-likelihood, or greedy generation."""

from __future__ import annotations

import json
import math
import re
import string
from typing import Any, ClassVar, Literal

from pydantic import Field

from autotune.data import Dataset, encode_row, stop_rule
from autotune.errors import ConfigError
from autotune.evaluation.backends import Backend, open_backend
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Metric,
    MetricType,
    MetricTypeParams,
    SubType,
    deprecated_names,
    register_metric_type,
)
from autotune.evaluation.metrics import classification_scores, wilson_interval


class AccuracyParams(MetricTypeParams):
    # label_scoring: pick the label whose continuation is most likely (no generation);
    # generation: greedy decode and compare the normalised text with the label.
    mode: Literal["label_scoring", "generation"] = "label_scoring"
    # Generation's token limit; default: the longest label's tokens plus two.
    max_new_tokens: int | None = Field(None, gt=0)
    max_examples: int | None = Field(None, gt=0)
    perplexity: bool = True
    # Label scoring: rows per batched forward pass (an ONNX folder; 1 still batches a row's labels).
    batch_rows: int = Field(16, gt=0)


def normalise(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.lower().strip().strip(string.punctuation + " ")
    return re.sub(r"\s+", " ", text)


@register_metric_type("accuracy_score")
class AccuracyMetricType(MetricType):
    type_name = "accuracy"
    # 2: per-row outcomes stored (details.correct) for paired comparisons; 3: perplexity over the answer,
    # its terminator and EOS only (it was over prompt and answer), labels scored with their terminator
    version = 3
    Params = AccuracyParams
    SUB_TYPES: ClassVar[dict[str, SubType]] = {
        "accuracy": SubType("ratio", True, "accuracy", "accuracy"),
        "macro_f1": SubType("ratio", True, "macro F1", "accuracy"),
        "perplexity": SubType("ppl", False, "perplexity (answer)", "accuracy"),
    }
    ALIASES: ClassVar[dict[str, str]] = {"accuracy_score": "accuracy", "f1_score": "macro_f1", "f1": "macro_f1"}
    needs_data = True

    def evaluate(self, model: EvalModel, params: AccuracyParams, ctx: EvalContext) -> dict[str, Metric]:
        data = ctx.data
        if data is None or not data.is_classification:
            raise ConfigError("evaluators", "the accuracy metric needs a data config whose answers are labels")
        backend = open_backend(model, provider=ctx.provider, trust_remote_code=ctx.trust_remote_code)
        tok = backend.tokenizer
        rows = data.eval[: params.max_examples] if params.max_examples else data.eval
        labels = data.labels
        # A label is scored as it was trained: followed by the template's terminator (and EOS).
        label_ids = [data.template.answer_ids(tok, label) for label in labels]
        index = {label: i for i, label in enumerate(labels)}
        limit = params.max_new_tokens or max(len(ids) for ids in label_ids) + 2
        normalised = {normalise(label): i for i, label in enumerate(labels)}
        prompts = [encode_row(tok, data.template, row, max_len=data.source_max_len, with_answer=False)[0] for row in rows]
        answers = [data.template.answer(row) for row in rows]
        predictions: list[int] = []
        references = [index[answer] for answer in answers]
        nll_total, nll_count = 0.0, 0
        if params.mode == "label_scoring":
            for answer, (scores, _prompt_nll) in zip(
                    answers, backend.score_labels(prompts, label_ids, batch_rows=params.batch_rows), strict=True):
                predictions.append(max(range(len(scores)), key=scores.__getitem__))
                # Perplexity of the answer given its prompt: the reference label's tokens only.
                nll_total -= scores[index[answer]]
                nll_count += len(label_ids[index[answer]])
        else:
            stops = stop_rule(tok, data.template)  # the decode ends at the terminator, as generation does
            for row, prompt_ids in zip(rows, prompts, strict=True):
                tokens, _, _ = backend.generate(prompt_ids, limit, stop=stops)
                text = normalise(data.template.cut(tok.decode(tokens, skip_special_tokens=True), tok))
                predictions.append(normalised.get(text, len(labels)))  # len(labels): no label
                if params.perplexity:
                    nll, count = answer_nll(backend, data, row)
                    nll_total += nll
                    nll_count += count
        scores = classification_scores(predictions, references, len(labels))
        correct = sum(p == r for p, r in zip(predictions, references, strict=False))
        low, high = wilson_interval(correct, len(rows))
        # Per-row outcomes on these exact rows: two models scored on the same rows are compared by a
        # paired bootstrap of their difference (autotune.selection.uncertainty), from the storage alone.
        detail = {"mode": params.mode, "labels": labels, "rows_sha256": rows_fingerprint(prompts),
                  "correct": "".join("1" if p == r else "0" for p, r in zip(predictions, references, strict=True))}
        metrics = {
            "accuracy": self.metric("accuracy", scores["accuracy"], n=len(rows), ci_low=low, ci_high=high, details=detail),
            "macro_f1": self.metric("macro_f1", scores["macro_f1"], n=len(rows), details=detail),
        }
        if params.perplexity and nll_count:
            metrics["perplexity"] = self.metric("perplexity", math.exp(nll_total / nll_count), n=nll_count)
        return metrics


def answer_nll(backend: Backend, data: Dataset, row: dict[str, Any]) -> tuple[float, int]:
    """The NLL of a row's answer given its prompt, teacher-forced (answer, terminator and EOS; the prompt's
    tokens not counted), and how many tokens it is over."""
    ids, prompt_len = encode_row(backend.tokenizer, data.template, row, max_len=data.source_max_len)
    return backend.sequence_nll(ids, prompt_len)


def rows_fingerprint(prompts: list[list[int]]) -> str:
    """Which rows (in which order) a score is over: the hash of their prompt token ids."""
    import hashlib

    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


__getattr__ = deprecated_names(__name__, {"AccuracyEvaluator": "AccuracyMetricType"}, globals())  # the 0.1 name, for one release
