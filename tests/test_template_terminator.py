"""Templates as Olive users write them: text after the answer placeholder is the answer's terminator,
trained with the answer, a stop rule for generation, stripped before scoring. And the accuracy metric's
perplexity is over the answer (its terminator and EOS), not the prompt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autotune.data import Template, encode_example, load_data
from autotune.errors import DataError

SEED_QA = "<|user|>\n{Question}<|end|>\n<|assistant|>\n{Best Answer}\n<|end|>"


def test_the_seeds_qa_template_has_a_terminator_after_its_answer() -> None:
    template = Template.parse(SEED_QA, where="t")
    assert template.answer_column == "Best Answer"
    assert template.prompt({"Question": "Why?"}) == "<|user|>\nWhy?<|end|>\n<|assistant|>\n"
    assert template.terminator == "\n<|end|>"
    assert template.target({"Question": "Why?", "Best Answer": "Because."}) == "Because.\n<|end|>"
    assert template.stop_text() == "<|end|>"
    assert template.cut(" Because. <|end|> and more") == "Because."


def test_a_template_that_ends_with_its_answer_has_no_terminator() -> None:
    for text in ("### Text: {phrase}\n### The tone is:\n{tone}", "### Text: {phrase}\n{tone}\n"):
        template = Template.parse(text, where="t")
        assert template.terminator == "" and template.stop_text() is None
        assert template.target({"phrase": "x", "tone": "joy"}) == "joy"


@pytest.mark.parametrize(("text", "message"), [
    ("{tone} {phrase} {tone}", "more than once"),
    ("{phrase} {tone!r}", "format spec"),
    ("just text", "placeholders"),
])
def test_a_bad_template_is_one_line_naming_its_key(text: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        Template.parse(text, where="data_configs[0].text_template")
    assert message in str(info.value) and "data_configs[0].text_template" in str(info.value)
    assert "\n" not in str(info.value)


def test_training_ids_hold_the_terminator_then_eos(tiny_model: Path) -> None:
    from autotune.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model)
    template = Template.parse("Q: {q}\nA: {a}\n<|end|>", where="t")
    row = {"q": "the storm", "a": "fear"}
    ids, prompt_len = encode_example(tok, template.prompt(row), template.target(row), max_len=256)
    answer_ids = list(tok("fear\n<|end|>", add_special_tokens=False)["input_ids"])
    assert ids[prompt_len:] == [*answer_ids, tok.eos_token_id]


def test_the_accuracy_perplexity_is_over_the_answer_only(tiny_model: Path, tone_file: Path) -> None:
    """Equal to a direct transformers computation over the answer tokens (and EOS) of the same rows."""
    import torch
    from transformers import AutoModelForCausalLM

    from autotune.config.schema import DataConfig
    from autotune.evaluation.accuracy import AccuracyMetricType, AccuracyParams
    from autotune.evaluation.base import EvalContext, EvalModel
    from autotune.models.loading import load_tokenizer
    from tests.conftest import TEMPLATE

    data = load_data(DataConfig(name="tones", data_name="json", data_files=[tone_file], text_template=TEMPLATE,
                                eval_dataset_size=12, source_max_len=64))
    ctx = EvalContext(provider="CPUExecutionProvider", data=data)
    metrics = AccuracyMetricType().evaluate(EvalModel(path=tiny_model, kind="hf", key="k"), AccuracyParams(), ctx)

    tok = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    nll, count = 0.0, 0
    for row in data.eval:
        ids, prompt_len = encode_example(tok, data.template.prompt(row), data.template.target(row), max_len=64)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        nll -= sum(float(logp[j - 1, ids[j]]) for j in range(prompt_len, len(ids)))
        count += len(ids) - prompt_len
    assert metrics["perplexity"].n == count
    assert metrics["perplexity"].value == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_rows_with_a_terminator_load_and_train_targets_end_with_it(tmp_path: Path) -> None:
    from autotune.config.schema import DataConfig

    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"Question": f"q{i}?", "Best Answer": f"a{i}."}) for i in range(10)))
    data = load_data(DataConfig(name="qa", data_name="json", data_files=[path], text_template=SEED_QA, eval_dataset_size=2))
    assert data.labels is None  # free-text answers: not a classification set
    assert all(data.template.target(r).endswith("\n<|end|>") for r in data.train)


def test_validate_reads_the_data_of_a_hub_id_model_and_refuses_a_bad_template(tmp_path: Path, tone_file: Path) -> None:
    import subprocess
    import sys

    config = {
        "input_model": {"type": "HfModel", "model_path": "some-org/some-model"},
        "data_configs": [{"name": "tones", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"params": {"data_name": "json", "data_files": str(tone_file)}},
                          "pre_process_data_config": {"params": {"text_template": "### {phrase}\n{tone} and {tone}"}}}],
        "passes": {"build": {"type": "ModelBuilder", "precision": "int4"}},
        "engine": {"search_strategy": False, "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "validate", "--config", str(path)], capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "text_template" in errors[0] and "more than once" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_model_trained_on_its_terminator_stops_there(tiny_model: Path, tmp_path: Path) -> None:
    """A tiny model fine-tuned on rows tokenised as LoRA tokenises them (answer "x", terminator "<|end|>") writes
    "x<|end|>"; the decode stops at the terminator (before the EOS it also learnt) and the metric reads "x"."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from autotune.config.schema import DataConfig
    from autotune.data import encode_row, stop_rule
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalContext, EvalModel
    from autotune.evaluation.generation import GenerationMetricType, GenerationParams
    from autotune.models.loading import load_tokenizer
    from autotune.training.batches import tokenize_rows

    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"q": f"item {i}", "a": "x"}) + "\n" for i in range(24)))
    data = load_data(DataConfig(name="x", data_name="json", data_files=[path], text_template="Q: {q}\nA: {a}<|end|>",
                                eval_dataset_size=4))
    tok = load_tokenizer(tiny_model)
    folder = tmp_path / "trained"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    features = tokenize_rows(tok, data, data.train, "answer")
    for _ in range(25):
        for feature in features:
            out = model(input_ids=torch.tensor([feature["input_ids"]]), labels=torch.tensor([feature["labels"]]))
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
    model.save_pretrained(folder, safe_serialization=True)

    backend = open_backend(EvalModel(path=folder, kind="hf", key="trained"), provider="CPUExecutionProvider")
    prompt, _ = encode_row(tok, data.template, data.eval[0], max_len=64, with_answer=False)
    free, _, _ = backend.generate(prompt, 12)  # no stop rule: the terminator, then the EOS it learnt
    stopped, _, _ = backend.generate(prompt, 12, stop=stop_rule(tok, data.template))
    assert tok.decode(stopped) == "x<|end|>"
    assert free == [*stopped, tok.eos_token_id]
    ctx = EvalContext(provider="CPUExecutionProvider", data=data)
    metrics = GenerationMetricType().evaluate(EvalModel(path=folder, kind="hf", key="trained"),
                                             GenerationParams(max_new_tokens=12), ctx)
    assert metrics["exact_match"].value == 1.0
    assert {p["prediction"] for p in metrics["rouge_l"].details["predictions"]} == {"x"}
