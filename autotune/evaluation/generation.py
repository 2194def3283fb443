"""Quality of generated text on the held-out split: greedy decoding on the target provider, scored per row
against the reference answer with ROUGE-L (``rouge-score``), chrF and BLEU (``sacrebleu``), normalised exact
match, and the answer-only perplexity (teacher-forced over the answer, its terminator and EOS).

Each row's score is stored (``details.scores``, with ``details.rows_sha256``), so two models scored on the same
rows are compared by the paired bootstrap of :mod:`autotune.selection.uncertainty` as accuracy is. BLEU is the
mean of sentence BLEU (``effective_order``), not corpus BLEU: a per-row mean is what a paired comparison can
resample. Multi-fidelity pruning needs an exact bound on a slice: exact match has one (its 0/1 outcomes are
stored as ``details.correct``), the continuous scores do not, so a study never prunes on them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from autotune.data import encode_row, stop_rule
from autotune.errors import ConfigError
from autotune.evaluation.accuracy import answer_nll, normalise, rows_fingerprint
from autotune.evaluation.backends import open_backend
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
from autotune.evaluation.metrics import bootstrap_interval, wilson_interval

__all__ = ["GenerationMetricType", "GenerationParams", "bootstrap_mean_interval", "row_scores"]

TEXT_SCORES = ("rouge_l", "chrf", "bleu", "exact_match")
RESAMPLES = 2000


class GenerationParams(MetricTypeParams):
    # Token limit of each answer; default: the longest reference answer (with its terminator) plus two.
    max_new_tokens: int | None = Field(None, gt=0)
    max_examples: int | None = Field(None, gt=0)
    # ROUGE-L with Porter stemming (rouge-score's option; off: words compared as written).
    use_stemmer: bool = False


def row_scores(kind: str, predictions: list[str], references: list[str], *, use_stemmer: bool = False) -> list[float]:
    """Per-row ``kind`` scores of predictions against references (ROUGE-L F1 and exact match in [0, 1],
    chrF and sentence BLEU in [0, 100], as their libraries report them)."""
    if kind == "rouge_l":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        return [float(scorer.score(ref, pred)["rougeL"].fmeasure) for pred, ref in zip(predictions, references, strict=True)]
    if kind == "chrf":
        import sacrebleu

        return [float(sacrebleu.sentence_chrf(pred, [ref]).score) for pred, ref in zip(predictions, references, strict=True)]
    if kind == "bleu":
        import sacrebleu

        return [float(sacrebleu.sentence_bleu(pred, [ref]).score) for pred, ref in zip(predictions, references, strict=True)]
    if kind == "exact_match":
        return [float(normalise(pred) == normalise(ref)) for pred, ref in zip(predictions, references, strict=True)]
    raise ValueError(f"unknown text score {kind!r}")


def bootstrap_mean_interval(values: list[float], *, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (rows resampled, seeded)."""
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    low, high = bootstrap_interval([data], lambda d: d.mean(axis=1), resamples=resamples, seed=seed)
    mean = float(data.mean())
    return min(low, mean), max(high, mean)


@register_metric_type()
class GenerationMetricType(MetricType):
    type_name = "generation"
    version = 2  # 2: each row's input, reference and prediction stored (details.predictions)
    Params = GenerationParams
    SUB_TYPES: ClassVar[dict[str, SubType]] = {
        "rouge_l": SubType("ratio", True, "ROUGE-L F1", "accuracy"),
        "chrf": SubType("score", True, "chrF", "accuracy"),
        "bleu": SubType("score", True, "BLEU (sentence mean)", "accuracy"),
        "exact_match": SubType("ratio", True, "exact match", "accuracy"),
        "perplexity": SubType("ppl", False, "perplexity (answer)", "accuracy"),
    }
    ALIASES: ClassVar[dict[str, str]] = {"rougeL": "rouge_l", "rouge": "rouge_l", "sacrebleu": "bleu", "em": "exact_match"}
    needs_data = True

    @classmethod
    def check_template(cls, template: Any, *, where: str) -> None:
        if not template.chat and len(template.columns) < 2:
            raise ConfigError(where, "the generation metric needs a data config with a prompt column and an answer column "
                                     f"(its template has only {{{template.answer_column}}}: nothing to generate from)")

    def evaluate(self, model: EvalModel, params: GenerationParams, ctx: EvalContext) -> dict[str, Metric]:
        data = ctx.data
        if data is None:
            raise ConfigError("evaluators", "the generation metric needs a data config with an answer column")
        wanted = set(ctx.sub_types) or set(self.SUB_TYPES)
        backend = open_backend(model, provider=ctx.provider, trust_remote_code=ctx.trust_remote_code)
        tok = backend.tokenizer
        rows = data.eval[: params.max_examples] if params.max_examples else data.eval
        template = data.template
        prompts = [encode_row(tok, template, row, max_len=data.source_max_len, with_answer=False)[0] for row in rows]
        references = [template.answer(row) for row in rows]
        limit = params.max_new_tokens or max(len(template.answer_ids(tok, answer)) for answer in references) + 2
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        stops = stop_rule(tok, template)

        def decoded(tokens: list[int]) -> str:
            return tok.decode([t for t in tokens if t not in eos], skip_special_tokens=False)

        predictions: list[str] = []
        if wanted & set(TEXT_SCORES):
            for prompt_ids in prompts:
                tokens, _, _ = backend.generate(prompt_ids, limit, stop=stops)
                predictions.append(template.cut(decoded(tokens), tok))
        base = {"rows_sha256": rows_fingerprint(prompts)}
        metrics: dict[str, Metric] = {}
        # Each row's input, reference and generation, once (on the first text score): the card, the report
        # and best/predictions.jsonl read them with every score's per-row values (autotune.report.predictions).
        inputs = [{c: row[c] for c in template.columns if c != template.answer_column} for row in rows]
        texts = ([{"input": i, "reference": r, "prediction": p} for i, r, p in zip(inputs, references, predictions, strict=True)]
                 if predictions else [])
        for kind in TEXT_SCORES:
            if kind not in wanted:
                continue
            scores = row_scores(kind, predictions, references, use_stemmer=params.use_stemmer)
            mean = sum(scores) / len(scores)
            details: dict[str, Any] = {**base, "scores": [round(s, 6) for s in scores]}
            if texts:
                details["predictions"], texts = texts, []
            if kind == "exact_match":  # 0/1 outcomes: an exact interval, and a pruning ground
                hits = int(sum(scores))
                low, high = wilson_interval(hits, len(scores))
                details["correct"] = "".join("1" if s else "0" for s in scores)
            else:
                low, high = bootstrap_mean_interval(scores)
            metrics[kind] = self.metric(kind, mean, ctx, n=len(rows), ci_low=low, ci_high=high, details=details)
        if "perplexity" in wanted:
            nll_total, count_total, per_row = 0.0, 0, []
            for row in rows:
                nll, count = answer_nll(backend, data, row)
                nll_total += nll
                count_total += count
                per_row.append((nll, count))
            if count_total:
                low, high = _perplexity_interval(per_row)
                metrics["perplexity"] = self.metric("perplexity", math.exp(nll_total / count_total), ctx, n=count_total,
                                                    ci_low=low, ci_high=high, details=base)
        return metrics


def _perplexity_interval(per_row: list[tuple[float, int]], *, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of exp(sum nll / sum tokens), rows resampled."""
    import numpy as np

    nll = np.array([n for n, _ in per_row], dtype=np.float64)
    counts = np.array([c for _, c in per_row], dtype=np.float64)
    low, high = bootstrap_interval([nll, counts], lambda x, c: x.sum(axis=1) / np.maximum(c.sum(axis=1), 1),
                                   resamples=resamples, seed=seed)
    value = math.exp(nll.sum() / max(counts.sum(), 1))
    return min(math.exp(low), value), max(math.exp(high), value)


__getattr__ = deprecated_names(__name__, {"GenerationEvaluator": "GenerationMetricType"}, globals())  # the 0.1 name, for one release
