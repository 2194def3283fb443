"""The model card's README.md: Hugging Face's YAML front matter (``base_model``, ``tags``, ``model-index``), then how to
call the model, its scores on validation and test rows with their intervals, the baseline and the choice, rendered
from the card dict that :func:`autotune.card.model_card` builds (``model_card.json``)."""

from __future__ import annotations

from typing import Any

from autotune.records import metric_kind
from autotune.report.values import check_interval

__all__ = ["card_markdown"]


def _interval(m: dict[str, Any] | None, *, where: str) -> str:
    """The metric's own 95% interval as the card prints it; a value outside it is refused (IntervalError)."""
    if not m or m.get("ci_low") is None or m.get("ci_high") is None:
        return ""
    check_interval(where, m["value"], m["ci_low"], m["ci_high"])
    return f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _on_split(card: dict[str, Any], key: str) -> bool:
    if "split_metrics" in card:
        return key in card["split_metrics"]
    return metric_kind(key) not in ("latency", "size", "memory")  # a card written before the field


def _front_matter(card: dict[str, Any]) -> str:
    import yaml

    results = []
    for key, m in card["metrics"].items():
        # Only a metric scored on rows names its split; latency, size and memory are measured on no split.
        split = " (validation)" if _on_split(card, key) else ""
        entries = [{"type": m.get("name") or key, "value": round(m["value"], 6), "name": f"{m.get('label') or key}{split}"}]
        test = card["test_metrics"].get(key)
        if test:
            entries.append({"type": test.get("name") or key, "value": round(test["value"], 6),
                            "name": f"{test.get('label') or key} (test)"})
        results += entries
    precision = next((p.get("precision") for p in card["parameters"].values() if "precision" in p), None)
    tags = ["autotune", "onnx", "onnxruntime-genai", "lora"] + ([str(precision)] if precision else [])
    data_names = list(card["data"]) or ["data"]
    meta = {
        "base_model": card["base_model"] or None,
        "library_name": "onnxruntime-genai",
        "pipeline_tag": "text-generation",
        "tags": tags,
        "model-index": [{"name": f"{card['study']}-trial-{card['trial']}", "results": [{
            "task": {"type": "text-classification" if (card.get("usage") or {}).get("labels") else "text-generation"},
            "dataset": {"name": data_names[0], "type": "json"},
            "metrics": results,
        }]}],
    }
    return "---\n" + yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False) + "---\n"


def _harness_tasks_markdown(metrics: dict[str, Any]) -> list[str]:
    """The lm-evaluation-harness tasks behind lm_eval metrics: name, version, few-shot count, limit, samples."""
    rows: dict[str, str] = {}
    for m in metrics.values():
        info = (m.get("details") or {}).get("lm_eval")
        if not info or info["task"] in rows:
            continue
        limit = info.get("limit") if info.get("limit") is not None else "all"
        rows[info["task"]] = (f"| {info['task']} | {info.get('version')} | {info.get('output_type') or ''} | {info.get('num_fewshot')} | "
                              f"{limit} | {m.get('n') or ''} |")
    if not rows:
        return []
    return ["", "lm-evaluation-harness tasks (scored on this model by autotune's lm-eval adapter, per sample):", "",
            "| task | version | output type | few-shot | limit | samples |", "|---|---|---|---|---|---|", *rows.values()]


def card_markdown(card: dict[str, Any]) -> str:
    lines = [_front_matter(card), f"# {card['study']}, trial {card['trial']}", ""]
    if not card["feasible"]:
        lines += ["> **No trial met the constraints.** This is the least-infeasible trial: " + card["selection"]["rule"], ""]
    source = f"Fine-tuned from `{card['base_model']}`" if card.get("base_model") else "Fine-tuned from a local model"
    if card.get("base"):  # the study chose among base models
        source += f" (base model `{card['base']}`, chosen by the search among the config's candidates)"
    lines += [f"{source} by autotune; selected by `{card['selection']['policy']}`: {card['selection']['rule']}.", ""]
    if card["selection"]["indistinguishable"]:
        lines += [f"Statistically indistinguishable in {_quality_label(card)} (paired bootstrap, validation rows): trial(s) "
                  f"{', '.join(map(str, card['selection']['indistinguishable']))}.", ""]
    usage = card.get("usage")
    if usage and usage.get("chat_template"):
        system = f", after the system prompt `{usage['system_prompt']}`" if usage.get("system_prompt") else ""
        lines += ["## How to use", "", f"Prompt: the tokenizer's chat template, one user turn (`{usage['input_columns'][0]}`)"
                  f"{system}; the answer is the assistant's turn.", ""]
    elif usage:
        lines += ["## How to use", "", "Prompt template (the answer follows it):", "", "```text", usage["prompt_template"], "```", ""]
    if usage:
        if usage.get("labels"):
            lines += [f"Labels: {', '.join(f'`{label}`' for label in usage['labels'])}.", ""]
        if usage.get("decoding"):
            lines += [f"Decoding: {usage['decoding']}. This snippet does the same for one input:", "",
                      "```python", usage["snippet"].rstrip(), "```", ""]
    lines += _predictions_markdown(card.get("predictions"))
    lines += ["## Metrics", "", f"Baseline: the input model {_baseline_words(card['baseline_kind'])}.", "",
              "| metric | validation (95% CI) | test (95% CI) | gap | baseline | change |", "|---|---|---|---|---|---|"]
    for key, m in card["metrics"].items():
        # card["metrics"] holds the value shown (re-measured where it was) with its own interval.
        test, base = card["test_metrics"].get(key), card["baseline"].get(key)
        value, again = m["value"], card["remeasured"].get(key)
        unit = f" {m.get('unit')}" if m.get("unit") and m.get("unit") != "ratio" else ""
        gap = f"{test['value'] - value:+.3f}" if test else ""
        change = f"{value - base['value']:+.4g}" if base else ""
        note = f" (re-measured, spread {again['details'].get('spread', 0):.3g})" if again else ""
        test_text = f"{test['value']:.4g}{_interval(test, where=f'test_metrics.{key}')}" if test else "not measured"
        base_text = f"{base['value']:.4g}" if base else ""
        lines.append(f"| {m.get('label') or key} | {value:.4g}{unit}{_interval(m, where=f'metrics.{key}')}{note} | {test_text} | "
                     f"{gap} | {base_text} | {change} |")
    if card.get("vs_baseline"):
        d = card["vs_baseline"]
        label = _quality_label(card)
        lines += ["", f"{label[0].upper() + label[1:]} minus the baseline's on the same {d['n']} validation rows: {d['difference']:+.3f} "
                      f"(paired bootstrap 95% interval [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])."]
    lines += _harness_tasks_markdown(card["metrics"])
    if card["baseline_reference"]:
        ref = ", ".join(f"{m.get('label') or k} {m['value']:.4g}" for k, m in card["baseline_reference"].items())
        lines += ["", f"Reference only (another runtime): the input model in PyTorch eager: {ref}."]
    lines += ["", "## Data", ""]
    for name, data in card["data"].items():
        if isinstance(data, dict) and "train" in data:
            lines.append(f"- `{name}`: {data['train']} training, {data['validation']} validation, {data['test']} test rows "
                         f"({', '.join(data.get('files', []))})")
    lines += ["", "## Intended use and limitations", "",
              "- Intended for the task and prompt format above, on inputs like the data it was tuned on; accuracy on "
              "other phrasing or domains can be lower (compare the validation/test gap).",
              "- Scores come from held-out rows of the same data set; the test rows were used once, after selection.",
              "- Latency and memory were measured on the machine below; they differ on other hardware.", "",
              "## Parameters", ""]
    for name, params in card["parameters"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k}={v}" for k, v in params.items() if k != "training_args"))
    for decision in card.get("training_precision") or []:  # the study's one decision per machine class (auto precision)
        lines.append(f"- **training precision** (auto, decided once for the study on this machine class): {decision['precision']}: "
                     f"{decision['reason']}")
    env = {**card.get("device", {}), **card["environment"]}
    lines += ["", "## Environment", "", f"- provider: {card['provider']}", f"- model key: `{card['model_key']}`",
              f"- config sha256: `{card['config_sha256']}`"] + [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", "## Reproduce", "", "Save the `reproduce_config` of `model_card.json` as a YAML/JSON file and run",
              "`autotune run --config FILE`: it rebuilds this model (same model key) with `search_strategy: false`.", ""]
    return "\n".join(lines)


def _quality_label(card: dict[str, Any]) -> str:
    """What the selection compared trials on: the first accuracy-kind objective's label (accuracy, ROUGE-L F1, ...)."""
    quality = next((o for o in card.get("objectives", []) if o.get("kind") == "accuracy"), None)
    return (quality.get("label") or quality["metric"]) if quality else "accuracy"


def _cell(text: Any) -> str:
    """A table cell: one line, pipes escaped, long texts shortened."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= 160 else flat[:157] + "..."


def _predictions_markdown(predictions: dict[str, Any] | None) -> list[str]:
    if not predictions:
        return []
    key = predictions["metric"]
    lines = ["## Predictions", "", f"Best and worst of the {predictions['rows']} {predictions['split']} rows by "
             f"{predictions['label']} (every test-split prediction: `predictions.jsonl`).", "",
             "| | input | reference | prediction | score |", "|---|---|---|---|---|"]
    for tag in ("best", "worst"):
        for row in predictions[tag]:
            shown = " / ".join(str(v) for v in row["input"].values())
            lines.append(f"| {tag} | {_cell(shown)} | {_cell(row['reference'])} | {_cell(row['prediction'])} | "
                         f"{row['scores'][key]:.3g} |")
    return [*lines, ""]


def _baseline_words(kind: str) -> str:
    return {"onnx-fp32": "built as fp32 ONNX and measured like the trials (same runtime and provider)",
            "pytorch": "in PyTorch eager"}.get(kind, "(not evaluated)")
