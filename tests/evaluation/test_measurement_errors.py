"""Measurements that cannot be trusted fail their metric (or are marked), never pass as a good score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autotune.evaluation import memory_probe
from autotune.evaluation.base import EvalContext, EvalModel, MeasurementError
from autotune.evaluation.footprint import FootprintMetricType, FootprintParams
from autotune.evaluation.latency import LatencyMetricType, LatencyParams

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
        LatencyMetricType().evaluate(MODEL, LatencyParams(repeats=2, warmup=0), EvalContext(provider="CPUExecutionProvider"))


def test_latency_with_decode_steps_in_every_repeat_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [{"tokens": 3, "ttft_s": 0.01, "steps_s": [0.002, 0.004]}] * 2
    monkeypatch.setattr(memory_probe, "run_probe", fake_probe(samples))
    metrics = LatencyMetricType().evaluate(MODEL, LatencyParams(repeats=2, warmup=0), EvalContext(provider="CPUExecutionProvider"))
    assert metrics["decode_ms_per_token_p50"].value == pytest.approx(3.0)


def test_without_vmhwm_the_probe_says_its_peak_is_the_inherited_ru_maxrss(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory_probe.peak_rss()[1] == memory_probe.OWN_PEAK  # Linux: this process's own VmHWM

    def no_proc(self: Path, *args: Any, **kwargs: Any) -> str:
        raise OSError("no /proc here")

    monkeypatch.setattr(Path, "read_text", no_proc)
    value, source = memory_probe.peak_rss()
    assert source == memory_probe.INHERITED_PEAK and value > 0


@pytest.mark.parametrize("shared", [True, False])  # from the latency process, or a process of its own
def test_memory_read_from_the_inherited_ru_maxrss_is_flagged(monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    probe = fake_probe([], source=memory_probe.INHERITED_PEAK)
    ctx = EvalContext(provider="CPUExecutionProvider")
    if shared:
        from autotune.evaluation.latency import PROBE_KEY

        ctx.shared[PROBE_KEY] = probe(MODEL)
    else:
        monkeypatch.setattr(memory_probe, "run_probe", probe)
    metrics = FootprintMetricType().evaluate(MODEL, FootprintParams(), ctx)
    for name in ("peak_rss_mb", "model_rss_mb"):
        assert metrics[name].flag is not None and "ru_maxrss" in metrics[name].flag
    assert metrics["size_mb"].flag is None


def test_memory_read_from_vmhwm_is_not_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_probe, "run_probe", fake_probe([]))
    metrics = FootprintMetricType().evaluate(MODEL, FootprintParams(), EvalContext(provider="CPUExecutionProvider"))
    assert metrics["peak_rss_mb"].flag is None and metrics["peak_rss_mb"].value == 300.0
