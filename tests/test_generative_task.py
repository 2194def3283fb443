"""Generative tasks end to end: a chat template rendered by the tokenizer exactly as ``apply_chat_template``
does (training and evaluation), a Q&A study through the CLI that selects on ROUGE-L and writes
``best/predictions.jsonl``, and the refusals of item 7 (one line naming the key, nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from autotune.config.schema import DataConfig
from autotune.data import encode_row, load_data
from autotune.errors import ConfigError, DataError, UserError
from tests.conftest import ROOT, tiny_config

QA = ROOT / "configs" / "data" / "qa.jsonl"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a ChatML chat template in its tokenizer (as SmolLM2's)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return folder


def chat_data(path: Path = QA, **extra: Any) -> DataConfig:
    return DataConfig(name="qa", data_name="json", data_files=[path], text_cols=["Question", "Best Answer"], chat_template=True,
                      eval_dataset_size=20, source_max_len=128, **extra)


def _ids(out: Any) -> list[int]:
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


@pytest.mark.parametrize("system_prompt", [None, "Answer in one sentence."])
def test_a_chat_template_tokenises_as_apply_chat_template_in_training_and_evaluation(chat_model: Path, system_prompt: str | None) -> None:
    from autotune.models.loading import load_tokenizer

    tok = load_tokenizer(chat_model)
    data = load_data(chat_data(system_prompt=system_prompt))
    for row in data.eval[:5]:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        user = [*system, {"role": "user", "content": row["Question"]}]
        whole = [*user, {"role": "assistant", "content": row["Best Answer"]}]
        ids, prompt_len = encode_row(tok, data.template, row, max_len=128)
        assert ids == _ids(tok.apply_chat_template(whole, tokenize=True))  # training
        prompt, _ = encode_row(tok, data.template, row, max_len=128, with_answer=False)
        assert prompt == _ids(tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True))  # evaluation
        assert prompt_len == len(prompt)
    assert data.template.stop_text(tok) == "<|im_end|>"
    assert data.template.target(data.eval[0], tok) == data.eval[0]["Best Answer"] + "<|im_end|>\n"


def test_label_scoring_scores_a_chat_templates_labels_as_trained(chat_model: Path, tone_file: Path) -> None:
    from autotune.models.loading import load_tokenizer

    tok = load_tokenizer(chat_model)
    config = DataConfig(name="tones", data_name="json", data_files=[tone_file], text_cols=["phrase", "tone"], chat_template=True,
                        eval_dataset_size=20)
    data = load_data(config)
    row = data.eval[0]
    ids, prompt_len = encode_row(tok, data.template, row, max_len=256)
    assert ids[prompt_len:] == data.template.answer_ids(tok, row["tone"])  # no EOS after the turn's own end


def test_a_chat_turn_end_followed_by_eos_stops_at_the_turn_end(chat_model: Path, tmp_path: Path) -> None:
    """Phi-3's template writes "<|end|>\\n<|endoftext|>" after the answer: generation stops at "<|end|>" (EOS never
    reaches the decoded text), and a label is scored with the ids the whole conversation gives it."""
    from transformers import AutoTokenizer

    folder = tmp_path / "phi3-like"
    tok = AutoTokenizer.from_pretrained(chat_model)
    tok.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}")
    tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    data = load_data(chat_data())
    assert data.template.stop_text(tok) == "<|end|>"
    assert data.template.cut("Paris.<|end|>\n", tok) == "Paris."
    row = data.eval[0]
    ids, prompt_len = encode_row(tok, data.template, row, max_len=256)
    assert ids[prompt_len:] == data.template.answer_ids(tok, row["Best Answer"])


def _config(root: Path, model: Path, data: Path, **data_keys: Any) -> dict[str, Any]:
    config = tiny_config(model, data, root)
    config["data_configs"][0]["pre_process_data_config"]["params"] = {"text_cols": ["Question", "Best Answer"],
                                                                       "source_max_len": 96, **data_keys}
    config["data_configs"][0]["eval_dataset_size"] = 16
    config["data_configs"][0]["test_dataset_size"] = 12
    generation = [{"name": "rouge_l", "priority": 1, "goal": {"type": "max-degradation", "value": 1.0}},
                  {"name": "chrf", "priority": -1}, {"name": "exact_match", "priority": -1}]
    config["evaluators"] = {"qa": {"metrics": [
        {"name": "generation", "type": "generation", "sub_types": generation, "user_config": {"max_new_tokens": 6}},
        {"name": "latency", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}],
         "user_config": {"prompt_tokens": 8, "generate_tokens": 4, "warmup": 1, "repeats": 2}}]}}
    config["engine"].update({"evaluator": "qa", "output_dir": str(root / "out"),
                             "search_strategy": {"sampler": "grid", "seed": 0},
                             "selection": {"policy": "max-accuracy", "prefer_cheaper": True, "remeasure_rounds": 0}})
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["passes"]["build"]["precision"] = ["int4", "int8"]
    return config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=900)


@pytest.fixture(scope="module")
def qa_study(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qa-study")
    path = root / "qa.json"
    path.write_text(json.dumps(_config(root, chat_model, QA, chat_template=True)))
    result = cli("run", "--config", str(path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "out"


def test_a_qa_study_through_the_cli_selects_on_rouge_l_and_writes_every_test_prediction(qa_study: Path) -> None:
    from rouge_score import rouge_scorer

    lines = [json.loads(line) for line in (qa_study / "best" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {line["split"] for line in lines} == {"test"}
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for line in lines:
        assert set(line) == {"split", "row", "input", "reference", "prediction", "scores"}
        assert set(line["input"]) == {"Question"} and "<|im_end|>" not in line["prediction"]  # cut at the terminator
        assert set(line["scores"]) == {"generation-rouge_l", "generation-chrf", "generation-exact_match"}
        assert line["scores"]["generation-rouge_l"] == pytest.approx(
            scorer.score(line["reference"], line["prediction"])["rougeL"].fmeasure, abs=1e-6)
    card = json.loads((qa_study / "best" / "model_card.json").read_text())
    assert card["predictions"]["metric"] == "generation-rouge_l" and card["predictions"]["split"] == "validation"
    best = [r["scores"]["generation-rouge_l"] for r in card["predictions"]["best"]]
    worst = [r["scores"]["generation-rouge_l"] for r in card["predictions"]["worst"]]
    assert best == sorted(best, reverse=True) and min(best) >= max(worst)
    assert "predictions" not in json.dumps(card["metrics"])  # the texts live in predictions.jsonl, not in every metric
    markdown = (qa_study / "best" / "README.md").read_text()
    assert "## Predictions" in markdown and "apply_chat_template" in markdown  # the snippet renders the chat as trained
    assert 'id="predictions-table"' in (qa_study / "report.html").read_text()
    # A goal on a generation score is a constraint resolved against the baseline's score, as accuracy's is.
    bound = next(b for b in card["constraints"] if b["metric"] == "generation-rouge_l")
    assert bound["value"] == pytest.approx(card["baseline"]["generation-rouge_l"]["value"] - 1.0)


def test_the_cards_snippet_answers_as_the_evaluation_did(qa_study: Path) -> None:
    """The card's usage snippet, run as a user would in best/, prints the validation row's evaluated answer."""
    card = json.loads((qa_study / "best" / "model_card.json").read_text())
    row = card["predictions"]["best"][0]
    snippet = card["usage"]["snippet"].replace(repr(card["usage"]["example"]), repr(row["input"]["Question"]), 1)
    snippet = snippet.replace("len(prompt) + 128", "len(prompt) + 6")
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=qa_study / "best", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == row["prediction"]
    # `autotune generate` renders the card's chat template the same way and stops at the same place.
    result = cli("generate", "--model", str(qa_study / "best"), "--max-new-tokens", "6", row["input"]["Question"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == row["prediction"]


def _write(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"Question": f"q{i}?", "Best Answer": f"a{i}."} for i in range(30)]


@pytest.mark.parametrize(("keys", "rows", "where", "words"), [
    ({"chat_template": True, "text_template": "{Question} {Best Answer}"}, ROWS, "pre_process_data_config.params.chat_template",
     "together with text_template"),
    ({"chat_template": True, "text_cols": ["Question"]}, ROWS, "pre_process_data_config.params.text_cols",
     "[prompt column, answer column]"),
    ({"system_prompt": "Be brief.", "text_template": "{Question} {Best Answer}"}, ROWS, "pre_process_data_config.params.system_prompt",
     "chat_template: true only"),
    ({"text_template": "Q: {Question}\nA: {Answer}"}, ROWS, "text_template", "column 'Answer'"),
    ({"text_template": "Q: {Question}\nA: {Best Answer}"}, [*ROWS[:5], {"Question": "q?"}, *ROWS[5:]], "rows.jsonl",
     "row 6 has no 'Best Answer'"),
    ({"text_template": "Q: {Question}\nA: {Best Answer}"}, [*ROWS[:5], {"Question": "q?", "Best Answer": " "}], "rows.jsonl",
     "row 6 has an empty 'Best Answer'"),
    ({"chat_template": True}, ROWS, "data_configs[0].chat_template", "has no chat template"),
])
def test_a_bad_generative_data_config_is_one_line_naming_its_key_and_nothing_is_written(
        tmp_path: Path, tiny_model: Path, keys: dict[str, Any], rows: list[dict[str, Any]], where: str, words: str) -> None:
    """Refused by ``validate`` and by ``run`` alike, before anything is written (the last: a tokenizer without a chat template)."""
    data = _write(tmp_path, rows)
    config = _config(tmp_path, tiny_model, data)
    params = config["data_configs"][0]["pre_process_data_config"]["params"]
    params.update(keys)
    if keys.get("text_cols"):
        params["text_cols"] = keys["text_cols"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    for command in ("validate", "run"):
        result = cli(command, "--config", str(path))
        message = (result.stdout + result.stderr).strip()
        assert result.returncode != 0 and "Traceback" not in message, message
        line = next(line for line in message.splitlines() if words in line)
        assert where in line, message
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_generation_metric_on_data_without_a_prompt_column_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    from autotune.config_checks import load_config

    config = _config(tmp_path, tiny_model, _write(tmp_path, ROWS))
    config["data_configs"][0]["pre_process_data_config"]["params"]["text_template"] = "{Best Answer}"
    with pytest.raises(UserError) as info:
        load_config(config)
    assert "generation" in str(info.value) and "prompt" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, (ConfigError, DataError))
