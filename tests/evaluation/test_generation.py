"""The generation metric: library-equal per-row scores, intervals that hold their value, paired bootstrap on
continuous per-row scores, decoding that stops at the template's terminator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.evaluation.generation import GenerationMetricType, GenerationParams, bootstrap_mean_interval, row_scores

PREDICTIONS = ["The capital of France is Paris.", "two apples", "It is blue", ""]
REFERENCES = ["Paris is the capital of France.", "Two apples.", "The sky is blue.", "nothing"]


def test_rouge_l_chrf_and_bleu_equal_their_libraries_values() -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    assert row_scores("rouge_l", PREDICTIONS, REFERENCES) == [scorer.score(r, p)["rougeL"].fmeasure
                                                            for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    assert row_scores("chrf", PREDICTIONS, REFERENCES) == [sacrebleu.sentence_chrf(p, [r]).score
                                                         for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    assert row_scores("bleu", PREDICTIONS, REFERENCES) == [sacrebleu.sentence_bleu(p, [r]).score
                                                         for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    assert row_scores("exact_match", PREDICTIONS, REFERENCES) == [0.0, 1.0, 0.0, 0.0]  # "Two apples." normalised


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_rows() -> None:
    values = [0.1, 0.9, 0.5, 0.4, 0.7, 0.2]
    low, high = bootstrap_mean_interval(values)
    assert low <= sum(values) / len(values) <= high
    wide = high - low
    low, high = bootstrap_mean_interval(values * 20)
    assert high - low < wide / 2


def test_paired_bootstrap_on_continuous_scores() -> None:
    from autotune.records import MetricValue
    from autotune.selection.uncertainty import paired_difference

    def metric(scores: list[float]) -> MetricValue:
        return MetricValue.model_validate({"name": "rouge_l", "value": sum(scores) / len(scores), "unit": "ratio",
                                           "higher_is_better": True, "details": {"rows_sha256": "r", "scores": scores}})

    better = [0.6 + 0.01 * (i % 7) for i in range(60)]
    worse = [s - 0.1 for s in better]
    diff = paired_difference(metric(better), metric(worse))
    assert diff is not None and diff.distinguishable and diff.difference == pytest.approx(0.1)
    assert not paired_difference(metric(better), metric(list(better))).distinguishable


def test_an_onnx_model_is_scored_per_row_and_stops_at_the_terminator(tiny_onnx: Path, tmp_path: Path) -> None:
    from autotune.config.schema import DataConfig
    from autotune.data import load_data
    from autotune.evaluation.base import EvalContext, EvalModel

    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"what is {i} plus one", "a": f"it is {i + 1}"}) for i in range(30)))
    data = load_data(DataConfig(name="qa", data_name="json", data_files=[path], text_template="Q: {q}\nA: {a}\n###",
                                eval_dataset_size=8))
    evaluator = GenerationMetricType()
    ctx = EvalContext(provider="CPUExecutionProvider", data=data)
    metrics = evaluator.evaluate(EvalModel(path=tiny_onnx, kind="onnx", key="k"), GenerationParams(max_new_tokens=12), ctx)
    assert set(metrics) == {"rouge_l", "chrf", "bleu", "exact_match", "perplexity"}
    for metric in metrics.values():
        assert metric.ci_low is not None and metric.ci_low <= metric.value <= metric.ci_high
    assert len(metrics["rouge_l"].details["scores"]) == 8
    assert len(metrics["exact_match"].details["correct"]) == 8
    assert metrics["perplexity"].value > 1


@pytest.mark.parametrize("kind", ["onnx", "hf"])
def test_a_stop_rule_ends_the_decode_on_both_backends(kind: str, tiny_onnx: Path, tiny_model: Path) -> None:
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalModel

    backend = open_backend(EvalModel(path=tiny_onnx if kind == "onnx" else tiny_model, kind=kind, key="k"),
                           provider="CPUExecutionProvider")
    prompt = list(backend.tokenizer("### Text: the storm\n### The tone is:\n")["input_ids"])
    free, _, _ = backend.generate(prompt, 10, ignore_eos=True)
    stopped, _, _ = backend.generate(prompt, 10, ignore_eos=True, stop=lambda tokens: len(tokens) >= 3)
    assert len(free) == 10 and stopped == free[:3]


def test_perplexity_alone_generates_nothing_and_stores_no_texts(tiny_onnx: Path, tmp_path: Path) -> None:
    from autotune.config.schema import DataConfig
    from autotune.data import load_data
    from autotune.evaluation.base import EvalContext, EvalModel

    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"what is {i} plus one", "a": f"it is {i + 1}"}) for i in range(20)))
    data = load_data(DataConfig(name="qa", data_name="json", data_files=[path], text_template="Q: {q}\nA: {a}", eval_dataset_size=4))
    evaluator = GenerationMetricType()
    ctx = EvalContext(provider="CPUExecutionProvider", data=data, sub_types={"perplexity": evaluator.describe("perplexity")})
    metrics = evaluator.evaluate(EvalModel(path=tiny_onnx, kind="onnx", key="k"), GenerationParams(), ctx)
    assert set(metrics) == {"perplexity"} and "predictions" not in metrics["perplexity"].details
