"""The model card: a deployment document for ``best/`` (``model_card.json`` and ``README.md``).

How to call the model (prompt template, labels, the decision rule the accuracy assumes, a runnable
onnxruntime-genai snippet), what it scored on validation and test rows with the gap, against which
baseline, and Hugging Face's card conventions (YAML front matter with ``base_model``, ``tags`` and a
``model-index``) so the folder can be published as it is.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from autotune.card_markdown import card_markdown  # the card's README.md (re-exported)
from autotune.errors import UserError
from autotune.records import MetricValue, StudyView, TrialRecord, metric_kind
from autotune.report.values import shown_metric

__all__ = ["GENERATE_SNIPPET", "SNIPPET", "card_markdown", "config_hash", "model_card"]

# Reproduces the accuracy evaluator's label scoring: the prediction is the label whose tokens (+ EOS)
# have the highest log-probability after the prompt.
SNIPPET = '''\
import numpy as np
import onnxruntime_genai as og
from transformers import AutoTokenizer

folder = "{folder}"  # this folder
template = {prompt_template!r}
terminator = {terminator!r}  # the template's text after the answer: scored with each label, as trained
labels = {labels!r}
text = {example!r}

tokenizer = AutoTokenizer.from_pretrained(folder)
model = og.Model(folder)
prompt = tokenizer(template.format({column}=text))["input_ids"]


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


scores = []
for label in labels:
    answer = tokenizer(label + terminator, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + len(answer) + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt + answer[:-1])
    logp = log_softmax(generator.get_output("logits")[0])
    scores.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer)))
print(labels[int(np.argmax(scores))])
'''

# Reproduces the generation evaluator: greedy decoding on the prompt as trained, ended by EOS or the terminator.
GENERATE_SNIPPET = '''\
import onnxruntime_genai as og
from transformers import AutoTokenizer

folder = "{folder}"  # this folder
text = {example!r}
stop = {stop!r}  # the answer's terminator: the answer ends where it is written

tokenizer = AutoTokenizer.from_pretrained(folder)
model = og.Model(folder)
{render}
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(prompt) + {max_new_tokens}, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens(prompt)
tokens = []
while not generator.is_done():
    generator.generate_next_token()
    token = int(generator.get_next_tokens()[0])
    if token == tokenizer.eos_token_id:
        break
    tokens.append(token)
    if stop and stop in tokenizer.decode(tokens[-16:]):
        break
answer = tokenizer.decode(tokens)
print((answer[: answer.index(stop)] if stop and stop in answer else answer).strip())
'''

TEXT_RENDER = '''template = {prompt_template!r}
prompt = tokenizer(template.format({column}=text))["input_ids"]'''

# The chat up to the assistant's content, as training rendered it (a placeholder answer split off).
CHAT_RENDER = '''messages = {system}[{{"role": "user", "content": text}}, {{"role": "assistant", "content": "\\x00"}}]
rendered = tokenizer.apply_chat_template(messages, tokenize=False)
prompt = tokenizer(rendered[: rendered.index("\\x00")], add_special_tokens=False)["input_ids"]
# the turn's end as the template writes it (EOS aside): generation stops there, as the evaluation did
stop = rendered[rendered.index("\\x00") + 1:].replace(tokenizer.eos_token or "\\x00", "").strip() or None'''


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _dump(metrics: dict[str, MetricValue]) -> dict[str, Any]:
    # A generation metric's texts are in predictions.jsonl (and the card's best/worst rows), not in every metric.
    return {k: m.model_dump(mode="json", exclude={"details": {"predictions"}}) for k, m in metrics.items()}


def _predictions(view: StudyView, record: TrialRecord) -> dict[str, Any] | None:
    """The selected model's best and worst validation rows by its first objective scored per row."""
    from autotune.report.predictions import shown_predictions

    shown = shown_predictions(record.metrics, [o.metric for o in view.objectives])
    return {"split": "validation", **shown} if shown is not None else None


def _usage(view: StudyView) -> dict[str, Any] | None:
    """The prompt template, labels and decoding of the data the model was tuned and scored on."""
    if not view.meta.data:
        return None
    name, data = next(iter(view.meta.data.items()))
    columns = [f for _, f, _, _ in string.Formatter().parse(data.prompt_template) if f]
    usage: dict[str, Any] = {"data_config": name, "template": data.template, "prompt_template": data.prompt_template,
                             "input_columns": columns, "labels": data.labels}
    if data.chat:
        # The user turn's column: the first of the stored data config's text_cols.
        stored = next((d for d in view.meta.config.get("data_configs") or [] if d.get("name") == name), {})
        usage.update(chat_template=True, system_prompt=data.system_prompt, input_columns=(stored.get("text_cols") or ["input"])[:1])
    # The terminator as trained (a study stored before it was kept: read from its template).
    terminator = data.terminator or ("" if data.chat or not data.template else _terminator(data.template))
    if data.labels and len(columns) == 1 and not data.chat:
        usage["decoding"] = ("label scoring: the answer is the label whose tokens, followed by the template's terminator and "
                             "EOS, have the highest log-probability after the prompt (how the accuracy was measured)")
        usage["example"] = data.example or "I can't believe we actually won!"
        usage["snippet"] = SNIPPET.format(folder=".", prompt_template=data.prompt_template, labels=data.labels,
                                          example=usage["example"], column=columns[0], terminator=terminator)
    elif data.chat or len(columns) == 1:
        stop = (terminator.strip() or terminator) or None
        measured = ("the accuracy scored labels by log-likelihood instead; this generates the answer" if data.labels
                    else "how the generation metrics were measured")
        usage["decoding"] = ("greedy generation of the prompt as trained, ended by EOS" + (f" or the terminator {stop!r}" if stop else
                             " or the chat turn's end" if data.chat else "") + f" ({measured})")
        usage["example"] = data.example or "What is the capital of France?"
        system = f'[{{"role": "system", "content": {data.system_prompt!r}}}] + ' if data.system_prompt else ""
        render = (CHAT_RENDER.format(system=system) if data.chat
                  else TEXT_RENDER.format(prompt_template=data.prompt_template, column=columns[0]))
        usage["snippet"] = GENERATE_SNIPPET.format(folder=".", example=usage["example"], stop=None if data.chat else stop,
                                                   render=render, max_new_tokens=_max_new_tokens(view))
    return usage


def _terminator(template_text: str) -> str:
    from autotune.template import Template

    try:
        return Template.parse(template_text, where="card").terminator
    except UserError:
        return ""


def _max_new_tokens(view: StudyView) -> int:
    """The generation metric's token limit where the config sets one, else a generous default."""
    for evaluator in (view.meta.config.get("evaluators") or {}).values():
        for metric in evaluator.get("metrics") or []:
            if metric.get("type") == "generation" and (metric.get("user_config") or {}).get("max_new_tokens"):
                return int(metric["user_config"]["max_new_tokens"])
    return 128


def _base_spec(view: StudyView, base: str | None) -> dict[str, Any]:
    """The stored config's input model: the candidate ``base`` of a study that searched the base model."""
    if base is not None:
        for candidate in view.meta.config.get("input_models") or []:
            if candidate.get("name") == base:
                return {k: v for k, v in candidate.items() if k != "name"}
    return view.meta.config.get("input_model") or {}


def _split_metrics(view: StudyView, record: TrialRecord) -> list[str]:
    """The metric ids whose value depends on the data split (those the test split scores too): by the stored
    evaluator config, as the evaluator runner decides; without one, every metric that is no latency, size or memory."""
    from autotune.evaluation import get_metric_type

    config = view.meta.config or {}
    evaluator = (config.get("evaluators") or {}).get((config.get("engine") or {}).get("evaluator") or "")
    if not evaluator:
        return [k for k in record.metrics if metric_kind(k) not in ("latency", "size", "memory")]
    reads: list[str] = []
    for metric in evaluator.get("metrics") or []:
        keys = [f"{metric['name']}-{sub['name']}" for sub in metric.get("sub_types") or []]
        try:
            needs_data = get_metric_type(metric["type"], where="").needs_data
        except UserError:  # a metric type registered by code this process has not imported: judge by its ids
            needs_data = any(metric_kind(k) not in ("latency", "size", "memory") for k in keys)
        if metric.get("data_config") is not None or needs_data:
            reads += keys
    return [k for k in record.metrics if k in reads]


def _training_precision(view: StudyView) -> list[dict[str, Any]]:
    """The study's CPU training-precision decisions (one per machine class and model shape), as measured."""
    from autotune.records import StudyPrecision

    if view.study is None:
        return []
    return [{"machine_and_shape": key, **decision} for key, decision in sorted(StudyPrecision(view.study).all().items())]


def model_card(view: StudyView, selection: Any, reproduce: dict[str, Any]) -> dict[str, Any]:
    from autotune.evaluation.base import environment
    from autotune.models.source import known_model_id

    record: TrialRecord = selection.record
    diff = selection.vs_baseline
    return {
        "study": view.name,
        "trial": record.number,
        "model_key": record.model_key,
        # An id or None, never a local path: the selected trial's base model when the study searched the base.
        "base_model": known_model_id(_base_spec(view, record.base)),
        **({"base": record.base} if record.base is not None else {}),
        "feasible": selection.feasible,
        "selection": {"policy": selection.policy, "rule": selection.rule, "missed_by": selection.missed_by,
                      "indistinguishable": selection.indistinguishable},
        "parameters": record.params,
        "searched": record.point,
        # One value per metric, as every table and figure shows it: a latency re-measured after the study replaces the
        # first (which stays in its details.first_value), with the interval of the value shown.
        "metrics": _dump({k: m for k in record.metrics if (m := shown_metric(record, k)) is not None}),
        "test_metrics": _dump(record.test_metrics),
        "remeasured": _dump(record.remeasured),
        "split_metrics": _split_metrics(view, record),  # measured on validation rows (the rest on no split)
        "baseline": _dump(view.baseline_for(record)),  # its own base model's
        "baseline_kind": view.meta.baseline_kind,
        # The PyTorch reference row is the first (default) base model's: shown for its trials only.
        "baseline_reference": _dump(view.meta.baseline_reference)
        if record.base is None or not view.meta.bases or view.meta.bases[0].name == record.base else {},
        "vs_baseline": None if diff is None else {"difference": diff.difference, "ci_low": diff.low, "ci_high": diff.high, "n": diff.n},
        "objectives": [o.model_dump(mode="json") for o in view.objectives],
        "constraints": [b.model_dump(mode="json") for b in view.meta.base_bounds.get(record.base or "", view.bounds)],
        "provider": view.provider,
        "device": view.meta.device,
        "environment": environment(),
        "data": {name: d.model_dump(mode="json") for name, d in view.meta.data.items()}
        or {d["name"]: d.get("data_files") for d in view.meta.config.get("data_configs", [])},
        "usage": _usage(view),
        "predictions": _predictions(view, record),
        "training_precision": _training_precision(view),
        "config_sha256": config_hash(view.meta.config),
        "reproduce_config": reproduce,
    }

