"""The ``lm_eval`` metric type on the tiny Llama with real lm-evaluation-harness: the ONNX adapter scores as
lm-eval's own HF model does, the per-sample scores are lm-eval's aggregate, local tasks (multiple choice and
``generate_until``) run through the CLI with a goal that makes a trial infeasible, and what cannot run is refused
at ``validate`` with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, skip_or_fail_in_ci

try:
    import lm_eval  # noqa: F401
except ImportError:  # the optional extra autotune[lm-eval]; .ci/run installs it
    skip_or_fail_in_ci("lm-eval (autotune[lm-eval]) is not installed")

# fp32 ONNX against PyTorch: the same weights, another runtime's float32 sums (measured: up to 6e-6 per request).
LOGLIKELIHOOD_TOLERANCE = 1e-4
TASKS = ROOT / "configs" / "tasks"
PROMPTS = ["the storm is coming", "we won the cup", "my cat is lost", "the exam is tomorrow", "a letter arrived",
           "the lights went out", "she smiled at me", "the bus never came", "we moved house", "the rain stopped",
           "he called at midnight", "the cake burnt", "my team lost", "the sun came out", "the door creaked",
           "a gift on the step", "the dog barked", "the test passed", "the phone died", "the river rose"]


def _instances(kind: str, args: list[tuple[Any, ...]]) -> list[Any]:
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def _harness(folder: Path, kind: str) -> Any:
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalModel
    from autotune.evaluation.harness_model import HarnessLM

    return HarnessLM(open_backend(EvalModel(folder, kind, "k"), provider="CPUExecutionProvider"), batch_size=3)


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> Any:
    """lm-eval's own HF model on the tiny Llama's folder."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model), backend="causal", device="cpu", batch_size=4)


def test_the_onnx_adapter_scores_as_lm_evals_hf_model(tiny_onnx: Path, reference: Any) -> None:
    pairs = [("### Text: the storm is coming\n### The tone is:\n", "fear"), ("Hello there", " friend of mine"),
             ("", "a continuation with no context"), ("a b c ", "d e"), ("one", " two three four five six")]
    ours = _harness(tiny_onnx, "onnx")
    expected = reference.loglikelihood(_instances("loglikelihood", pairs))
    got = ours.loglikelihood(_instances("loglikelihood", pairs))
    for (want_lp, want_greedy), (lp, greedy) in zip(expected, got, strict=True):
        assert lp == pytest.approx(want_lp, abs=LOGLIKELIHOOD_TOLERANCE)
        assert greedy == want_greedy
    text = [("the storm is coming and we are all scared of it, every one of us, again",)]
    assert ours.loglikelihood_rolling(_instances("loglikelihood_rolling", text))[0] == pytest.approx(
        reference.loglikelihood_rolling(_instances("loglikelihood_rolling", text))[0], abs=LOGLIKELIHOOD_TOLERANCE)
    requests = [(f"### Text: {p}\n### The tone is:\n", {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}) for p in PROMPTS[:4]]
    assert ours.generate_until(_instances("generate_until", requests)) == reference.generate_until(_instances("generate_until", requests))


def test_a_task_asking_for_sampling_is_refused(tiny_onnx: Path) -> None:
    from autotune.evaluation.harness_model import SamplingRefused

    with pytest.raises(SamplingRefused, match="do_sample: false"):
        _harness(tiny_onnx, "onnx").generate_until(_instances("generate_until", [("x", {"do_sample": True, "temperature": 0.7})]))


def test_the_per_sample_mean_is_lm_evals_own_aggregate(tiny_model: Path, reference: Any) -> None:
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from autotune.evaluation.base import EvalContext, EvalModel
    from autotune.evaluation.harness import LmEvalMetricType, LmEvalParams

    params = LmEvalParams(tasks=["tone_heldout"], include_path=str(TASKS), limit=40)
    subs = {name: LmEvalMetricType.describe(name) for name in ("acc", "acc_norm")}
    ours = LmEvalMetricType().evaluate(EvalModel(tiny_model, "hf", "k"), params,
                                      EvalContext(provider="CPUExecutionProvider", sub_types=subs, base_dir=ROOT))
    from autotune.evaluation.harness_tasks import find_tasks

    manager, specs = find_tasks(["tone_heldout"], include_path=str(TASKS), base_dir=ROOT, where="t")
    theirs = simple_evaluate(model=reference, tasks=[s.spec for s in specs], limit=40, bootstrap_iters=0,
                             task_manager=manager if isinstance(manager, TaskManager) else None)["results"]["tone_heldout"]
    for name in ("acc", "acc_norm"):
        metric = ours[name]
        outcomes = [c == "1" for c in metric.details["correct"]]
        assert metric.n == len(outcomes) == 40
        assert sum(outcomes) / len(outcomes) == pytest.approx(theirs[f"{name},none"], abs=1e-12)
        assert metric.value == pytest.approx(theirs[f"{name},none"], abs=1e-12)
        assert metric.ci_low <= metric.value <= metric.ci_high
        assert metric.details["lm_eval"]["task"] == "tone_heldout" and metric.details["lm_eval"]["version"] == 1.0


# -- through the CLI ---------------------------------------------------------------------------------------------

def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=900)


def _task_folder(folder: Path, onnx: Path) -> Path:
    """A multiple-choice task and a ``generate_until`` task whose targets are the fp32 model's own greedy
    answers: the fp32 trial matches the baseline exactly, a quantized one can only lose."""
    folder.mkdir(parents=True)
    docs = [{"phrase": p, "tone": ["joy", "surprise", "fear", "sadness"][i % 4]} for i, p in enumerate(PROMPTS)]
    requests = [(f"Phrase: {d['phrase']}\nEcho:", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}) for d in docs]
    answers = _harness(onnx, "onnx").generate_until(_instances("generate_until", requests))
    (folder / "docs.jsonl").write_text("".join(json.dumps({**d, "echo": a}) + "\n" for d, a in zip(docs, answers, strict=True)))
    (folder / "tiny_mc.yaml").write_text(yaml.safe_dump({
        "task": "tiny_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": "docs.jsonl"}, "test_split": "train",
        "output_type": "multiple_choice", "doc_to_text": "### Text: {{phrase}}\n### The tone is:\n",
        "doc_to_choice": ["joy", "surprise", "fear", "sadness"], "doc_to_target": "{{['joy', 'surprise', 'fear', 'sadness'].index(tone)}}",
        "target_delimiter": "", "metric_list": [{"metric": "acc"}], "metadata": {"version": 2.0}}))
    (folder / "tiny_gen.yaml").write_text(yaml.safe_dump({
        "task": "tiny_gen", "dataset_path": "json", "dataset_kwargs": {"data_files": "docs.jsonl"}, "test_split": "train",
        "output_type": "generate_until", "doc_to_text": "Phrase: {{phrase}}\nEcho:", "doc_to_target": "{{echo}}",
        "target_delimiter": "", "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}], "metadata": {"version": 1.0}}))
    return folder


def _study(tmp_path: Path, model: Path, tasks: list[str], *, output_dir: str = "out") -> Path:
    config = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "passes": {"build": {"type": "ModelBuilder", "precision": ["fp32", "int4"], "block_size": 32}},
        "evaluators": {"harness": {"metrics": [{
            "name": "harness", "type": "lm_eval",
            "sub_types": [{"name": "tiny_gen/exact_match", "priority": 1, "goal": {"type": "max-degradation", "value": 0.0}},
                          {"name": "tiny_mc/acc", "priority": -1}],
            "user_config": {"tasks": tasks, "include_path": "tasks"}}]}},
        "engine": {"search_strategy": {"execution_order": "joint", "sampler": "grid", "max_samples": 2},
                   "evaluator": "harness", "pytorch_reference": False, "cache_dir": "cache", "output_dir": output_dir},
    }
    path = tmp_path / f"{output_dir}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_local_tasks_through_the_cli_with_a_goal_that_makes_a_trial_infeasible(tmp_path: Path, tiny_model: Path, tiny_onnx: Path) -> None:
    _task_folder(tmp_path / "tasks", tiny_onnx)
    config = _study(tmp_path, tiny_model, ["tiny_mc", "tiny_gen"])
    done = _cli("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    card = json.loads((tmp_path / "out" / "best" / "model_card.json").read_text())
    assert card["searched"] == {"build.precision": "fp32"}
    gen = card["metrics"]["harness-tiny_gen/exact_match"]
    assert gen["value"] == 1.0 and gen["n"] == len(PROMPTS) and gen["details"]["lm_eval"]["version"] == 1.0
    markdown = (tmp_path / "out" / "best" / "model_card.md").read_text()
    assert "| tiny_gen | 1.0 | generate_until | 0 | all | 20 |" in markdown
    assert "| tiny_mc | 2.0 | multiple_choice | 0 | all | 20 |" in markdown
    import pandas as pd

    trials = pd.read_csv(tmp_path / "out" / "trials.csv").set_index("param.build.precision")
    assert {"harness-tiny_gen/exact_match", "harness-tiny_mc/acc"} <= set(trials.columns)  # a column per task metric
    assert bool(trials.loc["fp32", "feasible"]) is True
    assert trials.loc["int4", "harness-tiny_gen/exact_match"] < 1.0  # the quantized model answers otherwise somewhere
    assert bool(trials.loc["int4", "feasible"]) is False
    # Scored once per built model and task config: a new study on the same cache measures nothing again; an
    # edited task file is scored again.
    evals = tmp_path / "cache" / "evals"
    before = len(list(evals.iterdir()))
    assert _cli("run", "--config", str(_study(tmp_path, tiny_model, ["tiny_mc", "tiny_gen"], output_dir="out2")),
                cwd=tmp_path).returncode == 0
    assert len(list(evals.iterdir())) == before
    mc = tmp_path / "tasks" / "tiny_mc.yaml"
    mc.write_text(mc.read_text().replace("version: 2.0", "version: 3.0"))
    resumed = _cli("run", "--config", str(config), cwd=tmp_path)  # the study's trials were scored on the old task
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert "evaluators.harness.metrics[0].user_config: the files metric 'harness' reads changed" in resumed.stderr
    assert _cli("run", "--config", str(_study(tmp_path, tiny_model, ["tiny_mc", "tiny_gen"], output_dir="out3")),
                cwd=tmp_path).returncode == 0
    assert len(list(evals.iterdir())) == before + 2  # the fp32 build (the baseline's too) and the int4 build


@pytest.mark.parametrize(("tasks", "where", "words"), [
    (["tiny_mcq"], "user_config.tasks[0]", "no lm-evaluation-harness task 'tiny_mcq'; did you mean 'tiny_mc'"),
    (["hellaswag"], "user_config.tasks[0]", "task 'hellaswag' reads the data set 'Rowan/hellaswag' from the Hugging Face Hub"),
    (["tiny_mc", "tiny_nodata"], "user_config.tasks[1]", "task 'tiny_nodata' reads"),
    (["tiny_mc"], "sub_types[0].name", "'tiny_gen/exact_match' names task 'tiny_gen', which is not among this metric's tasks"),
    (["tiny_mc", "tiny_sampled"], "user_config.tasks", "task 'tiny_sampled' asks for sampled generations"),
], ids=["unknown-task", "uncached-hub-task", "missing-data-file", "unreported-metric", "sampling-task"])
def test_validate_refuses_what_cannot_run_with_nothing_written(tmp_path: Path, tiny_model: Path, tasks: list[str], where: str,
                                                               words: str) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    task = {"dataset_path": "json", "test_split": "train", "output_type": "multiple_choice", "doc_to_text": "{{phrase}}",
            "doc_to_choice": ["a", "b"], "doc_to_target": 0}
    (folder / "docs.jsonl").write_text(json.dumps({"phrase": "x"}) + "\n")
    for name, data in (("tiny_mc", "docs.jsonl"), ("tiny_nodata", "gone.jsonl")):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **task, "dataset_kwargs": {"data_files": data}}))
    (folder / "tiny_sampled.yaml").write_text(yaml.safe_dump({
        "task": "tiny_sampled", **task, "dataset_kwargs": {"data_files": "docs.jsonl"}, "output_type": "generate_until",
        "doc_to_target": "{{phrase}}", "generation_kwargs": {"until": ["\n"], "do_sample": True, "temperature": 0.7}}))
    config = _study(tmp_path, tiny_model, tasks)
    empty = {"HF_HOME": str(tmp_path / "hf-home"), "HF_DATASETS_CACHE": str(tmp_path / "hf-home" / "datasets")}
    for command in ("validate", "run"):
        done = _cli(command, "--config", str(config), cwd=tmp_path, env=empty)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"evaluators.harness.metrics[0].{where}" in lines[0] and words in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
