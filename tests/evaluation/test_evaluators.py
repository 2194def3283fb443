"""Evaluators on the tiny model: accuracy near chance when wrong and near 1.0 when trained on an
easy task; label scoring and generation agree across PyTorch fp32 and its ONNX fp32 build; latency
fields; the evaluation cache follows the evaluator config."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import autotune
from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.evaluation.base import EvalModel
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline
from tests.conftest import tiny_config

KEYWORDS = {"joy": "sunny", "surprise": "suddenly", "fear": "shadow", "sadness": "tears"}
FILLER = ["is", "was", "felt", "came", "seems", "looked"]


def easy_rows(n: int = 320) -> list[dict[str, str]]:
    """Each label is given away by one keyword: trivially learnable."""
    rnd = random.Random(0)
    labels = list(KEYWORDS)
    return [{"phrase": f"{KEYWORDS[labels[i % 4]]} {rnd.choice(FILLER)} {rnd.choice(FILLER)} {i}", "tone": labels[i % 4]}
            for i in range(n)]


def accuracy_evaluator(mode: str = "label_scoring") -> dict[str, Any]:
    return {"metrics": [{"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}, {"name": "macro_f1"}],
                         "user_config": {"mode": mode}}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("easy")
    data = root / "easy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in easy_rows()) + "\n")
    config = tiny_config(tiny_model, data, root)
    config["data_configs"][0]["eval_dataset_size"] = 80
    config["passes"]["lora"].update({
        "r": 16, "alpha": 32, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
        "training_args": {"max_steps": 120, "per_device_train_batch_size": 16, "learning_rate": 0.005, "logging_steps": 20,
                          "warmup_steps": 5},
    })
    config["passes"]["build"]["precision"] = "fp32"
    config["evaluators"] = {"acc": accuracy_evaluator()}
    config["engine"]["evaluator"] = "acc"
    result = autotune.run(config)
    loaded = load_config(config)
    pipeline = Pipeline(loaded, cache=Cache(loaded.engine.cache_dir))
    merged = pipeline.run().passes[1]
    return {"config": config, "result": result, "merged": pipeline.cache.entry(merged.key) / "model",
            "onnx": Path(config["engine"]["output_dir"]) / "model"}


def test_untrained_model_is_near_chance(trained: dict[str, Any]) -> None:
    baseline = trained["result"].view.meta.baseline_reference["acc-accuracy"].model_dump()
    assert baseline["value"] <= 0.45  # 4 balanced labels: chance is 0.25
    assert baseline["n"] == 80
    assert baseline["ci_low"] < baseline["value"] < baseline["ci_high"]


def test_model_trained_on_an_easy_task_is_near_one(trained: dict[str, Any]) -> None:
    metrics = {k: m.model_dump() for k, m in trained["result"].record.metrics.items()}
    assert metrics["acc-accuracy"]["value"] >= 0.9
    assert metrics["acc-macro_f1"]["value"] >= 0.85
    assert (Path(trained["config"]["engine"]["output_dir"]) / "metrics.json").is_file()


def _evaluate(config: dict[str, Any], model: Path, kind: str, mode: str) -> dict[str, Any]:
    raw = dict(config, evaluators={"acc": accuracy_evaluator(mode)})
    loaded = load_config(raw)
    pipeline = Pipeline(loaded, cache=Cache(loaded.engine.cache_dir))
    evaluator = ModelEvaluator(loaded, cache=pipeline.cache, data_loader=pipeline.data)
    return {k: v.value for k, v in evaluator.evaluate(EvalModel(path=model, kind=kind, key=f"{kind}-{mode}-{model}")).items()}


@pytest.mark.parametrize("mode", ["label_scoring", "generation"])
def test_pytorch_fp32_and_its_onnx_fp32_build_agree(trained: dict[str, Any], mode: str) -> None:
    torch_scores = _evaluate(trained["config"], trained["merged"], "hf", mode)
    onnx_scores = _evaluate(trained["config"], trained["onnx"], "onnx", mode)
    assert abs(torch_scores["acc-accuracy"] - onnx_scores["acc-accuracy"]) <= 0.05


def test_label_scoring_and_generation_agree_on_the_trained_model(trained: dict[str, Any]) -> None:
    scoring = _evaluate(trained["config"], trained["onnx"], "onnx", "label_scoring")
    generation = _evaluate(trained["config"], trained["onnx"], "onnx", "generation")
    assert abs(scoring["acc-accuracy"] - generation["acc-accuracy"]) <= 0.1


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default), by hand."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def test_latency_statistics_are_those_of_the_measured_repeats(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    raw = dict(trained["config"], evaluators={"lat": {"metrics": [{
        "name": "lat", "type": "latency",
        "sub_types": [{"name": n} for n in ("ttft_ms_avg", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "decode_ms_per_token_p50",
                                            "decode_ms_per_token_p90", "decode_ms_per_token_p99", "tokens_per_s", "p50")],
        "user_config": {"repeats": 6, "precision": 0, "warmup": 1, "generate_tokens": 6, "prompt_tokens": 12}}]}}, engine={
        **trained["config"]["engine"], "evaluator": "lat"})
    loaded = load_config(raw)
    pipeline = Pipeline(loaded, cache=Cache(loaded.engine.cache_dir))
    # Record the raw timings the real (fresh-process) measurement returned, to check the statistics against them.
    from autotune.evaluation import memory_probe

    probes: list[dict[str, Any]] = []
    real_probe = memory_probe.run_probe

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = real_probe(*args, **kwargs)
        probes.append(out)
        return out

    monkeypatch.setattr(memory_probe, "run_probe", recording)
    metrics = ModelEvaluator(loaded, cache=pipeline.cache, data_loader=pipeline.data, use_cache=False).evaluate(
        EvalModel.from_folder(trained["onnx"]))
    assert len(probes) == 1
    measured = probes[0]["latency"]["samples"]
    assert len(measured) == 6  # the repeats, without the warm-up
    assert all(len(sample["steps_s"]) == 6 - 1 for sample in measured)  # every token after the first is a decode step
    raw_ms = {"lat-ttft_ms": [s["ttft_s"] * 1e3 for s in measured],
              "lat-decode_ms_per_token": [sum(s["steps_s"]) / len(s["steps_s"]) * 1e3 for s in measured],
              "lat-e2e_ms": [(s["ttft_s"] + sum(s["steps_s"])) * 1e3 for s in measured]}
    checked = []
    for prefix, values in raw_ms.items():
        expected = {"avg": sum(values) / len(values), "p50": _percentile(values, 50), "p90": _percentile(values, 90),
                    "p99": _percentile(values, 99)}
        for stat, value in expected.items():
            if f"{prefix}_{stat}" in metrics:  # the sub-types asked for above
                assert metrics[f"{prefix}_{stat}"].value == pytest.approx(value, rel=1e-9), (prefix, stat)
                assert metrics[f"{prefix}_{stat}"].n == 6
                checked.append(f"{prefix}_{stat}")
    assert len(checked) == 8  # ttft avg/p50/p90/p99, decode p50/p90/p99, e2e p50
    assert metrics["lat-tokens_per_s"].value > 0
    assert metrics["lat-e2e_ms_p50"].value >= metrics["lat-ttft_ms_p50"].value
    details = metrics["lat-ttft_ms_p50"].details
    for key in ("provider", "onnxruntime", "onnxruntime-genai", "cpu", "batch_size", "prompt_tokens", "generate_tokens", "cv"):
        assert key in details
    assert details["provider"] == "CPUExecutionProvider" and details["prompt_tokens"] == 12


def test_evaluation_cache_follows_the_evaluator_config(trained: dict[str, Any], tmp_path: Path) -> None:
    raw = dict(trained["config"], evaluators={"acc": accuracy_evaluator()})
    raw["engine"] = {**raw["engine"], "cache_dir": str(tmp_path / "cache")}
    loaded = load_config(raw)
    cache = Cache(loaded.engine.cache_dir)
    model = EvalModel.from_folder(trained["onnx"])
    pipeline = Pipeline(loaded, cache=cache)
    ModelEvaluator(loaded, cache=cache, data_loader=pipeline.data).evaluate(model)
    ModelEvaluator(loaded, cache=cache, data_loader=pipeline.data).evaluate(model)
    assert len(list(cache.evals.glob("*.json"))) == 1  # the second evaluation was a cache hit
    raw["evaluators"]["acc"]["metrics"][0]["user_config"]["max_new_tokens"] = 9  # any change: a new entry
    loaded = load_config(raw)
    ModelEvaluator(loaded, cache=cache, data_loader=Pipeline(loaded, cache=cache).data).evaluate(model)
    assert len(list(cache.evals.glob("*.json"))) == 2
