"""Honest numbers: selection on validation rows only, test rows touched once after it, paired
uncertainty, the like-for-like baseline, and a card whose snippet reproduces the evaluator's answer."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from autotune.records import MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord, read_meta
from autotune.selection import paired_difference, select
from tests.search.test_study import EVALUATOR, study_config

ACC, SIZE = "accuracy-accuracy", "footprint-size_mb"
LAT = "latency-decode_ms_per_token_p50"


def split_config(model: Path, data: Path, root: Path) -> dict[str, Any]:
    config = study_config(model, data, root)
    config["passes"]["lora"]["r"] = 2
    config["data_configs"][0].update({"eval_dataset_size": 40, "test_dataset_size": 40})
    config["engine"]["pytorch_reference"] = True  # the baseline test reads its reference row
    # Accuracy and size only: both deterministic, so two runs can be compared value for value.
    config["evaluators"]["tiny"]["metrics"] = [EVALUATOR["metrics"][0],
                                               {**EVALUATOR["metrics"][2], "sub_types": [{"name": "size_mb", "priority": 2}]}]
    return config


def stored(root: Path) -> optuna.Study:
    return optuna.load_study(study_name="out", storage=f"sqlite:///{root / 'out' / 'study.db'}")


def test_the_test_split_never_influences_objectives_or_selection(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.config_checks import load_config
    from autotune.data import load_data

    first = autotune.run(split_config(tiny_model, tone_file, tmp_path / "a"))
    config = load_config(split_config(tiny_model, tone_file, tmp_path / "a"))
    data = load_data(config.data_configs[0])
    test_phrases = {row["phrase"] for row in data.test}
    assert len(test_phrases) == 40 and not test_phrases & {row["phrase"] for row in data.eval + data.train}
    labels = sorted({row["tone"] for row in data.eval})
    rows = [json.loads(line) for line in tone_file.read_text().splitlines()]
    for row in rows:  # every test row gets another label; the rows, their order and the rest stay
        if row["phrase"] in test_phrases:
            row["tone"] = labels[(labels.index(row["tone"]) + 1) % len(labels)]
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    second = autotune.run(split_config(tiny_model, shuffled, tmp_path / "b"))

    before, after = stored(tmp_path / "a").trials, stored(tmp_path / "b").trials
    assert [(t.params, t.values) for t in before] == [(t.params, t.values) for t in after]  # identical trials
    assert first.record is not None and second.record is not None
    assert first.record.number == second.record.number and first.selection.rule == second.selection.rule
    assert first.record.test_metrics[ACC].value != second.record.test_metrics[ACC].value  # the test rows were read
    assert "test.accuracy-accuracy" in first.trials.columns and "gap.accuracy-accuracy" in first.trials.columns


def _acc(correct: str, rows: str = "r") -> MetricValue:
    return MetricValue(value=correct.count("1") / len(correct), details={"correct": correct, "rows_sha256": rows}, name="accuracy")


def test_the_paired_interval_on_hand_made_outcomes() -> None:
    assert paired_difference(_acc("1" * 50 + "0" * 50), _acc("0" * 50 + "1" * 50, rows="other")) is None  # other rows
    same = paired_difference(_acc("10" * 50), _acc("10" * 50))
    assert same is not None and same.difference == 0 and (same.low, same.high) == (0, 0) and not same.distinguishable
    # 400 rows: a is right wherever b is, and on 20 more (0.80 vs 0.75). Their own 95% intervals overlap
    # (about +-0.04 each), yet on the same rows a is better beyond noise: the paired interval excludes 0.
    a, b = _acc("1" * 320 + "0" * 80), _acc("1" * 300 + "0" * 100)
    diff = paired_difference(a, b)
    assert diff is not None and diff.difference == pytest.approx(0.05) and diff.n == 400
    assert 0.02 < diff.low < 0.05 < diff.high < 0.08 and diff.distinguishable
    # Disagreeing on 10 rows each way: same accuracy, and nothing to tell them apart.
    swapped = paired_difference(_acc("1" * 290 + "0" * 10 + "1" * 10 + "0" * 90), _acc("1" * 300 + "0" * 100))
    assert swapped is not None and swapped.difference == 0 and swapped.low < 0 < swapped.high and not swapped.distinguishable


def _view(outcomes: list[tuple[str, float]]) -> StudyView:
    records = [TrialRecord(number=i, state="COMPLETE", feasible=True, metrics={ACC: _acc(c)},
                           objectives={ACC: _acc(c).value, SIZE: size}) for i, (c, size) in enumerate(outcomes)]
    meta = StudyMeta(objectives=[ObjectiveSpec(metric=ACC, higher_is_better=True, kind="accuracy"),
                                 ObjectiveSpec(metric=SIZE, higher_is_better=False, unit="MB", kind="size")])
    return StudyView("s", meta, records)


def test_policies_prefer_the_cheaper_of_indistinguishable_trials_unless_told_not_to() -> None:
    view = _view([("1" * 81 + "0" * 19, 500.0),   # 0: most accurate, large
                  ("1" * 79 + "0" * 21, 100.0),   # 1: 2 rows worse: indistinguishable, 5x smaller
                  ("1" * 60 + "0" * 40, 20.0)])   # 2: clearly worse, smallest
    chosen = select(view, policy="max-accuracy")
    assert chosen.record is not None and chosen.record.number == 1 and "prefer_cheaper" in chosen.rule
    assert chosen.indistinguishable == [0]
    plain = select(view, policy="max-accuracy", prefer_cheaper=False)
    assert plain.record is not None and plain.record.number == 0 and plain.indistinguishable == [1]


@pytest.fixture(scope="module")
def split_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tone_rows: list[dict[str, str]]) -> Path:
    root = tmp_path_factory.mktemp("split-study")
    data = root / "tones.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tone_rows[:200]) + "\n")
    config = split_config(tiny_model, data, root)
    config["passes"]["build"]["precision"] = "int4"
    autotune.run(config)
    return root


def test_the_baseline_is_the_input_model_as_fp32_onnx_on_the_study_provider(split_study: Path) -> None:
    from autotune.cache import Cache

    meta = read_meta(stored(split_study))
    assert meta.baseline_kind == "onnx-fp32" and meta.baseline and meta.baseline_reference  # PyTorch stays as a reference
    cache = Cache(split_study / "cache")
    builds = []
    for entry in cache.models.iterdir():
        manifest = json.loads((entry / "manifest.json").read_text())
        info = manifest.get("info") or manifest
        if info.get("name") == "baseline":
            builds.append((entry, info))
    assert len(builds) == 1
    entry, info = builds[0]
    assert info["pass"] == "ModelBuilder" and info["params"]["precision"] == "fp32"
    genai = json.loads((entry / "model" / "genai_config.json").read_text())
    assert not genai["model"]["decoder"]["session_options"].get("provider_options")  # the CPU provider, like the study
    assert meta.baseline[ACC].details["rows_sha256"] == stored_record(split_study).metrics[ACC].details["rows_sha256"]


def stored_record(root: Path) -> TrialRecord:
    return StudyView.load(stored(root)).records[0]


def test_the_card_is_a_deployment_document_whose_snippet_gives_the_evaluator_answer(split_study: Path) -> None:
    from autotune.data import encode_example
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalModel

    best = split_study / "out" / "best"
    readme = (best / "README.md").read_text()
    assert readme.startswith("---\n") and "model-index:" in readme and "(test)" in readme
    assert "base_model" not in readme.split("\n---\n")[0]  # a local folder without a Hub id: no local path published
    card = json.loads((best / "model_card.json").read_text())
    usage = card["usage"]
    assert usage["labels"] and usage["prompt_template"].startswith("### Text: {phrase}")
    assert card["data"]["tones"]["test"] == 40 and card["data"]["tones"]["validation"] == 40
    assert card["test_metrics"][ACC]["n"] == 40 and "accuracy (validation)" in readme
    snippet = re.search(r"```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    printed = subprocess.run([sys.executable, "-c", snippet.group(1)], cwd=best, capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr

    backend = open_backend(EvalModel.from_folder(best), provider="CPUExecutionProvider")
    tok = backend.tokenizer
    labels = usage["labels"]
    answers = [list(tok(label, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id] for label in labels]
    prompt, _ = encode_example(tok, usage["prompt_template"].format(phrase=usage["example"]), None, max_len=64)
    (scores, _), = backend.score_labels([prompt], answers)
    assert printed.stdout.strip() == labels[max(range(len(labels)), key=scores.__getitem__)]


def test_the_baseline_latency_is_re_measured_in_the_pareto_rounds(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # A ratio to the baseline must compare measurements of the same rounds: the baseline was measured
    # once, at the study's start, under whatever load the machine had then.
    from autotune.config_checks import load_config
    from autotune.records import META_ATTR
    from autotune.run_context import RunContext
    from autotune.search.final import remeasure_latency

    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    config["engine"].update({"pytorch_reference": False, "selection": {"remeasure_rounds": 0}})
    autotune.run(config)
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    view = StudyView.load(study)
    assert "interleaved" not in view.baseline[LAT].details  # rounds 0: the first values stand
    remeasure_latency(view, RunContext(load_config(config)), view.records, rounds=2)  # both trials, as finish does a front
    first = study.user_attrs[META_ATTR]["baseline"][LAT]["value"]  # as measured at the start, never overwritten
    reloaded = StudyView.load(study)
    baseline = reloaded.baseline[LAT]
    # the re-measure may end after one round once the intervals are apart: the baseline is in every round that ran
    rounds = len(baseline.details["rounds"])
    assert baseline.details["interleaved"] and 1 <= rounds <= 2
    for records in (view.records, reloaded.records):  # the trials of the same rounds, also as stored
        assert len(records) >= 2 and all(len(r.remeasured[LAT].details["rounds"]) == rounds for r in records)
    assert baseline.details["first_value"] == first
    assert baseline.value == statistics.median(baseline.details["rounds"])
