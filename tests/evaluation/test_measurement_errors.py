"""Measurements that cannot be trusted fail their metric (or are marked), never pass as a good score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.evaluation import memory_probe
from autotune.evaluation.base import EvalContext, EvalModel, MeasurementError
from autotune.evaluation.latency import LatencyEvaluator, LatencyParams

MODEL = EvalModel(path=Path("."), kind="onnx", key="m")


def fake_probe(samples: list[dict[str, Any]], source: str = memory_probe.OWN_PEAK) -> Any:
    def run_probe(model: Any, **kwargs: Any) -> dict[str, Any]:
        return {"latency": {"prompt_tokens": 8, "samples": samples}, "peak_rss_mb": 300.0, "runtime_rss_mb": 100.0,
                "rss_source": source}

    return run_probe


def test_latency_with_no_decode_step_fails_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    # The model stopped right after its first token (is_done at once) in one repeat: no step was timed,
    # which used to read as 0 ms/token, the best possible score.
    samples = [{"tokens": 4, "ttft_s": 0.01, "steps_s": [0.002, 0.002, 0.002]}, {"tokens": 1, "ttft_s": 0.01, "steps_s": []}]
    monkeypatch.setattr(memory_probe, "run_probe", fake_probe(samples))
    with pytest.raises(MeasurementError, match="no decode step"):
        LatencyEvaluator().evaluate(MODEL, LatencyParams(repeats=2, warmup=0), EvalContext(provider="CPUExecutionProvider"))


def test_latency_with_decode_steps_in_every_repeat_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [{"tokens": 3, "ttft_s": 0.01, "steps_s": [0.002, 0.004]}] * 2
    monkeypatch.setattr(memory_probe, "run_probe", fake_probe(samples))
    metrics = LatencyEvaluator().evaluate(MODEL, LatencyParams(repeats=2, warmup=0), EvalContext(provider="CPUExecutionProvider"))
    assert metrics["decode_ms_per_token_p50"].value == pytest.approx(3.0)
